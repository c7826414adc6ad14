package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// healthDeadline is the failing release's health deadline in the canary
// measurement.
const healthDeadline = 3 * time.Second

// latencyCluster is a cluster with 3 real agents and the sample app.
type latencyCluster struct {
	c     *cluster
	work  string
	ctx   context.Context
	ctl   relv1.ControlServiceClient
	art   relv1.ArtifactServiceClient
	roots map[string]string
	hello string
	n     int
}

// startLatency starts a cluster of flavor fl with 3 real agents (each
// enrols with one join token good for 3, TLS) and creates the app and the
// environment.
func startLatency(fl flavor, hello string) (*latencyCluster, error) {
	work, err := os.MkdirTemp("", "rel-bench-latency-")
	if err != nil {
		return &latencyCluster{}, err
	}
	l := &latencyCluster{work: work, ctx: context.Background(), roots: map[string]string{}, hello: hello}
	l.c, err = startCluster(work, fl)
	if err != nil {
		return l, err
	}
	ctx := l.ctx
	enrol, err := l.c.agentArgs(ctx, 3)
	if err != nil {
		return l, err
	}
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("web-%d", i)
		l.roots[id] = filepath.Join(work, id, "root")
		args := append([]string{"--node-id", id, "--servers", l.c.addrs(), "--labels", "env=bench",
			"--data-dir", filepath.Join(work, id, "data"), "--install-root", l.roots[id], "--log-level", "warn"}, enrol...)
		if _, err := l.c.startAgent(id+".log", args...); err != nil {
			return l, err
		}
	}
	if l.ctl, err = l.c.client(nil); err != nil {
		return l, err
	}
	conn, err := l.c.dial(nil)
	if err != nil {
		return l, err
	}
	l.art = relv1.NewArtifactServiceClient(conn)
	if _, err := l.ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "hello"}); err != nil {
		return l, err
	}
	if _, err := l.ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "bench", Selector: map[string]string{"env": "bench"}}); err != nil {
		return l, err
	}
	if err := waitConnected(ctx, l.ctl, "bench", 3, 30*time.Second); err != nil {
		return l, err
	}
	return l, nil
}

func (l *latencyCluster) stop() {
	if l.c != nil {
		l.c.stop()
	}
	os.RemoveAll(l.work)
}

// release uploads a bundle of the sample app with the given health check
// and creates a release of it.
func (l *latencyCluster) release(check string, deadline time.Duration) (string, error) {
	l.n++
	version := fmt.Sprintf("1.0.%d", l.n)
	data, err := helloBundle(l.hello, version, check, deadline)
	if err != nil {
		return "", err
	}
	url, err := upload(l.ctx, l.art, data)
	if err != nil {
		return "", err
	}
	_, err = l.ctl.CreateRelease(l.ctx, &relv1.CreateReleaseRequest{App: "hello", Version: version, ArtifactUrl: url})
	return version, err
}

// deploy times a rollout of a new healthy release from start to
// succeeded.
func (l *latencyCluster) deploy(spec *relv1.RolloutSpec) (time.Duration, error) {
	version, err := l.release("./hello check", 30*time.Second)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	resp, err := l.ctl.StartRollout(l.ctx, &relv1.StartRolloutRequest{App: "hello", Version: version, Environment: "bench", Spec: spec})
	if err != nil {
		return 0, err
	}
	st, err := waitRollout(l.ctx, l.ctl, resp.GetRollout().GetId())
	if err != nil {
		return 0, err
	}
	if st.GetRollout().GetState() != "succeeded" {
		return 0, fmt.Errorf("rollout %s ended %s: %s (logs in %s)", resp.GetRollout().GetId(), st.GetRollout().GetState(), st.GetRollout().GetReason(), l.work)
	}
	return time.Since(start), nil
}

// latencyCases are the timed deploys: name in today's output, name in the
// comparison, spec, target.
var latencyCases = []struct {
	name, short string
	spec        *relv1.RolloutSpec
	target      time.Duration
}{
	{"one host at a time (rolling, max-parallel 1)", "deploy, one host at a time (3 real agents)", &relv1.RolloutSpec{Strategy: "rolling", MaxParallel: 1}, 3600 * time.Millisecond},
	{"all at once", "deploy, all at once (3 real agents)", &relv1.RolloutSpec{}, 1300 * time.Millisecond},
}

