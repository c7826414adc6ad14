// Command rel-agent runs on every production host: it holds a stream to any
// server of the Rel cluster, installs the releases the cluster says the host
// should run, and reports what happened.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/relhq/rel/internal/agent"
	"github.com/relhq/rel/internal/agentcert"
	"github.com/relhq/rel/internal/install"
	"github.com/relhq/rel/internal/transport"
	"github.com/relhq/rel/internal/validate"
	"github.com/relhq/rel/internal/version"
)

const usage = `rel-agent runs on a production host: it keeps a stream to any server of the
Rel cluster, installs the releases the cluster wants on this host, and
reports every step back.

Usage:
  rel-agent --servers ADDR[,ADDR...] --join-token-file FILE --ca-pin sha256:HEX [--node-id ID] [--labels K=V[,K=V...]] [flags]
  rel-agent --servers ADDR[,ADDR...] --ca-file CA --cert-file CERT --key-file KEY [flags]
  rel-agent --simulate N --servers ADDR[,ADDR...] --join-token-file FILE --ca-pin sha256:HEX [--node-id PREFIX] [flags]

Every connection is mutual TLS. On its first start the agent enrols: it
makes its key, sends a certificate request with the join token (from
'relctl agent token create', which also prints the CA pin) and checks that
the server answering is signed by the pinned CA (or by --ca-file). Its key
and certificate stay in --data-dir/tls (0600); it renews the certificate at
about two thirds of its lifetime, and enrols again with the token file if it
ever expired. The node id of the stream is the certificate's. Alternatively
give it a certificate made with 'relctl tls cert create --agent'.

Artifacts come from the cluster's own store (over mutual TLS) and from
https:// URLs; http:// and file:// only with --allow-url-schemes, and never
from loopback, link-local or cloud metadata addresses unless
--allow-fetch-from names them. Hooks and services run as --run-as (default:
the agent's own user) or as rel.yaml's user:, which must be one of
--allowed-users.

The agent connects to a random server of --servers and moves to the next one
whenever the stream breaks. Releases are unpacked under --install-root
(<root>/<app>/releases/<version>, <root>/<app>/current); the agent's own
records live in --data-dir. Environments select hosts by --labels.

--simulate N runs N agents with ids <node-id>-0001 ... in this process, all
sharing one connection per server, with an installer that installs nothing:
for load tests of the cluster. Nothing is written to disk.

Every flag can also be set by an environment variable: REL_ and the flag name
in upper case with '-' as '_' (REL_SERVERS, REL_NODE_ID, REL_LABELS, ...).
Flags given on the command line win.

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rel-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	hostname, _ := os.Hostname()
	var (
		servers     = fs.String("servers", "127.0.0.1:7400", "comma-separated gRPC addresses of the cluster's servers")
		nodeID      = fs.String("node-id", hostname, "this host's id in the cluster, stable across restarts (the id prefix with --simulate)")
		labels      = fs.String("labels", "", "comma-separated KEY=VALUE labels that environments select hosts by")
		dataDir     = fs.String("data-dir", "/var/lib/rel-agent", "directory for the agent's records and downloads")
		installRoot = fs.String("install-root", "/opt/rel", "directory releases are installed under")
		keep        = fs.Int("keep", install.DefaultKeep, "releases kept on disk per app, the current one included, so a rollback is a symlink switch")
		maxArtifact = fs.Int64("max-artifact-bytes", install.DefaultMaxArtifactBytes, "largest artifact downloaded, in bytes")
		maxExtract  = fs.Int64("max-extract-bytes", install.DefaultMaxExtractBytes, "largest total size an artifact may extract to, in bytes")
		logLevel    = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat   = fs.String("log-format", "text", "text or json")
		simulate    = fs.Int("simulate", 0, "run N simulated agents with an installer that installs nothing, instead of one real agent")
		simConnect  = fs.Int("simulate-connecting", agent.DefaultSimConnecting, "with --simulate: simulated agents dialling at once, from the dial to the server's welcome, so that thousands reconnecting together do not spend their connect timeout queueing for this process's CPU (-1: no bound)")
		caFile      = fs.String("ca-file", "", "the cluster's CA bundle (PEM); trusted instead of checking --ca-pin")
		caPin       = fs.String("ca-pin", "", "sha256:HEX pin of the cluster CA's public key, checked on the first contact (printed by 'relctl agent token create')")
		joinToken   = fs.String("join-token-file", "", "file holding a join token (relctl agent token create): enrol with it when the agent has no valid certificate")
		certFile    = fs.String("cert-file", "", "a certificate made for this agent with 'relctl tls cert create --agent' (with --key-file and --ca-file): no enrolment")
		keyFile     = fs.String("key-file", "", "the key of --cert-file (mode 0600)")
		schemes     = fs.String("allow-url-schemes", "https", "URL schemes the agent fetches artifacts from outside the cluster: https, http, file (comma-separated)")
		fetchFrom   = fs.String("allow-fetch-from", "", "CIDRs of loopback, link-local or metadata addresses the agent may fetch artifacts from anyway (e.g. 127.0.0.0/8)")
		runAs       = fs.String("run-as", "", "user hooks and services run as (default: the agent's own user; another user needs root)")
		allowUsers  = fs.String("allowed-users", "", "users a release's rel.yaml may name in user: (comma-separated)")
		stopOnExit  = fs.Bool("stop-services-on-exit", false, "stop the services when the agent stops on a signal (SIGTERM, then SIGKILL after their stop_timeout); by default they keep running and a restarted agent adopts them")
		showVersion = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rel-agent: unexpected argument %q (see rel-agent --help)\n", fs.Arg(0))
		return 2
	}
	if err := applyEnv(fs); err != nil {
		fmt.Fprintf(stderr, "rel-agent: %v\n", err)
		return 2
	}
	if *showVersion {
		fmt.Fprintf(stdout, "rel-agent %s\n", version.Version)
		return 0
	}

	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "rel-agent: "+format+"\n", a...)
		return 2
	}
	addrs, err := parseServers(*servers)
	if err != nil {
		return fail("--servers: %v", err)
	}
	id := strings.TrimSpace(*nodeID)
	if id == "" {
		return fail("--node-id is empty: give this host's id (the hostname could not be read)")
	}
	if *simulate > 0 {
		// The servers check the ids the agents will use: <id>-0001 ...
		if err := checkNodeID(fmt.Sprintf("%s-%04d", id, *simulate)); err != nil {
			return fail("--node-id %q with --simulate %d: %v", id, *simulate, err)
		}
	} else if err := checkNodeID(id); err != nil {
		return fail("--node-id %q: %v", id, err)
	}
	lbls, err := parseLabels(*labels)
	if err != nil {
		return fail("--labels: %v", err)
	}
	allowedSchemes := splitList(*schemes)
	for _, sc := range allowedSchemes {
		if sc != "https" && sc != "http" && sc != "file" {
			return fail("--allow-url-schemes: %q: use https, http or file", sc)
		}
	}
	var prefixes []netip.Prefix
	for _, c := range splitList(*fetchFrom) {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fail("--allow-fetch-from: %q is not a CIDR such as 127.0.0.0/8", c)
		}
		prefixes = append(prefixes, p)
	}
	switch {
	case *keep < 1:
		return fail("--keep %d: keep at least 1 release", *keep)
	case *maxArtifact <= 0:
		return fail("--max-artifact-bytes %d: must be positive", *maxArtifact)
	case *maxExtract <= 0:
		return fail("--max-extract-bytes %d: must be positive", *maxExtract)
	case *simulate < 0:
		return fail("--simulate %d: must not be negative", *simulate)
	case *dataDir == "" && *simulate == 0:
		return fail("--data-dir is empty")
	case *installRoot == "" && *simulate == 0:
		return fail("--install-root is empty")
	}
	certCfg := agentcert.Config{
		Servers: addrs, NodeID: id, CAFile: *caFile, Pin: *caPin, JoinTokenFile: *joinToken,
		CertFile: *certFile, KeyFile: *keyFile,
	}
	if *simulate == 0 {
		certCfg.Dir = filepath.Join(*dataDir, "tls")
	}
	if err := certCfg.Check(); err != nil {
		return fail("%v", err)
	}
	if *simulate > 0 && certCfg.CertFile != "" {
		return fail("--simulate needs --join-token-file (a token with --uses N): each simulated agent enrols")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fail("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	var handler slog.Handler
	switch *logFormat {
	case "text":
		handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	case "json":
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	default:
		return fail("--log-format %q: use text or json", *logFormat)
	}
	logger := slog.New(handler)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Stop on the first signal even while enrolling; a second one exits at
	// once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	firstSig := make(chan os.Signal, 1)
	go func() {
		select {
		case sig := <-sigs:
			firstSig <- sig
			cancel()
		case <-ctx.Done():
		}
	}()
	done := make(chan error, 1)
	var closeInstaller func() error

	if *simulate > 0 {
		token := ""
		if certCfg.JoinTokenFile != "" {
			b, err := os.ReadFile(certCfg.JoinTokenFile)
			if err != nil {
				return fail("--join-token-file: %v", err)
			}
			token = strings.TrimSpace(string(b))
		}
		logger.Info("rel-agent simulating agents", "version", version.Version, "count", *simulate, "servers", addrs)
		go func() {
			done <- agent.Simulate(ctx, agent.SimConfig{
				Servers: addrs, Count: *simulate, IDPrefix: id, Labels: lbls, Connecting: *simConnect,
				Logger: logger, ReportEvery: 10 * time.Second,
				Certs: func(ctx context.Context, nodeID string) (transport.Security, error) {
					cc := certCfg
					cc.NodeID, cc.JoinToken, cc.JoinTokenFile = nodeID, token, ""
					cc.Logger = slog.New(slog.DiscardHandler)
					c, err := agentcert.Load(ctx, cc)
					if err != nil {
						return transport.Security{}, err
					}
					return c.Security(), nil
				},
			})
		}()
	} else {
		certCfg.Logger = logger.With("component", "certificate")
		certs, err := agentcert.Load(ctx, certCfg)
		if err != nil {
			if ctx.Err() != nil {
				return 1
			}
			fmt.Fprintf(stderr, "rel-agent: certificate: %v\n", err)
			return 1
		}
		sec := certs.Security()
		host, err := install.New(install.Config{
			Root:             *installRoot,
			DataDir:          *dataDir,
			NodeID:           id,
			Keep:             *keep,
			MaxArtifactBytes: *maxArtifact,
			MaxExtractBytes:  *maxExtract,
			Logger:           logger.With("component", "install"),
			StoreClient:      &http.Client{Transport: sec.HTTPTransport()},
			AllowedSchemes:   allowedSchemes,
			AllowFetchFrom:   prefixes,
			RunAs:            *runAs,
			AllowedUsers:     splitList(*allowUsers),
		})
		if err != nil {
			fmt.Fprintf(stderr, "rel-agent: %v\n", err)
			return 1
		}
		closeInstaller = host.Close
		if *stopOnExit {
			closeInstaller = func() error {
				sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				err := host.StopServices(sctx)
				return errors.Join(err, host.Close())
			}
		}
		a, err := agent.New(agent.Config{
			Servers:   addrs,
			NodeID:    id,
			Labels:    lbls,
			DataDir:   *dataDir,
			Installer: host,
			Logger:    logger,
			DiskPath:  *installRoot,
			Security:  sec,
		})
		if err != nil {
			host.Close()
			fmt.Fprintf(stderr, "rel-agent: %v\n", err)
			return 1
		}
		// A renewed certificate is presented on new connections only.
		certs.OnRenew(a.Reconnect)
		go certs.Run(ctx)
		leaf := certs.Current().Leaf
		logger.Info("rel-agent starting", "version", version.Version, "node_id", id, "servers", addrs, "labels", lbls,
			"certificate_expires", leaf.NotAfter.UTC().Format(time.RFC3339))
		go func() { done <- a.Run(ctx) }()
	}

	select {
	case sig := <-firstSig:
		logger.Info("signal received: stopping (send it again to stop at once)", "signal", sig.String())
	case err := <-done:
		// Run only returns early on a startup error.
		if err != nil {
			logger.Error("agent stopped", "err", err)
		}
		if closeInstaller != nil {
			closeInstaller()
		}
		return 1
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			logger.Error("agent", "err", err)
		}
	case <-sigs:
		logger.Warn("second signal: exiting without a clean shutdown")
		return 1
	case <-time.After(30 * time.Second):
		logger.Error("agent did not stop in 30s; exiting")
		return 1
	}
	if closeInstaller != nil {
		if err := closeInstaller(); err != nil {
			logger.Error("closing the installer", "err", err)
			return 1
		}
	}
	logger.Info("stopped")
	return 0
}

// nodeIDRE is what the servers accept as an agent id.
var nodeIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// maxNodeIDLen is the servers' limit on agent ids.
const maxNodeIDLen = 63

func checkNodeID(id string) error {
	switch {
	case len(id) > maxNodeIDLen:
		return fmt.Errorf("%d characters long: the limit is %d", len(id), maxNodeIDLen)
	case !nodeIDRE.MatchString(id):
		return errors.New("use letters, digits and . _ -, starting with a letter or digit")
	}
	return nil
}

// parseServers splits a comma list of host:port addresses.
func parseServers(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("%q: want HOST:PORT", a)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || host == "" {
			return nil, fmt.Errorf("%q: want HOST:PORT with a port 1-65535", a)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errors.New("no server addresses: give HOST:PORT[,HOST:PORT...]")
	}
	return out, nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// parseLabels parses KEY=VALUE[,KEY=VALUE...] and checks it with
// validate.Labels.
func parseLabels(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want KEY=VALUE", kv)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("label %q given twice", k)
		}
		m[k] = v
	}
	if err := validate.Labels("label", m, false); err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), validate.ErrInvalid.Error()+": "))
	}
	return m, nil
}

// applyEnv sets every flag not given on the command line from its REL_*
// environment variable.
func applyEnv(fs *flag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || isSet(fs, f.Name) {
			return
		}
		key := "REL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %v", key, v, e)
			}
		}
	})
	return err
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
