// install: how fast the agent's own install path (install.Host.Apply, run
// in-process with an agent certificate against a one-server TLS cluster's
// store) downloads, verifies and extracts a generated -install-size bundle,
// .tar.zst and .tar.gz, against `curl | tee >(sha256sum) | tar x` of the
// same URL, alternating the two, -install-runs of each; ratio of medians.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/relhq/rel/internal/artifact"
	"github.com/relhq/rel/internal/install"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var (
	installSize    = flag.Int64("install-size", 1024, "install suite: the bundle's size in MiB (the artifact, as downloaded)")
	installRuns    = flag.Int("install-runs", 3, "install suite: timed installs by the agent and by the reference, each, per format (alternating; medians reported)")
	installProfile = flag.String("install-profile", "", "install suite: save a CPU profile of each of the agent's timed installs in this directory (go tool pprof merges them)")
)

// installGoal: the reference's time over the agent's is at least this
// (the agent at most 25 % slower).
const installGoal = 0.8

// installFormats are the formats timed, with tar's flag to read them.
var installFormats = []struct{ ext, tarFlag, tool string }{
	{"tar.zst", "--zstd", "zstd"},
	{"tar.gz", "-z", "gzip"},
}

func runInstall() error {
	if *installRuns < 1 || *installSize < 1 {
		return fmt.Errorf("-install-runs %d, -install-size %d: want at least 1 each", *installRuns, *installSize)
	}
	work, err := os.MkdirTemp("", "rel-bench-install-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	c, err := startSingle(work)
	defer c.stop()
	if err != nil {
		return err
	}
	ctx := context.Background()
	conn, err := c.dial(nil)
	if err != nil {
		return err
	}
	art := relv1.NewArtifactServiceClient(conn)

	// The agent's side: its certificate (files for curl, a bundle for the
	// in-process install.Host, which fetches through the agent's own
	// mTLS transport).
	certFile, keyFile, err := agentFiles(c.sec.pki, "bench-install")
	if err != nil {
		return err
	}
	b, err := transport.LoadBundle(transport.Files{CA: c.sec.pki.caFile, Cert: certFile, Key: keyFile})
	if err != nil {
		return err
	}
	sec := transport.Security{M: transport.StaticMaterial(b)}
	phases := &unpackLog{}
	host, err := install.New(install.Config{
		Root: filepath.Join(work, "agent", "root"), DataDir: filepath.Join(work, "agent", "data"), NodeID: "bench-install",
		Keep: 1, StoreClient: &http.Client{Transport: sec.HTTPTransport()}, Logger: slog.New(phases),
	})
	if err != nil {
		return err
	}
	defer host.Close()
	if *installProfile != "" {
		if err := os.MkdirAll(*installProfile, 0o755); err != nil {
			return err
		}
	}

	srv := c.servers[0]
	_, port, err := net.SplitHostPort(srv.http)
	if err != nil {
		return err
	}
	_, curlErr := exec.LookPath("curl")
	for fi, format := range installFormats {
		dir, err := os.MkdirTemp("", "rel-bench-bundle-")
		if err != nil {
			return err
		}
		began := time.Now()
		bb, err := writeBigBundle(filepath.Join(dir, "big."+format.ext), format.ext, *installSize<<20, 7, nil)
		if err == nil {
			_, err = uploadFile(ctx, art, bb.path)
		}
		os.RemoveAll(dir)
		if err != nil {
			return err
		}
		fmt.Printf("%s: %s artifact, %s of files; generated and uploaded in %s\n", format.ext, mib(bb.size), mib(bb.expanded), time.Since(began).Round(100*time.Millisecond))
		path := artifact.HTTPPath(bb.sha256)
		d := install.Desired{App: "big", StoreURLs: []string{"https://" + srv.http + path}, SHA256: bb.sha256, Size: bb.size}

		// Why the reference cannot run, if it cannot.
		var noRef string
		_, toolErr := exec.LookPath(format.tool)
		switch {
		case curlErr != nil:
			noRef = "curl is not installed"
		case toolErr != nil:
			noRef = format.tool + " is not installed (tar " + format.tarFlag + " needs it)"
		}
		ref := []string{"-c", `set -o pipefail
rm -f "$4.fifo"; mkfifo "$4.fifo"
sha256sum < "$4.fifo" > "$4.sum" & sum=$!
curl -sS --fail --cacert "$1" --cert "$2" --key "$3" --resolve "server.` + clusterName + `.rel:$5:127.0.0.1" "https://server.` + clusterName + `.rel:$5$6" |
	tee "$4.fifo" | tar -x ` + format.tarFlag + ` -C "$4"
rc=$?; wait $sum || exit 1; exit $rc`, "ref", c.sec.pki.caFile, certFile, keyFile, "", port, path}

		var agentT, refT, fetchT, extractT, syncT []time.Duration
		for i := 0; i < *installRuns; i++ {
			// Alternate which goes first: drift hits both alike.
			for k := range 2 {
				if (i+k)%2 == 0 {
					d.Version = fmt.Sprintf("1.%d.%d", fi, i)
					t, fetched, err := agentInstall(ctx, host, d, fmt.Sprintf("%s-%d", format.ext, i))
					if err != nil {
						return fmt.Errorf("%s, agent: %w", format.ext, err)
					}
					ex, sy := phases.last()
					agentT, fetchT, extractT, syncT = append(agentT, t), append(fetchT, fetched), append(extractT, ex), append(syncT, sy)
					fmt.Printf("[%s %d/%d] agent %s (download + verify %s, extract %s, fsync %s)\n", format.ext, i+1, *installRuns, secs(t), secs(fetched), secs(ex), secs(sy))
					continue
				}
				if noRef != "" {
					continue
				}
				out := filepath.Join(work, "ref")
				if err := os.MkdirAll(out, 0o755); err != nil {
					return err
				}
				ref[6] = out
				start := time.Now()
				if o, err := exec.Command("bash", ref...).CombinedOutput(); err != nil {
					return fmt.Errorf("%s, reference: %v: %s", format.ext, err, o)
				}
				t := time.Since(start)
				sum, err := os.ReadFile(out + ".sum")
				if err != nil || !strings.HasPrefix(string(sum), bb.sha256) {
					return fmt.Errorf("%s, reference: sha256 %q, want %s (%v)", format.ext, sum, bb.sha256, err)
				}
				os.RemoveAll(out)
				os.Remove(out + ".sum")
				os.Remove(out + ".fifo")
				refT = append(refT, t)
				fmt.Printf("[%s %d/%d] reference %s\n", format.ext, i+1, *installRuns, secs(t))
			}
		}
		am := median(agentT)
		mbs := func(t time.Duration) float64 { return float64(bb.size) / (1 << 20) / t.Seconds() }
		name := fmt.Sprintf("install throughput, %s %s: agent (download + verify + extract) vs curl | tee >(sha256sum) | tar x", mib(bb.size), format.ext)
		agentFig := fmt.Sprintf("agent %s (median of %d, %s-%s; %.0f MiB/s; of which download + verify %s, extract %s, fsync %s)",
			secs(am), len(agentT), secsBare(minD(agentT)), secsBare(maxD(agentT)), mbs(am), secs(median(fetchT)), secs(median(extractT)), secs(median(syncT)))
		if noRef != "" {
			addRow(row{name: name, figure: agentFig + "; reference not run: " + noRef, goal: fmt.Sprintf("reference time / agent time ≥ %.1f", installGoal), verdict: "not measured: " + noRef})
			continue
		}
		rm := median(refT)
		ratio := rm.Seconds() / am.Seconds()
		addRow(row{name: name,
			figure: fmt.Sprintf("ratio %.2f (reference time / agent time: below 1 the agent is slower); %s; reference %s (median of %d, %s-%s; %.0f MiB/s)",
				ratio, agentFig, secs(rm), len(refT), secsBare(minD(refT)), secsBare(maxD(refT)), mbs(rm)),
			goal:    fmt.Sprintf("ratio ≥ %.1f", installGoal),
			verdict: strings.Replace(atLeast(ratio, installGoal, ""), "  ", " ", 1)})
	}
	return nil
}

// agentInstall runs the agent's install path for d (a version not on
// disk) and returns the time from downloading to starting (download,
// verify, extract, fsync, rename) and the download part of it.
func agentInstall(ctx context.Context, host *install.Host, d install.Desired, profile string) (total, fetched time.Duration, err error) {
	at := map[install.Phase]time.Time{}
	var reason string
	if *installProfile != "" {
		f, err := os.Create(filepath.Join(*installProfile, "install-"+profile+".pprof"))
		if err != nil {
			return 0, 0, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 0, 0, err
		}
		defer pprof.StopCPUProfile()
	}
	err = host.Apply(ctx, d, func(e install.Event) {
		at[e.Phase] = e.At
		reason = e.Reason
	})
	if err != nil {
		return 0, 0, fmt.Errorf("%v (%s)", err, reason)
	}
	t0, t1, t2 := at[install.PhaseDownloading], at[install.PhaseInstalling], at[install.PhaseStarting]
	if t0.IsZero() || t1.IsZero() || t2.IsZero() {
		return 0, 0, errors.New("the install reported no downloading, installing and starting phases: was the version on disk already?")
	}
	return t2.Sub(t0), t1.Sub(t0), nil
}

// agentFiles issues an agent certificate of the bench's CA and writes it
// and its key (0600) beside the CA file.
func agentFiles(p *benchPKI, id string) (certFile, keyFile string, err error) {
	certPEM, keyPEM, err := p.ca.Issue(pki.Leaf{Identity: pki.Identity{Kind: pki.KindAgent, ID: id}}, time.Now())
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(p.dir, id+".pem"), filepath.Join(p.dir, id+"-key.pem")
	if err := pki.WriteFile(certFile, certPEM, 0o644, false); err != nil {
		return "", "", err
	}
	return certFile, keyFile, pki.WriteFile(keyFile, keyPEM, 0o600, false)
}

// unpackLog is an slog.Handler keeping the extract and fsync durations of
// the install package's "release unpacked" debug record.
type unpackLog struct {
	mu            sync.Mutex
	extract, sync time.Duration
}

func (u *unpackLog) Enabled(context.Context, slog.Level) bool { return true }

func (u *unpackLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "release unpacked" {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "extract":
			u.extract = a.Value.Duration()
		case "sync":
			u.sync = a.Value.Duration()
		}
		return true
	})
	return nil
}

func (u *unpackLog) WithAttrs([]slog.Attr) slog.Handler { return u }
func (u *unpackLog) WithGroup(string) slog.Handler      { return u }

func (u *unpackLog) last() (extract, sync time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.extract, u.sync
}

func init() { register(suite{name: "install", run: runInstall}) }
