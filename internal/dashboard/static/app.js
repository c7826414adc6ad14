// Rel dashboard: confirmations for controls and live rollout updates.
// No framework and no build step; the server renders every fragment.
"use strict";

// A control asks before it is sent. With scripts off, the server shows
// its own confirmation page instead (the form's confirmed field is empty).
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  var question = form.getAttribute("data-confirm");
  if (!question) { return; }
  if (!window.confirm(question)) {
    ev.preventDefault();
    return;
  }
  var field = form.querySelector("input[name=confirmed]");
  if (field) { field.value = "yes"; }
});

// follow opens the page's live stream (root's data-live) and calls
// apply(fragments) for each event named kind: fragments are rendered by
// the server, by element id. The dot says whether the stream is open; a
// session that ended goes to the login page, a failed stream stops.
function follow(root, kind, apply) {
  var dot = document.getElementById("live-status");
  var source = new EventSource(root.getAttribute("data-live"));
  source.addEventListener("open", function () { if (dot) { dot.classList.add("on"); } });
  source.addEventListener("error", function () { if (dot) { dot.classList.remove("on"); } });
  source.addEventListener(kind, function (ev) {
    apply(JSON.parse(ev.data));
    root.setAttribute("data-updates", String(Number(root.getAttribute("data-updates") || "0") + 1));
  });
  source.addEventListener("ended", function () {
    source.close();
    window.location.assign("/ui/login?ended=1&next=" + encodeURIComponent(window.location.pathname));
  });
  source.addEventListener("failed", function (ev) {
    source.close();
    if (dot) { dot.classList.remove("on"); dot.textContent = "stopped: " + ev.data; }
  });
}

document.addEventListener("DOMContentLoaded", function () {
  if (!window.EventSource) { return; }
  // A rollout page follows its rollout: each "update" replaces the
  // page's fragments.
  var rollout = document.getElementById("rollout");
  if (rollout) {
    follow(rollout, "update", function (fragments) {
      Object.keys(fragments).forEach(function (id) {
        var el = document.getElementById(id);
        if (el) { el.innerHTML = fragments[id]; }
      });
    });
  }
  // The events page puts each new event first as the cluster applies it
  // ("prepend": the rows, newest first) and keeps its newest data-keep.
  var events = document.getElementById("events");
  if (events) {
    var keep = Number(events.getAttribute("data-keep") || "200");
    follow(events, "prepend", function (fragments) {
      Object.keys(fragments).forEach(function (id) {
        var el = document.getElementById(id);
        if (!el) { return; }
        el.insertAdjacentHTML("afterbegin", fragments[id]);
        while (el.rows && el.rows.length > keep) { el.deleteRow(el.rows.length - 1); }
      });
      var none = document.getElementById("events-none");
      if (none) { none.remove(); }
    });
  }
});
