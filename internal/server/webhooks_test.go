package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
	"github.com/relhq/rel/internal/webhook"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// receiver is a webhook endpoint that records every request, verifies its
// signature, and answers as behave says for each attempt of a delivery.
type receiver struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	// behave decides an attempt's answer: the status, and a delay before
	// it. attempt counts from 1 per delivery id.
	behave   func(seq uint64, attempt int) (int, time.Duration)
	attempts map[string]int
	// raw is every 2xx answered, in order; delivered the first 2xx of
	// each delivery id (what a deduping receiver processes).
	raw, delivered []webhook.Body
	badSigs        int
	srv            *httptest.Server
}

func newReceiver(t *testing.T, secret string, behave func(seq uint64, attempt int) (int, time.Duration)) *receiver {
	r := &receiver{t: t, secret: []byte(secret), behave: behave, attempts: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	var b webhook.Body
	if err := json.Unmarshal(body, &b); err != nil {
		r.t.Errorf("body is not the json format: %v: %s", err, body)
		w.WriteHeader(400)
		return
	}
	id := req.Header.Get(webhook.HeaderDelivery)
	r.mu.Lock()
	if len(r.secret) == 0 {
		if sig := req.Header.Get(webhook.HeaderSignature); sig != "" {
			r.t.Errorf("delivery %s of a webhook without a secret is signed: %s", id, sig)
		}
	} else if err := webhook.Verify(r.secret, req.Header.Get(webhook.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
		r.badSigs++
		r.t.Errorf("delivery %s: %v", id, err)
	}
	if id != webhook.DeliveryID(b.Webhook, b.Event.Seq) || req.Header.Get(webhook.HeaderEvent) != b.Event.Type {
		r.t.Errorf("headers %s %s for event %d %s", id, req.Header.Get(webhook.HeaderEvent), b.Event.Seq, b.Event.Type)
	}
	r.attempts[id]++
	code, delay := 200, time.Duration(0)
	if r.behave != nil {
		code, delay = r.behave(b.Event.Seq, r.attempts[id])
	}
	r.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			return
		}
	}
	if code/100 == 2 {
		r.mu.Lock()
		r.raw = append(r.raw, b)
		dup := false
		for _, d := range r.delivered {
			dup = dup || d.Delivery == b.Delivery
		}
		if !dup {
			r.delivered = append(r.delivered, b)
		}
		r.mu.Unlock()
	}
	w.WriteHeader(code)
}

func (r *receiver) snapshot() (raw, delivered []webhook.Body) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]webhook.Body(nil), r.raw...), append([]webhook.Body(nil), r.delivered...)
}

func (r *receiver) waitDelivered(t *testing.T, n int, timeout time.Duration) []webhook.Body {
	t.Helper()
	var got []webhook.Body
	testcluster.WaitFor(t, timeout, func() (bool, string) {
		_, got = r.snapshot()
		return len(got) >= n, fmt.Sprintf("%d deliveries (want %d)", len(got), n)
	})
	return got
}

// checkOrder: deliveries in seq order, each event once, all of want's
// types.
func checkOrder(t *testing.T, got []webhook.Body, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d deliveries, want %d", len(got), n)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Event.Seq <= got[i-1].Event.Seq {
			t.Fatalf("delivery %d is event %d after event %d: out of order", i, got[i].Event.Seq, got[i-1].Event.Seq)
		}
	}
}

func fastWebhooks(_ int, cfg *server.Config) {
	cfg.WebhookRetryBase = 50 * time.Millisecond
}