// runLatency measures deploy latency with 3 real agents. Without a
// baseline it is one TLS cluster, 5 deploys of each kind. With one, it is
// -runs clusters of each kind in turn (TLS, baseline, TLS, ...), each
// timing one deploy of each kind after a warm-up; then the failing canary
// on one more TLS cluster.
func runLatency() error {
	dir, err := os.MkdirTemp("", "rel-bench-hello-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	hello, err := buildHello(dir)
	if err != nil {
		return err
	}
	printLine := func(name string, ds []time.Duration, target time.Duration) {
		fmt.Printf("deploy latency, 3 real agents, healthy_after 1s, %s: median %s of %d (min %s, max %s; target <= %s)\n",
			name, median(ds).Round(time.Millisecond), len(ds), minD(ds).Round(time.Millisecond), maxD(ds).Round(time.Millisecond), target)
	}
	if base != nil {
		var ds [2][2][]time.Duration // flavor, case
		for i := 0; i < *runsFlag; i++ {
			for k, fl := range []flavor{tlsFlavor(), *base} {
				if err := func() error {
					l, err := startLatency(fl, hello)
					defer l.stop()
					if err != nil {
						return err
					}
					// Warm up: the first install of every host.
					if _, err := l.deploy(&relv1.RolloutSpec{}); err != nil {
						return err
					}
					var got []string
					for j, tc := range latencyCases {
						d, err := l.deploy(tc.spec)
						if err != nil {
							return err
						}
						ds[k][j] = append(ds[k][j], d)
						got = append(got, fmt.Sprintf("%s %s", tc.name, d.Round(time.Millisecond)))
					}
					fmt.Printf("[%s %d/%d] deploy latency: %s\n", fl.name, i+1, *runsFlag, strings.Join(got, "; "))
					return nil
				}(); err != nil {
					return fmt.Errorf("%s: %w", fl.name, err)
				}
			}
		}
		for j, tc := range latencyCases {
			printLine(tc.name+" (TLS, one cluster per deploy)", ds[0][j], tc.target)
		}
		for j, tc := range latencyCases {
			cost(tc.short, median(ds[0][j]), ds[0][j], median(ds[1][j]), ds[1][j], true)
		}
	}

	l, err := startLatency(tlsFlavor(), hello)
	defer l.stop()
	if err != nil {
		return err
	}
	// Warm up: the first install of every host.
	if _, err := l.deploy(&relv1.RolloutSpec{}); err != nil {
		return err
	}
	if base == nil {
		for _, tc := range latencyCases {
			var ds []time.Duration
			for i := 0; i < 5; i++ {
				d, err := l.deploy(tc.spec)
				if err != nil {
					return err
				}
				ds = append(ds, d)
			}
			printLine(tc.name, ds, tc.target)
			addRow(row{name: "deploy to 3 real agents (exec check, healthy_after 1 s), " + tc.name,
				figure: fmt.Sprintf("%s (median of %d, %s-%s)", secs(median(ds)), len(ds), secsBare(minD(ds)), secsBare(maxD(ds))),
				goal:   "≤ " + secs(tc.target), verdict: atMost(median(ds).Seconds(), tc.target.Seconds(), "s")})
		}
	}

	// A release whose health check fails: canary 1 with auto-rollback,
	// from rollout start until the canary answers on the old release.
	ctx, ctl := l.ctx, l.ctl
	var back, done []time.Duration
	for i := 0; i < 5; i++ {
		if _, err := l.deploy(&relv1.RolloutSpec{}); err != nil {
			return err
		}
		oldVersion := fmt.Sprintf("1.0.%d", l.n)
		bad, err := l.release("false", healthDeadline)
		if err != nil {
			return err
		}
		start := time.Now()
		resp, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "hello", Version: bad, Environment: "bench",
			Spec: &relv1.RolloutSpec{Strategy: "canary", AutoRollback: true}})
		if err != nil {
			return err
		}
		canary := resp.GetRollout().GetHosts()[0].GetAgentId()
		for _, h := range resp.GetRollout().GetHosts() {
			if h.GetWave() == 0 {
				canary = h.GetAgentId()
			}
		}
		// Wait until the canary left the old release, then until it answers
		// on it again.
		left := false
		deadline := start.Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			cur, _ := os.Readlink(filepath.Join(l.roots[canary], "hello", "current"))
			if filepath.Base(cur) == bad {
				left = true
			}
			if left && filepath.Base(cur) == oldVersion && answers(l.roots[canary], oldVersion) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		back = append(back, time.Since(start))
		st, err := waitRollout(ctx, ctl, resp.GetRollout().GetId())
		if err != nil {
			return err
		}
		if st.GetRollout().GetState() != "rolled_back" {
			return fmt.Errorf("failing canary ended %s: %s", st.GetRollout().GetState(), st.GetRollout().GetReason())
		}
		done = append(done, time.Since(start))
	}
	fmt.Printf("failing release, canary 1 + auto-rollback (health deadline %s): canary answering on the old release after median %s of 5 (min %s, max %s; target <= %s); rollback verified healthy after median %s\n",
		healthDeadline, median(back).Round(time.Millisecond), minD(back).Round(time.Millisecond), maxD(back).Round(time.Millisecond),
		healthDeadline+time.Second, median(done).Round(time.Millisecond))
	addRow(row{name: fmt.Sprintf("failing release (health deadline %s), canary 1 + auto-rollback: until the canary answers on the old release", healthDeadline),
		figure: fmt.Sprintf("%s (median of %d, %s-%s)", secs(median(back)), len(back), secsBare(minD(back)), secsBare(maxD(back))),
		goal:   "≤ " + secs(healthDeadline+time.Second), verdict: atMost(median(back).Seconds(), (healthDeadline + time.Second).Seconds(), "s")})
	return nil
}

