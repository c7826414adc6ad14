package health

import (
	"cmp"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestProbe(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		// Pointing at a failing page proves the redirect is not followed.
		http.Redirect(w, r, "/broken", http.StatusFound)
	})
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "db down", http.StatusServiceUnavailable) })
	mux.HandleFunc("/notfound", http.NotFound)
	release := make(chan struct{})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer close(release)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted sync.WaitGroup
	accepted.Add(1)
	go func() {
		defer accepted.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	defer accepted.Wait()
	defer l.Close()

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	down := closedAddr(t)

	tests := []struct {
		name    string
		check   Check
		wantErr string // "" = pass
		maxTime time.Duration
	}{
		{"http 204", Check{HTTP: srv.URL + "/ok"}, "", time.Second},
		{"http 302 passes without following", Check{HTTP: srv.URL + "/redirect"}, "", time.Second},
		{"http 503", Check{HTTP: srv.URL + "/broken"}, "status 503", time.Second},
		{"http 404", Check{HTTP: srv.URL + "/notfound"}, "status 404", time.Second},
		{"http refused", Check{HTTP: "http://" + down + "/"}, "connection refused", time.Second},
		{"http timeout", Check{HTTP: srv.URL + "/slow", Timeout: 100 * time.Millisecond}, "deadline exceeded", time.Second},
		{"tcp open", Check{TCP: l.Addr().String()}, "", time.Second},
		{"tcp refused", Check{TCP: down}, "connection refused", time.Second},
		{"exec true", Check{Exec: "true"}, "", time.Second},
		{"exec exit 3 with output", Check{Exec: "echo not ready >&2; exit 3"}, "exit status 3: not ready", time.Second},
		{"exec sees env", Check{Exec: `test "$FOO" = "a b"`, Env: []string{"FOO=a b"}}, "", time.Second},
		{"exec env not leaked", Check{Exec: `test -z "$HOME"`}, "", time.Second},
		{"exec runs in dir", Check{Exec: "test -f marker", Dir: dir}, "", time.Second},
		{"exec not in dir", Check{Exec: "test -f marker"}, "exit status 1", time.Second},
		{"exec timeout kills children", Check{Exec: "sleep 30; true", Timeout: 100 * time.Millisecond}, "timed out", 2 * time.Second},
		{"exec background child", Check{Exec: "sleep 30 & true", Timeout: 5 * time.Second}, "", 3 * time.Second},
		{"none", Check{}, "exactly one", time.Second},
		{"two", Check{TCP: down, Exec: "true"}, "exactly one", time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.check.Probe(context.Background())
			if took := time.Since(start); took > tc.maxTime {
				t.Errorf("took %s, want at most %s", took, tc.maxTime)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Probe: %v, want pass", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Probe: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// scripted is an HTTP endpoint whose answers follow a script: results[i] is
// the answer to the i-th request (true = 200); past the end the last one
// repeats. It records when each request arrived.
type scripted struct {
	mu      sync.Mutex
	results []bool
	times   []time.Time
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	i := len(s.times)
	s.times = append(s.times, time.Now())
	ok := s.results[min(i, len(s.results)-1)]
	s.mu.Unlock()
	if !ok {
		http.Error(w, "nope", http.StatusInternalServerError)
	}
}

func (s *scripted) arrivals() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times...)
}

func TestWait(t *testing.T) {
	const iv = 50 * time.Millisecond
	tests := []struct {
		name         string
		results      []bool
		interval     time.Duration // default 50ms
		healthyAfter time.Duration
		deadline     time.Duration
		wantErr      string
		// healthy must come after this many attempts...
		wantAttempts int
		// ...and this long after the start of the attempt that began the
		// final run of passes (with slack for scheduling).
		wantAfterPass time.Duration
	}{
		{name: "first attempt passes", results: []bool{true}, wantAttempts: 1},
		{name: "passes on third", results: []bool{false, false, true}, wantAttempts: 3},
		{name: "healthy after", results: []bool{true}, healthyAfter: 300 * time.Millisecond, wantAfterPass: 300 * time.Millisecond},
		{name: "failure resets the clock", results: []bool{true, true, false, true}, healthyAfter: 200 * time.Millisecond, wantAfterPass: 200 * time.Millisecond},
		// With a long interval, the attempt that completes healthy_after is
		// scheduled for that moment instead of the next interval tick.
		{name: "healthy after shorter than interval", results: []bool{true}, interval: time.Second, healthyAfter: 200 * time.Millisecond, wantAfterPass: 200 * time.Millisecond, wantAttempts: 2},
		{name: "deadline keeps last error", results: []bool{false}, deadline: 300 * time.Millisecond, wantErr: "not healthy within 300ms: http GET"},
		{name: "deadline while passing too briefly", results: []bool{false, false, true}, healthyAfter: 10 * time.Second, deadline: 300 * time.Millisecond, wantErr: "passing for"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &scripted{results: tc.results}
			srv := httptest.NewServer(s)
			defer srv.Close()
			var attempts []error
			interval := cmp.Or(tc.interval, iv)
			start := time.Now()
			err := Wait(context.Background(), Check{
				HTTP: srv.URL, Interval: interval, Timeout: time.Second,
				HealthyAfter: tc.healthyAfter, Deadline: tc.deadline,
			}, func(err error) { attempts = append(attempts, err) })
			took := time.Since(start)
			arr := s.arrivals()
			if len(arr) == 0 {
				t.Fatal("no attempt reached the server")
			}
			if len(attempts) != len(arr) {
				t.Errorf("onAttempt called %d times for %d requests", len(attempts), len(arr))
			}
			// Never a busy loop: before the first pass, retries start 10 ms
			// apart and double up to the interval; after it, the interval.
			passed := false
			for i := 1; i < len(arr); i++ {
				if i-1 < len(attempts) && attempts[i-1] == nil {
					passed = true
				}
				want := min(interval, 10*time.Millisecond<<min(i-1, 3), maxStartupRetry)
				if passed {
					want = min(interval, cmp.Or(tc.healthyAfter, interval))
				}
				// Arrivals at the server jitter by a few ms around the
				// schedule (which runs from each attempt's start); a busy
				// loop would show gaps well under a millisecond.
				if gap := arr[i].Sub(arr[i-1]); gap < want/2 {
					t.Errorf("attempts %d and %d only %s apart, want about %s", i-1, i, gap, want)
				}
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Wait: %v, want error containing %q", err, tc.wantErr)
				}
				if took < tc.deadline || took > tc.deadline+time.Second {
					t.Errorf("failed after %s, want about the %s deadline", took, tc.deadline)
				}
				return
			}
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if tc.wantAttempts != 0 && len(arr) != tc.wantAttempts {
				t.Errorf("%d attempts, want %d", len(arr), tc.wantAttempts)
			}
			// The last failing attempt, if any, is followed by the passes
			// that count.
			firstPass := 0
			for i, e := range attempts {
				if e != nil {
					firstPass = i + 1
				}
			}
			// Wait counts from the start of the attempt, a little before
			// the request arrives here.
			since := time.Since(arr[firstPass])
			if since < tc.healthyAfter-10*time.Millisecond {
				t.Errorf("healthy %s after the first pass, want at least %s", since, tc.healthyAfter)
			}
			if since > tc.wantAfterPass+100*time.Millisecond {
				t.Errorf("healthy %s after the first pass, want about %s", since, tc.wantAfterPass)
			}
		})
	}
}