func createWebhook(t *testing.T, conn relv1.WebhookServiceClient, name, url, events, secret string) *relv1.Webhook {
	t.Helper()
	resp, err := conn.CreateWebhook(ctxT(t), &relv1.CreateWebhookRequest{Name: name, Url: url, Events: events, Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetWebhook()
}

// TestWebhookDeliveryAgainstBadReceiver: a receiver that fails (500),
// times out (past the 10 s request bound) and answers slowly gets every
// event the webhook selects exactly once, in order, signed; failures are
// counted on the webhook; other events are not sent; no answer carries
// the secret.
func TestWebhookDeliveryAgainstBadReceiver(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastWebhooks})
	n := c.WaitLeader()
	ctx := ctxT(t)
	rec := newReceiver(t, "s3cret", func(seq uint64, attempt int) (int, time.Duration) {
		switch {
		case seq == 2 && attempt == 1:
			return 200, 11 * time.Second // past the client's 10 s: a timeout
		case seq%3 == 1 && attempt <= 2:
			return 500, 0
		case seq%3 == 0:
			return 204, 300 * time.Millisecond
		}
		return 200, 0
	})
	hooks := relv1.NewWebhookServiceClient(n.Admin())
	wh := createWebhook(t, hooks, "chat", rec.srv.URL+"/hook", "release.*", "s3cret")
	if len(wh.GetSecret()) != 0 || !wh.GetHasSecret() {
		t.Fatalf("create answered the secret %q / has_secret %v", wh.GetSecret(), wh.GetHasSecret())
	}
	ctl := relv1.NewControlServiceClient(n.Admin())
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		if _, err := ctl.CreateRelease(ctx, releaseReq("web", i)); err != nil {
			t.Fatal(err)
		}
	}
	got := rec.waitDelivered(t, 6, 60*time.Second)
	checkOrder(t, got, 6)
	for i, b := range got {
		if b.Event.Type != "release.created" || b.Event.Version != "1.0."+strconv.Itoa(i+1) {
			t.Errorf("delivery %d: %s %s, want release.created 1.0.%d", i, b.Event.Type, b.Event.Version, i+1)
		}
	}
	raw, _ := rec.snapshot()
	if len(raw) != 6 {
		// The timed-out attempt was answered 2xx after the client gave
		// up: the receiver never got to write it.
		t.Errorf("%d 2xx answers for 6 events: %v", len(raw), raw)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := hooks.GetWebhook(ctx, &relv1.GetWebhookRequest{Name: "chat"})
		w := resp.GetWebhook()
		// Seqs 1 and 4 fail twice, seq 2 times out once.
		return err == nil && w.GetDelivered() == 6 && w.GetFailedAttempts() == 5 && len(w.GetRecent()) == 6 && len(w.GetSecret()) == 0,
			fmt.Sprintf("webhook %v (%v)", w, err)
	})
	if got := metricSum(t, c, `rel_webhook_deliveries_total{outcome="delivered",webhook="chat"}`); got != 6 {
		t.Errorf("delivered metric %v, want 6", got)
	}
	if got := metricSum(t, c, `rel_webhook_deliveries_total{outcome="failed",webhook="chat"}`); got != 5 {
		t.Errorf("failed metric %v, want 5", got)
	}
	if got := metricSum(t, c, "rel_webhook_delivery_duration_seconds_count"); got != 11 {
		t.Errorf("duration observations %v, want 11 (every attempt)", got)
	}
	list, err := hooks.ListWebhooks(ctx, &relv1.ListWebhooksRequest{})
	if err != nil || len(list.GetWebhooks()) != 1 || len(list.GetWebhooks()[0].GetSecret()) != 0 {
		t.Fatalf("list %v (%v): want one webhook without its secret", list, err)
	}
}