func answers(root, version string) bool {
	b, err := os.ReadFile(filepath.Join(root, "hello", "current", "listen.addr"))
	if err != nil {
		return false
	}
	cl := http.Client{Timeout: 500 * time.Millisecond}
	resp, err := cl.Get("http://" + strings.TrimSpace(string(b)) + "/")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.Contains(string(body), "version "+version)
}

// buildHello builds the sample app into dir, as scripts/bundle.sh ships
// it: static and stripped.
func buildHello(dir string) (string, error) {
	hello := filepath.Join(dir, "hello")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", hello, "./examples/hello")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build hello: %v\n%s", err, out)
	}
	return hello, nil
}

// helloSpec is the sample app's rel.yaml with the given health check.
func helloSpec(check string, deadline time.Duration) string {
	return fmt.Sprintf(`run: ./hello serve
health:
  exec: %s
  interval: 250ms
  timeout: 2s
  healthy_after: 1s
  deadline: %s
stop_timeout: 3s
`, check, deadline)
}

func helloBundle(hello, version, check string, deadline time.Duration) ([]byte, error) {
	bin, err := os.ReadFile(hello)
	if err != nil {
		return nil, err
	}
	relYAML := helloSpec(check, deadline)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"hello", 0o755, bin}, {"rel.yaml", 0o644, []byte(relYAML)}, {"VERSION", 0o644, []byte(version + "\n")}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg, ModTime: time.Now()}); err != nil {
			return nil, err
		}
		tw.Write(f.data)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes(), nil
}

func upload(ctx context.Context, art relv1.ArtifactServiceClient, data []byte) (string, error) {
	sum := sha256Hex(data)
	st, err := art.Upload(ctx)
	if err != nil {
		return "", err
	}
	if err := st.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Header{Header: &relv1.UploadHeader{Sha256: sum, Size: int64(len(data)), Name: "hello.tar.gz"}}}); err != nil {
		return "", err
	}
	for off := 0; off < len(data); off += 256 << 10 {
		if err := st.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Chunk{Chunk: data[off:min(off+256<<10, len(data))]}}); err != nil {
			break
		}
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		return "", err
	}
	return resp.GetArtifactUrl(), nil
}

func decodeJSON(resp *http.Response, v any) {
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(v)
}

func init() { register(suite{name: "latency", run: runLatency}) }
