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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// healthDeadline is the failing release's health deadline in the canary
// measurement.
const healthDeadline = 3 * time.Second

// runLatency measures deploy latency with 3 real agents.
func runLatency() error {
	work, err := os.MkdirTemp("", "rel-bench-latency-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	hello := filepath.Join(work, "hello")
	// Built like scripts/bundle.sh ships it: static and stripped.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", hello, "./examples/hello")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build hello: %v\n%s", err, out)
	}
	c, err := startCluster(work)
	defer c.stop()
	if err != nil {
		return err
	}
	roots := map[string]string{}
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("web-%d", i)
		roots[id] = filepath.Join(work, id, "root")
		a := exec.Command(filepath.Join(*binDir, "rel-agent"), "--node-id", id, "--servers", c.addrs(), "--labels", "env=bench",
			"--data-dir", filepath.Join(work, id, "data"), "--install-root", roots[id], "--log-level", "warn")
		logf, _ := os.Create(filepath.Join(work, id+".log"))
		a.Stdout, a.Stderr = logf, logf
		if err := a.Start(); err != nil {
			return err
		}
		c.procs = append(c.procs, a)
	}
	ctx := context.Background()
	ctl, err := c.client(nil)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(c.servers[0].grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	art := relv1.NewArtifactServiceClient(conn)
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "hello"}); err != nil {
		return err
	}
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "bench", Selector: map[string]string{"env": "bench"}}); err != nil {
		return err
	}
	if err := waitConnected(ctx, ctl, "bench", 3, 30*time.Second); err != nil {
		return err
	}
	n := 0
	release := func(check string, deadline time.Duration) (string, error) {
		n++
		version := fmt.Sprintf("1.0.%d", n)
		data, err := helloBundle(hello, version, check, deadline)
		if err != nil {
			return "", err
		}
		url, err := upload(ctx, art, data)
		if err != nil {
			return "", err
		}
		_, err = ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "hello", Version: version, ArtifactUrl: url})
		return version, err
	}
	deploy := func(spec *relv1.RolloutSpec) (time.Duration, error) {
		version, err := release("./hello check", 30*time.Second)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		resp, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "hello", Version: version, Environment: "bench", Spec: spec})
		if err != nil {
			return 0, err
		}
		st, err := waitRollout(ctx, ctl, resp.GetRollout().GetId())
		if err != nil {
			return 0, err
		}
		if st.GetRollout().GetState() != "succeeded" {
			return 0, fmt.Errorf("rollout %s ended %s: %s", resp.GetRollout().GetId(), st.GetRollout().GetState(), st.GetRollout().GetReason())
		}
		return time.Since(start), nil
	}
	// Warm up: the first install of every host.
	if _, err := deploy(&relv1.RolloutSpec{}); err != nil {
		return err
	}
	for _, tc := range []struct {
		name   string
		spec   *relv1.RolloutSpec
		target time.Duration
	}{
		{"one host at a time (rolling, max-parallel 1)", &relv1.RolloutSpec{Strategy: "rolling", MaxParallel: 1}, 3600 * time.Millisecond},
		{"all at once", &relv1.RolloutSpec{}, 1300 * time.Millisecond},
	} {
		var ds []time.Duration
		for i := 0; i < 5; i++ {
			d, err := deploy(tc.spec)
			if err != nil {
				return err
			}
			ds = append(ds, d)
		}
		fmt.Printf("deploy latency, 3 real agents, healthy_after 1s, %s: median %s of 5 (min %s, max %s; target <= %s)\n",
			tc.name, median(ds).Round(time.Millisecond), minD(ds).Round(time.Millisecond), maxD(ds).Round(time.Millisecond), tc.target)
	}

	// A release whose health check fails: canary 1 with auto-rollback,
	// from rollout start until the canary answers on the old release.
	var back, done []time.Duration
	for i := 0; i < 5; i++ {
		good, err := deploy(&relv1.RolloutSpec{})
		_ = good
		if err != nil {
			return err
		}
		oldVersion := fmt.Sprintf("1.0.%d", n)
		bad, err := release("false", healthDeadline)
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
			cur, _ := os.Readlink(filepath.Join(roots[canary], "hello", "current"))
			if filepath.Base(cur) == bad {
				left = true
			}
			if left && filepath.Base(cur) == oldVersion && answers(roots[canary], oldVersion) {
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

func helloBundle(hello, version, check string, deadline time.Duration) ([]byte, error) {
	bin, err := os.ReadFile(hello)
	if err != nil {
		return nil, err
	}
	relYAML := fmt.Sprintf(`run: ./hello serve
health:
  exec: %s
  interval: 250ms
  timeout: 2s
  healthy_after: 1s
  deadline: %s
stop_timeout: 3s
`, check, deadline)
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
