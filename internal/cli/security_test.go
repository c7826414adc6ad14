package cli

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// clientLeaf is a person's certificate of the test cluster.
func clientLeaf(name, role string) pki.Leaf {
	return pki.Leaf{Identity: pki.Identity{Kind: pki.KindClient, ID: name, Role: role}}
}

// newCA makes a CA for cluster, failing the test on error.
func newCA(t *testing.T, cluster string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(cluster, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func writeTestFile(t *testing.T, path, data string, perm os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return path
}

// TestSecurityUsageErrors checks the global TLS and token settings and the
// local checks of the new commands: each bad setting exits 2 with one line
// naming what to fix, before any server is dialled (REL_ADDR points
// nowhere: an attempt would exit 3).
func TestSecurityUsageErrors(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	aliceCert, aliceKey := issueFiles(t, testCA.ca, clientLeaf("alice", "deployer"), dir)
	_, bobKey := issueFiles(t, testCA.ca, clientLeaf("bob", "viewer"), dir)
	readableKey := writeTestFile(t, filepath.Join(dir, "readable-key.pem"), mustRead(t, aliceKey), 0o644)
	otherDir := t.TempDir()
	otherCert, otherKey := issueFiles(t, newCA(t, "test"), clientLeaf("mallory", "admin"), otherDir)
	expiredCert, expiredKey := issueFiles(t, testCA.ca, pki.Leaf{Identity: pki.Identity{Kind: pki.KindClient, ID: "old", Role: "viewer"},
		NotBefore: now.Add(-48 * time.Hour), Validity: 24 * time.Hour}, dir)
	futureCert, futureKey := issueFiles(t, testCA.ca, pki.Leaf{Identity: pki.Identity{Kind: pki.KindClient, ID: "future", Role: "viewer"},
		NotBefore: now.Add(24 * time.Hour), Validity: 24 * time.Hour}, dir)
	serverCert, serverKey := issueFiles(t, testCA.ca, pki.Leaf{Identity: pki.Identity{Kind: pki.KindServer, ID: "s9"}}, dir)
	emptyToken := writeTestFile(t, filepath.Join(dir, "empty.token"), "\n", 0o600)
	joinToken := writeTestFile(t, filepath.Join(dir, "join.token"), "relj_abc\n", 0o600)
	existing := writeTestFile(t, filepath.Join(dir, "exists.token"), "x", 0o600)

	base := map[string]string{envAddr: closedAddr(t)}
	with := func(kv ...string) map[string]string {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string // the whole stderr line, or its start if it ends in "..."
	}{
		{name: "no CA", env: with(envCAFile, ""), args: []string{"app", "list"},
			want: "relctl: no CA certificate to check the servers with: give --ca-file or set REL_CA_FILE (rel-server --dev prints the export line) (see relctl app list --help)"},
		{name: "no CA for acl bootstrap", env: with(envCAFile, ""), args: []string{"acl", "bootstrap"},
			want: "relctl: no CA certificate to check the servers with: give --ca-file or set REL_CA_FILE (rel-server --dev prints the export line) (see relctl acl bootstrap --help)"},
		{name: "CA file missing", args: []string{"--ca-file", "/nonexistent/ca.pem", "app", "list"},
			want: "relctl: --ca-file: read certificate: open /nonexistent/ca.pem: no such file or directory (see relctl app list --help)"},
		{name: "CA file is a leaf", args: []string{"--ca-file", aliceCert, "app", "list"},
			want: `relctl: --ca-file (` + aliceCert + `): "client alice" is not a CA certificate: give the cluster's CA bundle (ca.pem), not a server or client certificate (see relctl app list --help)`},
		{name: "cert without key", args: []string{"--cert-file", aliceCert, "app", "list"},
			want: "relctl: a client certificate needs both a certificate and its key: --cert-file (" + aliceCert + ") is given but not --key-file/REL_KEY_FILE; give both or neither (see relctl app list --help)"},
		{name: "key without cert from env", env: with(envKeyFile, aliceKey), args: []string{"app", "list"},
			want: "relctl: a client certificate needs both a certificate and its key: REL_KEY_FILE (" + aliceKey + ") is given but not --cert-file/REL_CERT_FILE; give both or neither (see relctl app list --help)"},
		{name: "world-readable key", args: []string{"--cert-file", aliceCert, "--key-file", readableKey, "app", "list"},
			want: "relctl: --key-file: key file is readable by group or others: " + readableKey + " has mode 0644: run 'chmod 600 " + readableKey + "' (see relctl app list --help)"},
		{name: "key of another certificate", args: []string{"--cert-file", aliceCert, "--key-file", bobKey, "app", "list"},
			want: "relctl: --cert-file (" + aliceCert + ") and --key-file (" + bobKey + ") do not belong together: the key is not the certificate's (see relctl app list --help)"},
		{name: "client certificate of another CA", env: with(envCertFile, otherCert, envKeyFile, otherKey), args: []string{"app", "list"},
			want: "relctl: REL_CERT_FILE (" + otherCert + ") is not signed by the CA in REL_CA_FILE (" + testCA.caFile + "): the servers will refuse it; make a new one with 'relctl tls cert create --client mallory --role admin' with this cluster's CA key (see relctl app list --help)"},
		{name: "expired certificate", args: []string{"--cert-file", expiredCert, "--key-file", expiredKey, "app", "list"},
			want: "relctl: --cert-file (" + expiredCert + "): the certificate of old expired at ..."},
		{name: "certificate not yet valid", args: []string{"--cert-file", futureCert, "--key-file", futureKey, "app", "list"},
			want: "relctl: --cert-file (" + futureCert + "): the certificate of future is not valid until ..."},
		{name: "server certificate as client", args: []string{"--cert-file", serverCert, "--key-file", serverKey, "app", "list"},
			want: "relctl: --cert-file (" + serverCert + ") is the certificate of server s9: relctl presents a person's client certificate (relctl tls cert create --client NAME --role ROLE) (see relctl app list --help)"},
		{name: "token file missing", args: []string{"--token-file", "/nonexistent/token", "app", "list"},
			want: "relctl: --token-file: open /nonexistent/token: no such file or directory (see relctl app list --help)"},
		{name: "empty token file", env: with(envTokenFile, emptyToken), args: []string{"app", "list"},
			want: "relctl: REL_TOKEN_FILE (" + emptyToken + ") is empty: it should hold the secret 'relctl acl bootstrap' or 'relctl acl token create' printed (see relctl app list --help)"},
		{name: "join token as operator token", args: []string{"--token-file", joinToken, "app", "list"},
			want: "relctl: --token-file (" + joinToken + ") holds a join token (relj_...), which only enrols agents: give an operator token (relt_...) (see relctl app list --help)"},
		{name: "token with spaces", env: with(envToken, "relt_a relt_b"), args: []string{"app", "list"},
			want: "relctl: REL_TOKEN does not hold one token: it has spaces, several lines or non-ASCII characters (see relctl app list --help)"},

		{name: "invalid role", args: []string{"tls", "cert", "create", "--client", "alice", "--role", "root"},
			want: `relctl: --role: role "root": want one of viewer, release-creator, deployer, approver, operator, admin (see relctl tls cert create --help)`},
		{name: "two kinds", args: []string{"tls", "cert", "create", "--server", "--client", "alice", "--node-id", "s1"},
			want: "relctl: give exactly one of --server, --client NAME or --agent (got --server and --client) (see relctl tls cert create --help)"},
		{name: "no kind", args: []string{"tls", "cert", "create", "--node-id", "s1"},
			want: "relctl: give exactly one of --server, --client NAME or --agent (got none) (see relctl tls cert create --help)"},
		{name: "server without node id", args: []string{"tls", "cert", "create", "--server"},
			want: "relctl: --server needs --node-id ID: the server's --node-id (see relctl tls cert create --help)"},
		{name: "client without role", args: []string{"tls", "cert", "create", "--client", "alice"},
			want: "relctl: --client needs --role ROLE (viewer, release-creator, deployer, approver, operator, admin) (see relctl tls cert create --help)"},
		{name: "dns on a client", args: []string{"tls", "cert", "create", "--client", "alice", "--role", "viewer", "--dns", "a.example.com"},
			want: "relctl: --dns is for --server certificates, not --client (see relctl tls cert create --help)"},
		{name: "bad ip", args: []string{"tls", "cert", "create", "--server", "--node-id", "s1", "--ip", "10.0.0"},
			want: `relctl: --ip "10.0.0" is not an IP address (see relctl tls cert create --help)`},
		{name: "bad node id", args: []string{"tls", "cert", "create", "--agent", "--node-id", "-x"},
			want: `relctl: id "-x": use 1-63 letters, digits and . _ -, starting with a letter or digit (see relctl tls cert create --help)`},
		{name: "zero days", args: []string{"tls", "cert", "create", "--server", "--node-id", "s1", "--days", "0"},
			want: "relctl: --days 0: want 1 to 36500 (see relctl tls cert create --help)"},
		{name: "long-lived agent", args: []string{"tls", "cert", "create", "--agent", "--node-id", "web-1", "--days", "91"},
			want: "relctl: --days 91: an agent certificate lives at most 90 days; agents that can reach the servers renew theirs (see relctl tls cert create --help)"},
		{name: "CA missing for cert create", args: []string{"tls", "cert", "create", "--server", "--node-id", "s1", "--ca-file", filepath.Join(dir, "none.pem")},
			want: "relctl: the CA (--ca-file (" + filepath.Join(dir, "none.pem") + "), key --ca-key-file (" + filepath.Join(dir, "ca-key.pem") + ")): read certificate: open ..."},
		{name: "bad cluster name", args: []string{"tls", "ca", "create", "--cluster", "Prod_1", "--dir", dir},
			want: `relctl: --cluster: cluster name "Prod_1": use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit (see relctl tls ca create --help)`},

		{name: "token role invalid", args: []string{"acl", "token", "create", "--name", "ci", "--role", "god"},
			want: `relctl: --role: role "god": want one of viewer, release-creator, deployer, approver, operator, admin (see relctl acl token create --help)`},
		{name: "token role required", args: []string{"acl", "token", "create", "--name", "ci"},
			want: `relctl: required flag(s) "role" not set (see relctl acl token create --help)`},
		{name: "token app glob invalid", args: []string{"acl", "token", "create", "--name", "ci", "--role", "viewer", "--app", "web["},
			want: `relctl: --app glob "web[": syntax error in pattern (see relctl acl token create --help)`},
		{name: "token out exists", args: []string{"acl", "token", "create", "--name", "ci", "--role", "viewer", "--out", existing},
			want: "relctl: --out " + existing + " already exists: relctl never overwrites a file; move it away or choose another --out (see relctl acl token create --help)"},
		{name: "bootstrap out dir missing", args: []string{"acl", "bootstrap", "--out", "/nonexistent/dir/token"},
			want: "relctl: --out /nonexistent/dir/token: directory /nonexistent/dir: no such file or directory (see relctl acl bootstrap --help)"},
		{name: "join token uses zero", args: []string{"agent", "token", "create", "--uses", "0"},
			want: "relctl: invalid --uses 0: want at least 1 (see relctl agent token create --help)"},
		{name: "join token labels", args: []string{"agent", "token", "create", "--labels", "env"},
			want: `relctl: --labels "env": missing "=" (want KEY=VALUE) (see relctl agent token create --help)`},
		{name: "agent revoke without id", args: []string{"agent", "revoke"},
			want: "relctl: relctl agent revoke takes 1 argument (ID), got 0 arguments (see relctl agent revoke --help)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := base
			if tt.env != nil {
				env = tt.env
			}
			res := runCLI(t, env, "", tt.args...)
			if res.code != exitUsage {
				t.Errorf("exit code = %d, want %d", res.code, exitUsage)
			}
			checkOneErrorLine(t, res)
			got := strings.TrimSuffix(res.stderr, "\n")
			if prefix, ok := strings.CutSuffix(tt.want, "..."); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("stderr:\n got %s\nwant %s", got, tt.want)
				}
			} else if got != tt.want {
				t.Errorf("stderr:\n got %s\nwant %s", got, tt.want)
			}
			if res.stdout != "" {
				t.Errorf("stdout = %q, want nothing", res.stdout)
			}
		})
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// echoACL is an ACLService whose WhoAmI says what reached the server: the
// authorization metadata (as the principal's name) and the client
// certificate (as its id).
type echoACL struct {
	relv1.UnimplementedACLServiceServer
}

func (echoACL) WhoAmI(ctx context.Context, _ *relv1.WhoAmIRequest) (*relv1.WhoAmIResponse, error) {
	p := &relv1.Principal{Kind: "anonymous"}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) > 0 {
		p.Kind, p.Name = "token", strings.Join(v, "|")
	}
	if pr, ok := peer.FromContext(ctx); ok {
		if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
			if id, _, ok, err := transport.PeerIdentity(&info.State); ok && err == nil {
				p.Id, p.Cluster = id.ID, id.Cluster
			}
		}
	}
	return &relv1.WhoAmIResponse{Principal: p, ServerId: "fake-1"}, nil
}