// TestWebhookLeaderKill: the leader is killed while it delivers to a slow
// receiver; the new leader carries on from the cursor in raft. A deduping
// receiver processes every event once, in order, and the raw duplicates
// are at most the one in flight when the leader died.
func TestWebhookLeaderKill(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastWebhooks})
	leader := c.WaitLeader()
	c.WaitMembers(3)
	ctx := ctxT(t)
	rec := newReceiver(t, "k3y", func(uint64, int) (int, time.Duration) { return 200, 150 * time.Millisecond })
	createWebhook(t, relv1.NewWebhookServiceClient(leader.Admin()), "audit-sink", rec.srv.URL, "release.*", "k3y")
	ctl := relv1.NewControlServiceClient(leader.Admin())
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		if _, err := ctl.CreateRelease(ctx, releaseReq("web", i)); err != nil {
			t.Fatal(err)
		}
	}
	rec.waitDelivered(t, 3, 30*time.Second)
	c.Kill(leader)
	next := c.WaitNewLeader(leader)
	ctl = relv1.NewControlServiceClient(next.Admin())
	for i := 11; i <= 15; i++ {
		if _, err := ctl.CreateRelease(ctx, releaseReq("web", i)); err != nil {
			t.Fatal(err)
		}
	}
	got := rec.waitDelivered(t, 15, 60*time.Second)
	checkOrder(t, got, 15)
	raw, _ := rec.snapshot()
	if d := len(raw) - len(got); d > 1 {
		t.Fatalf("%d raw duplicates across the leader kill, want at most the one in flight", d)
	}
	t.Logf("15 events delivered once each after deduping; %d raw duplicate(s)", len(raw)-len(got))
}

// TestWebhookDeadLetterAndRedeliver: an event the receiver refuses past
// the retry window goes to the dead letters and delivery moves on;
// redelivered once the receiver is fixed, it leaves them.
func TestWebhookDeadLetterAndRedeliver(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		fastWebhooks(i, cfg)
		cfg.WebhookRetryFor = 400 * time.Millisecond
	}})
	n := c.WaitLeader()
	ctx := ctxT(t)
	var mu sync.Mutex
	broken := true
	rec := newReceiver(t, "", func(seq uint64, _ int) (int, time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if seq == 1 && broken {
			return 503, 0
		}
		return 200, 0
	})
	hooks := relv1.NewWebhookServiceClient(n.Admin())
	if _, err := hooks.CreateWebhook(ctx, &relv1.CreateWebhookRequest{Name: "ops", Url: rec.srv.URL, Events: "release.created"}); err != nil {
		t.Fatal(err)
	}
	ctl := relv1.NewControlServiceClient(n.Admin())
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := ctl.CreateRelease(ctx, releaseReq("web", i)); err != nil {
			t.Fatal(err)
		}
	}
	got := rec.waitDelivered(t, 1, 30*time.Second)
	if got[0].Event.Seq != 2 {
		t.Fatalf("first delivery is event %d, want 2 (1 is dead)", got[0].Event.Seq)
	}
	var dead []*relv1.WebhookDeadLetter
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := hooks.GetWebhook(ctx, &relv1.GetWebhookRequest{Name: "ops"})
		dead = resp.GetDeadLetters()
		return err == nil && len(dead) == 1, fmt.Sprintf("dead letters %v (%v)", dead, err)
	})
	if dead[0].GetSeq() != 1 || dead[0].GetStatus() != 503 || dead[0].GetAttempts() < 2 {
		t.Fatalf("dead letter %v: want seq 1, HTTP 503, retried", dead[0])
	}
	_, err := hooks.RedeliverWebhook(ctx, &relv1.RedeliverWebhookRequest{Name: "ops", Seq: 7})
	wantCode(t, "redeliver of no dead letter", err, codes.NotFound)
	mu.Lock()
	broken = false
	mu.Unlock()
	if _, err := hooks.RedeliverWebhook(ctx, &relv1.RedeliverWebhookRequest{Name: "ops", Seq: 1}); err != nil {
		t.Fatal(err)
	}
	got = rec.waitDelivered(t, 2, 30*time.Second)
	if got[1].Event.Seq != 1 {
		t.Fatalf("redelivered event %d, want 1", got[1].Event.Seq)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := hooks.GetWebhook(ctx, &relv1.GetWebhookRequest{Name: "ops"})
		recent := resp.GetWebhook().GetRecent()
		return err == nil && len(resp.GetDeadLetters()) == 0 && len(recent) == 3 && recent[2].GetOutcome() == "redelivered",
			fmt.Sprintf("dead letters %v, recent %v (%v)", resp.GetDeadLetters(), recent, err)
	})
}

