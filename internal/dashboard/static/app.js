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

// A rollout page follows its rollout: each "update" event carries the
// page's fragments, rendered by the server, by element id.
document.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("rollout");
  if (!root || !window.EventSource) { return; }
  var dot = document.getElementById("live-status");
  var source = new EventSource(root.getAttribute("data-live"));
  source.addEventListener("open", function () { if (dot) { dot.classList.add("on"); } });
  source.addEventListener("error", function () { if (dot) { dot.classList.remove("on"); } });
  source.addEventListener("update", function (ev) {
    var fragments = JSON.parse(ev.data);
    Object.keys(fragments).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.innerHTML = fragments[id]; }
    });
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
});

// The events page puts each new event first as the cluster applies it:
// "prepend" events carry the rows, rendered by the server, by element id;
// the page keeps its newest data-keep rows.
document.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("events");
  if (!root || !window.EventSource) { return; }
  var dot = document.getElementById("live-status");
  var keep = Number(root.getAttribute("data-keep") || "200");
  var source = new EventSource(root.getAttribute("data-live"));
  source.addEventListener("open", function () { if (dot) { dot.classList.add("on"); } });
  source.addEventListener("error", function () { if (dot) { dot.classList.remove("on"); } });
  source.addEventListener("prepend", function (ev) {
    var fragments = JSON.parse(ev.data);
    Object.keys(fragments).forEach(function (id) {
      var el = document.getElementById(id);
      if (!el) { return; }
      el.insertAdjacentHTML("afterbegin", fragments[id]);
      while (el.rows && el.rows.length > keep) { el.deleteRow(el.rows.length - 1); }
    });
    var none = document.getElementById("events-none");
    if (none) { none.remove(); }
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
});
