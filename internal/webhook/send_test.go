package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestSignVerify(t *testing.T) {
	secret, body := []byte("whsec"), []byte(`{"a":1}`)
	now := time.Unix(1_800_000_000, 0)
	sig := Sign(secret, now, body)
	if !strings.HasPrefix(sig, "t=1800000000,v1=") || len(sig) != len("t=1800000000,v1=")+64 {
		t.Fatalf("signature %q", sig)
	}
	tests := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		at     time.Time
		ok     bool
	}{
		{"good", secret, sig, body, now.Add(time.Minute), true},
		{"other secret", []byte("other"), sig, body, now, false},
		{"body changed", secret, sig, []byte(`{"a":2}`), now, false},
		{"too old (replay)", secret, sig, body, now.Add(time.Hour), false},
		{"malformed", secret, "v1=abc", body, now, false},
	}
	for _, tc := range tests {
		err := Verify(tc.secret, tc.header, tc.body, tc.at, 5*time.Minute)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestEncode(t *testing.T) {
	e := &relv1.Event{Seq: 42, Index: 900, TimeUnixNano: 1_800_000_000_000_000_000, Type: "rollout.succeeded", App: "web", Env: "prod",
		Version: "1.2.0", RolloutId: "ro-1", Message: "all 12 hosts healthy", Actor: &relv1.Actor{Kind: "token", Id: "ab12", Name: "alice"}}
	b, err := Encode("json", "chat", e)
	if err != nil {
		t.Fatal(err)
	}
	var body Body
	if err := json.Unmarshal(b, &body); err != nil || body.Delivery != "chat-42" || body.Event.Type != "rollout.succeeded" || body.Event.Actor.Name != "alice" ||
		body.Event.Time != "2027-01-15T08:00:00Z" {
		t.Fatalf("json body %s (%v)", b, err)
	}
	b, err = Encode("slack", "chat", e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"text":"[rel] rollout.succeeded web@1.2.0 in prod: all 12 hosts healthy (by alice)"}`
	if string(b) != want {
		t.Fatalf("slack body %s, want %s", b, want)
	}
}

// TestPostBounds: a redirect to another host is not followed (the 3xx is
// the answer, a failure); one on the same host is; a huge answer is read
// only so far and its error clipped.
func TestPostBounds(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the redirect to another host was followed: %s", r.URL)
	}))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, other.URL+"/x", http.StatusTemporaryRedirect)
		case "/here":
			http.Redirect(w, r, "/ok", http.StatusTemporaryRedirect)
		case "/ok":
			w.WriteHeader(202)
		case "/huge":
			w.WriteHeader(500)
			_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
		}
	}))
	defer srv.Close()
	c, err := NewClient("")
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	ctx := context.Background()
	post := func(path string) Attempt {
		return Post(ctx, c, srv.URL+path, []byte("k"), "h-1", "rollout.started", []byte("{}"), time.Now(), "test")
	}
	if a := post("/away"); a.OK() || a.Status != http.StatusTemporaryRedirect {
		t.Errorf("redirect elsewhere: %+v, want the 307 as a failure", a)
	}
	if a := post("/here"); !a.OK() || a.Status != 202 {
		t.Errorf("redirect on the same host: %+v, want 202", a)
	}
	if a := post("/huge"); a.OK() || len(a.Error()) > 300 {
		t.Errorf("huge error answer: ok %v, error of %d bytes", a.OK(), len(a.Error()))
	}
	if _, err := NewClient("not a pem"); err == nil {
		t.Error("a CA bundle without a certificate was accepted")
	}
}