// TestWebhookBadInput: each bad request is refused with what is wrong, and
// nothing is stored.
func TestWebhookBadInput(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.WaitLeader()
	ctx := ctxT(t)
	hooks := relv1.NewWebhookServiceClient(n.Admin())
	createWebhook(t, hooks, "chat", "https://hooks.example.com/x", "rollout.*", "s")
	tests := []struct {
		name string
		req  *relv1.CreateWebhookRequest
		code codes.Code
		says string
	}{
		{"bad URL", &relv1.CreateWebhookRequest{Name: "a", Url: "hooks.example.com/x", Events: "rollout.*"}, codes.InvalidArgument, "must be http or https"},
		{"ftp URL", &relv1.CreateWebhookRequest{Name: "a", Url: "ftp://hooks.example.com/x", Events: "rollout.*"}, codes.InvalidArgument, "must be http or https"},
		{"unknown glob", &relv1.CreateWebhookRequest{Name: "a", Url: "https://h/x", Events: "rollouts.*"}, codes.InvalidArgument, "matches no event type"},
		{"no events", &relv1.CreateWebhookRequest{Name: "a", Url: "https://h/x"}, codes.InvalidArgument, "no events given"},
		{"bad format", &relv1.CreateWebhookRequest{Name: "a", Url: "https://h/x", Events: "rollout.*", Format: "xml"}, codes.InvalidArgument, "json or slack"},
		{"bad CA", &relv1.CreateWebhookRequest{Name: "a", Url: "https://h/x", Events: "rollout.*", CaPem: "not pem"}, codes.InvalidArgument, "no PEM certificate"},
		{"bad name", &relv1.CreateWebhookRequest{Name: "A B", Url: "https://h/x", Events: "rollout.*"}, codes.InvalidArgument, "webhook name"},
		{"duplicate name", &relv1.CreateWebhookRequest{Name: "chat", Url: "https://h/y", Events: "release.*"}, codes.AlreadyExists, "already exists"},
	}
	for _, tc := range tests {
		_, err := hooks.CreateWebhook(ctx, tc.req)
		wantCode(t, tc.name, err, tc.code, tc.says)
	}
	list, err := hooks.ListWebhooks(ctx, &relv1.ListWebhooksRequest{})
	if err != nil || len(list.GetWebhooks()) != 1 || list.GetWebhooks()[0].GetUrl() != "https://hooks.example.com/x" {
		t.Fatalf("after refusals: %v (%v), want only the first webhook, unchanged", list, err)
	}
	if _, err := hooks.DeleteWebhook(ctx, &relv1.DeleteWebhookRequest{Name: "nope"}); !strings.Contains(fmt.Sprint(err), "not found") {
		t.Errorf("delete of an unknown webhook: %v", err)
	}
}

// TestWebhookSlowReceiverDoesNotSlowWrites: while the leader waits on a
// receiver that does not answer, writes (and so rollouts) go on at their
// usual pace.
func TestWebhookSlowReceiverDoesNotSlowWrites(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastWebhooks})
	n := c.WaitLeader()
	ctx := ctxT(t)
	rec := newReceiver(t, "k", func(uint64, int) (int, time.Duration) { return 200, time.Minute })
	createWebhook(t, relv1.NewWebhookServiceClient(n.Admin()), "slow", rec.srv.URL, "release.*", "k")
	ctl := relv1.NewControlServiceClient(n.Admin())
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.CreateRelease(ctx, releaseReq("web", 1)); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.attempts["slow-1"] > 0, "the receiver to hold the first delivery"
	})
	start := time.Now()
	for i := 2; i <= 11; i++ {
		if _, err := ctl.CreateRelease(ctx, releaseReq("web", i)); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("10 writes took %s while a receiver held a delivery (10 s bound): delivery is on the write path", d)
	}
}