// TestWaitOverhead is the latency budget from the issue: healthy_after 1s
// with a 100ms interval returns within ~1.1s of the first pass.
func TestWaitOverhead(t *testing.T) {
	s := &scripted{results: []bool{false, false, true}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	err := Wait(context.Background(), Check{HTTP: srv.URL, Interval: 100 * time.Millisecond, Timeout: time.Second, HealthyAfter: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	arr := s.arrivals()
	since := time.Since(arr[2])
	t.Logf("healthy %s after the first pass (%d attempts)", since, len(arr))
	// ~1.0s: 1s plus one attempt; the bound leaves room for a loaded CI
	// machine while still failing if Wait waited out whole intervals.
	if since > 1600*time.Millisecond {
		t.Errorf("healthy %s after the first pass, want about 1.1s at most", since)
	}
}

// TestWaitFirstAttemptImmediate: the first attempt does not wait for the
// interval.
func TestWaitFirstAttemptImmediate(t *testing.T) {
	s := &scripted{results: []bool{true}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	start := time.Now()
	if err := Wait(context.Background(), Check{HTTP: srv.URL, Interval: 10 * time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Wait took %s with a 10s interval: the first attempt waited", took)
	}
}

func TestWaitContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Wait(ctx, Check{TCP: closedAddr(t), Interval: time.Hour, Deadline: time.Hour}, nil)
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after cancel")
	}
}

func TestWaitExecWithDeadlineCutsAttempt(t *testing.T) {
	// An attempt longer than the deadline is cut short by the deadline.
	var n atomic.Int32
	start := time.Now()
	err := Wait(context.Background(), Check{Exec: "sleep 10", Timeout: time.Minute, Deadline: 200 * time.Millisecond},
		func(error) { n.Add(1) })
	if err == nil || !strings.Contains(err.Error(), "not healthy within 200ms") {
		t.Fatalf("Wait: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %s", took)
	}
}

// TestWaitStartupRetry: before the first pass the check is retried sooner
// than the interval, so a service that comes up in tens of milliseconds is
// found healthy without waiting a whole 1 s interval.
func TestWaitStartupRetry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens yet: the first attempts fail
	up := make(chan net.Listener, 1)
	go func() {
		time.Sleep(40 * time.Millisecond) // the service's start-up time
		l, err := net.Listen("tcp", addr)
		if err != nil {
			up <- nil
			return
		}
		up <- l
	}()
	start := time.Now()
	err = Wait(context.Background(), Check{TCP: addr, Interval: time.Second, Deadline: 5 * time.Second}, nil)
	took := time.Since(start)
	if l := <-up; l != nil {
		defer l.Close()
	} else {
		t.Skip("could not bind the port again")
	}
	if err != nil {
		t.Fatal(err)
	}
	if took > 500*time.Millisecond {
		t.Fatalf("healthy after %s with a 1s interval; the start-up retries should find it within ~100ms", took)
	}
}

// TestProbeExecAsUser: an exec check with a Credential runs as that user,
// with its groups only (not root's).
func TestProbeExecAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	const asNobody = `test "$(id -u)" = 65534 && test "$(id -g)" = 65534 && test "$(id -G)" = 65534`
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
	if err := (Check{Exec: asNobody, Dir: "/", Credential: nobody}).Probe(context.Background()); err != nil {
		t.Errorf("as nobody: %v", err)
	}
	// Without a credential it runs as the caller (root): the check is
	// what tells them apart.
	if err := (Check{Exec: asNobody, Dir: "/"}).Probe(context.Background()); err == nil {
		t.Error("a check without a credential passed as nobody")
	}
	// And Wait passes it on.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Wait(ctx, Check{Exec: asNobody, Dir: "/", Credential: nobody, Interval: 10 * time.Millisecond}, nil); err != nil {
		t.Errorf("Wait as nobody: %v", err)
	}
}

// TestProbeExecOutputIsValidUTF8: a failing command's output ends up in a
// report's reason, a protobuf string: it must be valid UTF-8, bounded,
// and cut on a character boundary.
func TestProbeExecOutputIsValidUTF8(t *testing.T) {
	for _, command := range []string{
		`printf 'x'; i=0; while [ $i -lt 400 ]; do printf 'é'; i=$((i+1)); done; printf z; exit 1`,
		`printf '\377\376\375 bad bytes'; exit 1`,
		`i=0; while [ $i -lt 400 ]; do printf '\377'; i=$((i+1)); done; exit 1`,
	} {
		err := (Check{Exec: command}).Probe(context.Background())
		if err == nil {
			t.Fatalf("%s passed", command)
		}
		msg := err.Error()
		_, out, _ := strings.Cut(msg, "exit status 1: ")
		if !utf8.ValidString(msg) || len(out) > outputTail || out == "" {
			t.Errorf("%s: output of %d bytes, valid UTF-8 %v: %q", command, len(out), utf8.ValidString(msg), msg[:min(len(msg), 80)])
		}
	}
}