func (echoACL) ListTokens(context.Context, *relv1.ListACLTokensRequest) (*relv1.ListACLTokensResponse, error) {
	return &relv1.ListACLTokensResponse{Tokens: []*relv1.ACLToken{{AccessorId: "4f1c2a9be07d3e61", Name: "ci"}}}, nil
}

func (echoACL) ListJoinTokens(context.Context, *relv1.ListJoinTokensRequest) (*relv1.ListJoinTokensResponse, error) {
	return &relv1.ListJoinTokensResponse{Tokens: []*relv1.JoinToken{{AccessorId: "9a3f0c1d2b4e5f60"}}}, nil
}

// TestAccessorCompletion checks that token accessors complete from the
// server.
func TestAccessorCompletion(t *testing.T) {
	addr := serveWith(t, func(s *grpc.Server) { relv1.RegisterACLServiceServer(s, echoACL{}) })
	for args, want := range map[string]string{
		"acl token revoke 4f":   "4f1c2a9be07d3e61\n",
		"acl token revoke x":    "",
		"agent token revoke ":   "9a3f0c1d2b4e5f60\n",
		"agent token revoke 9a": "9a3f0c1d2b4e5f60\n",
	} {
		argv := append([]string{"__complete"}, strings.Split(args, " ")...)
		res := runCLI(t, map[string]string{envAddr: addr}, "", argv...)
		if got, _, _ := strings.Cut(res.stdout, ":"); res.code != exitOK || got != want {
			t.Errorf("%s: exit %d, suggestions %q, want %q", args, res.code, got, want)
		}
	}
	// Without a CA there is nothing to ask: no suggestions, no error.
	res := runCLI(t, map[string]string{envAddr: addr, envCAFile: ""}, "", "__complete", "acl", "token", "revoke", "")
	if got, _, _ := strings.Cut(res.stdout, ":"); res.code != exitOK || got != "" {
		t.Errorf("without a CA: exit %d, stdout %q", res.code, res.stdout)
	}
}

