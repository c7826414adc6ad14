// Package webhook delivers the cluster's events to webhooks: the request
// (body formats, Stripe-style signature, headers), a bounded HTTP client,
// and the leader-only Manager that delivers each webhook's events in
// order, retries with backoff and jitter, dead-letters what it gives up
// on, and records its progress through raft.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// HTTP bounds of a delivery.
const (
	ConnectTimeout = 5 * time.Second
	RequestTimeout = 10 * time.Second
	// maxResponseRead is how much of an answer is read (and the
	// connection reused); maxErrorBody how much of it an error keeps.
	maxResponseRead = 64 << 10
	maxErrorBody    = 256
	maxRedirects    = 5
)

// Headers of a delivery.
const (
	HeaderSignature = "Rel-Signature"
	HeaderDelivery  = "Rel-Delivery"
	HeaderEvent     = "Rel-Event"
)

// ErrBadCA is the sentinel of a --ca-file that holds no certificate.
var ErrBadCA = errors.New("no PEM certificate in the CA bundle")

// Sign is the Rel-Signature header for body sent at t: Stripe's scheme,
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>". The
// receiver recomputes it with the secret and rejects a t too far from
// its clock, which stops replays of an old request.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a Rel-Signature header against body with secret, and that
// its time is within tolerance of now. Receivers in Go can use it; it is
// what the tests check deliveries with.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return fmt.Errorf("malformed %s %q", HeaderSignature, header)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%s time %d is %s from now", HeaderSignature, sec, d)
	}
	want := Sign(secret, time.Unix(sec, 0), body)
	if !hmac.Equal([]byte(want), []byte("t="+ts+",v1="+sig)) {
		return errors.New("signature does not match")
	}
	return nil
}

// DeliveryID is the stable id of a webhook's delivery of event seq: the
// same for every attempt and every leader, so receivers dedupe on it.
func DeliveryID(webhook string, seq uint64) string {
	return webhook + "-" + strconv.FormatUint(seq, 10)
}

// Actor is an event's actor in a JSON body.
type Actor struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// EventBody is an event in the json format's body.
type EventBody struct {
	Seq       uint64 `json:"seq"`
	Index     uint64 `json:"index"`
	Time      string `json:"time"`
	Type      string `json:"type"`
	App       string `json:"app,omitempty"`
	Env       string `json:"env,omitempty"`
	RolloutID string `json:"rollout_id,omitempty"`
	Version   string `json:"version,omitempty"`
	AgentID   string `json:"agent_id,omitempty"`
	Wave      uint32 `json:"wave,omitempty"`
	Actor     *Actor `json:"actor,omitempty"`
	Message   string `json:"message"`
}

// Body is the json format's body.
type Body struct {
	Delivery string    `json:"delivery"`
	Webhook  string    `json:"webhook"`
	Event    EventBody `json:"event"`
}

// Encode is the body of a delivery of e to webhook in format (json or
// slack).
func Encode(format, webhook string, e *relv1.Event) ([]byte, error) {
	if format == "slack" {
		return json.Marshal(struct {
			Text string `json:"text"`
		}{Text: SlackLine(e)})
	}
	return json.Marshal(Body{Delivery: DeliveryID(webhook, e.GetSeq()), Webhook: webhook, Event: NewEventBody(e)})
}

// NewEventBody is e as JSON: the event of a webhook's body, and what
// relctl events -o json prints, so both read the same.
func NewEventBody(e *relv1.Event) EventBody {
	out := EventBody{
		Seq: e.GetSeq(), Index: e.GetIndex(), Time: time.Unix(0, e.GetTimeUnixNano()).UTC().Format(time.RFC3339Nano), Type: e.GetType(),
		App: e.GetApp(), Env: e.GetEnv(), RolloutID: e.GetRolloutId(), Version: e.GetVersion(), AgentID: e.GetAgentId(),
		Wave: e.GetWave(), Message: e.GetMessage(),
	}
	if a := e.GetActor(); a != nil {
		out.Actor = &Actor{Kind: a.GetKind(), ID: a.GetId(), Name: a.GetName()}
	}
	return out
}

// SlackLine is an event as one line for people: type, subject, message,
// who.
func SlackLine(e *relv1.Event) string {
	var b strings.Builder
	b.WriteString("[rel] " + e.GetType())
	if e.GetApp() != "" {
		b.WriteString(" " + e.GetApp())
		if e.GetVersion() != "" {
			b.WriteString("@" + e.GetVersion())
		}
	}
	if e.GetEnv() != "" {
		b.WriteString(" in " + e.GetEnv())
	}
	if e.GetAgentId() != "" {
		b.WriteString(" on " + e.GetAgentId())
	}
	b.WriteString(": " + e.GetMessage())
	if a := e.GetActor(); a.GetName() != "" || a.GetId() != "" {
		who := a.GetName()
		if who == "" {
			who = a.GetId()
		}
		b.WriteString(" (by " + who + ")")
	}
	return b.String()
}

// NewClient is the HTTP client of one webhook: connect within 5 s, the
// whole request within 10 s, https verified against caPEM (when given)
// or the system's roots, and redirects followed only on the same scheme
// and host (a redirect elsewhere is answered as the 3xx it is: a failed
// delivery).
func NewClient(caPEM string) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, ErrBadCA
		}
		tlsCfg.RootCAs = pool
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   ConnectTimeout,
		ResponseHeaderTimeout: RequestTimeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   RequestTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}, nil
}

// Attempt is the outcome of one POST.
type Attempt struct {
	Status   int
	Err      error
	Duration time.Duration
}

// OK reports a 2xx answer.
func (a Attempt) OK() bool { return a.Err == nil && a.Status >= 200 && a.Status < 300 }

// Error describes a failed attempt for people.
func (a Attempt) Error() string {
	if a.Err != nil {
		return a.Err.Error()
	}
	return "HTTP " + strconv.Itoa(a.Status)
}

// Post sends one delivery.
func Post(ctx context.Context, c *http.Client, url string, secret []byte, deliveryID, eventType string, body []byte, now time.Time, userAgent string) Attempt {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Attempt{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(HeaderDelivery, deliveryID)
	req.Header.Set(HeaderEvent, eventType)
	if len(secret) > 0 {
		req.Header.Set(HeaderSignature, Sign(secret, now, body))
	}
	resp, err := c.Do(req)
	if err != nil {
		return Attempt{Err: err, Duration: time.Since(start)}
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseRead))
	a := Attempt{Status: resp.StatusCode, Duration: time.Since(start)}
	if !a.OK() && len(head) > 0 {
		a.Err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(strings.ToValidUTF8(string(head), "?")))
	}
	return a
}