// TestSecuritySettings checks what reaches the server for each way of
// giving credentials, and their precedence: flag over environment, token
// file over REL_TOKEN.
func TestSecuritySettings(t *testing.T) {
	addr := serveWith(t, func(s *grpc.Server) { relv1.RegisterACLServiceServer(s, echoACL{}) })
	dir := t.TempDir()
	aliceCert, aliceKey := issueFiles(t, testCA.ca, clientLeaf("alice", "deployer"), dir)
	bobCert, bobKey := issueFiles(t, testCA.ca, clientLeaf("bob", "viewer"), dir)
	tokenFile := writeTestFile(t, filepath.Join(dir, "token"), "  relt_fromfile\n\n", 0o600)
	otherToken := writeTestFile(t, filepath.Join(dir, "other-token"), "relt_other", 0o600)

	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantAuth string // the authorization metadata the server saw
		wantCert string // the client certificate's name
	}{
		{name: "nothing"},
		{name: "REL_TOKEN", env: map[string]string{envToken: "relt_fromenv"}, wantAuth: "Bearer relt_fromenv"},
		{name: "token file trimmed", args: []string{"--token-file", tokenFile}, wantAuth: "Bearer relt_fromfile"},
		{name: "token file wins over REL_TOKEN", env: map[string]string{envToken: "relt_fromenv"},
			args: []string{"--token-file", tokenFile}, wantAuth: "Bearer relt_fromfile"},
		{name: "REL_TOKEN_FILE wins over REL_TOKEN", env: map[string]string{envToken: "relt_fromenv", envTokenFile: tokenFile},
			wantAuth: "Bearer relt_fromfile"},
		{name: "token file flag wins over REL_TOKEN_FILE", env: map[string]string{envTokenFile: otherToken},
			args: []string{"--token-file", tokenFile}, wantAuth: "Bearer relt_fromfile"},
		{name: "certificate from env", env: map[string]string{envCertFile: aliceCert, envKeyFile: aliceKey}, wantCert: "alice"},
		{name: "certificate flags win over env", env: map[string]string{envCertFile: aliceCert, envKeyFile: aliceKey},
			args: []string{"--cert-file", bobCert, "--key-file", bobKey}, wantCert: "bob"},
		{name: "certificate and token", env: map[string]string{envToken: "relt_fromenv"},
			args: []string{"--cert-file", aliceCert, "--key-file", aliceKey}, wantAuth: "Bearer relt_fromenv", wantCert: "alice"},
		{name: "CA flag wins over env", env: map[string]string{envCAFile: "/nonexistent/ca.pem"},
			args: []string{"--ca-file", testCA.caFile}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{envAddr: addr}
			for k, v := range tt.env {
				env[k] = v
			}
			res := runCLI(t, env, "", append(tt.args, "-o", "json", "acl", "whoami")...)
			if res.code != exitOK {
				t.Fatalf("exit code = %d, stderr %q", res.code, res.stderr)
			}
			var got whoAmIJSON
			if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
				t.Fatalf("%v:\n%s", err, res.stdout)
			}
			if got.Name != tt.wantAuth || got.ID != tt.wantCert {
				t.Errorf("server saw authorization %q and certificate %q, want %q and %q", got.Name, got.ID, tt.wantAuth, tt.wantCert)
			}
		})
	}
}

// TestTLSHandshakeFailures checks that a failed handshake is one line that
// says what to check, exits 3, and that relctl moves on to the next
// address after one (no request was sent).
func TestTLSHandshakeFailures(t *testing.T) {
	register := func(s *grpc.Server) { relv1.RegisterControlServiceServer(s, &fakeControl{name: "good"}) }
	good := serveWith(t, register)
	otherCA := newCA(t, "test")
	otherSec, err := serverSecurity(otherCA, "impostor")
	if err != nil {
		t.Fatal(err)
	}
	impostor := serveWithOptions(t, otherSec.GRPCServerOptions(), register)
	prodSec, err := serverSecurity(newCA(t, "prod"), "p1")
	if err != nil {
		t.Fatal(err)
	}
	prod := serveWithOptions(t, prodSec.GRPCServerOptions(), register)
	plain := serveWithOptions(t, nil, register)
	closed := closedAddr(t)

	// A CA bundle holding the test CA and another CA of the same cluster:
	// relctl accepts a client certificate of the other CA, the server
	// (which trusts only the test CA) refuses it in the handshake.
	dir := t.TempDir()
	bundle := writeTestFile(t, filepath.Join(dir, "bundle.pem"), string(testCA.ca.CertPEM())+string(otherCA.CertPEM()), 0o644)
	otherCert, otherKey := issueFiles(t, otherCA, clientLeaf("mallory", "admin"), dir)

	tests := []struct {
		name       string
		env        map[string]string
		addrs      []string
		wantCode   int
		wantStderr string
	}{
		{name: "server of another CA", addrs: []string{impostor}, wantCode: exitUnavailable,
			wantStderr: "relctl: the server at " + impostor + " presented a certificate not signed by the CA in REL_CA_FILE (" + testCA.caFile +
				"): check REL_CA_FILE and --addr (Unavailable)"},
		{name: "server of another cluster", addrs: []string{prod}, wantCode: exitUnavailable,
			wantStderr: "relctl: the server at " + prod + ` is not a server of cluster "test" (its certificate is for server.prod.rel, not server.test.rel): check --addr and REL_CA_FILE (Unavailable)`},
		{name: "plain-text server", addrs: []string{plain}, wantCode: exitUnavailable,
			wantStderr: "relctl: the server at " + plain + " does not speak TLS: is --addr the gRPC port (7400) of a rel-server of this version? (Unavailable)"},
		{name: "client certificate refused by the server", addrs: []string{good}, wantCode: exitUnavailable,
			env: map[string]string{envCAFile: bundle, envCertFile: otherCert, envKeyFile: otherKey},
			wantStderr: "relctl: the server at " + good + " refused the client certificate in REL_CERT_FILE (" + otherCert +
				") (tls: unknown certificate authority): the cluster does not trust its CA, or it was revoked or expired; check it with 'relctl tls cert info " + otherCert + "' (Unavailable)"},
		{name: "impostor then a good server", addrs: []string{impostor, good}, wantCode: exitOK},
		{name: "impostor then a closed port", addrs: []string{impostor, closed}, wantCode: exitUnavailable,
			wantStderr: "relctl: the server at " + impostor + " presented a certificate not signed by the CA in REL_CA_FILE (" + testCA.caFile +
				"): check REL_CA_FILE and --addr (Unavailable)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{envAddr: strings.Join(tt.addrs, ",")}
			for k, v := range tt.env {
				env[k] = v
			}
			res := runCLI(t, env, "", "app", "list")
			if res.code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", res.code, tt.wantCode, res.stderr)
			}
			if tt.wantStderr == "" {
				if !strings.Contains(res.stdout, "served by good") {
					t.Errorf("stdout = %q, want the good server's answer", res.stdout)
				}
				return
			}
			checkOneErrorLine(t, res)
			if got := strings.TrimSuffix(res.stderr, "\n"); got != tt.wantStderr {
				t.Errorf("stderr:\n got %s\nwant %s", got, tt.wantStderr)
			}
		})
	}
}

// TestVersionWithoutCA checks that "version" still reports the client
// without a CA, and says why it did not ask a server.
func TestVersionWithoutCA(t *testing.T) {
	res := runCLI(t, map[string]string{envCAFile: "", envAddr: "127.0.0.1:1"}, "", "version")
	if res.code != exitOK || res.stderr != "" {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	if !strings.Contains(res.stdout, "Server:         not asked: no CA certificate to check the servers with") {
		t.Errorf("stdout = %q", res.stdout)
	}
}

// TestTokenNeedsTLS checks that the token credentials refuse a connection
// without transport security: gRPC must never send a token in the clear.
func TestTokenNeedsTLS(t *testing.T) {
	if !bearerToken("relt_x").RequireTransportSecurity() {
		t.Fatal("bearer token credentials must require transport security")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearerToken("relt_x")))
	if err == nil {
		cc.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "transport level security") {
		t.Errorf("dialling without TLS with a token: err = %v, want a refusal", err)
	}
}
