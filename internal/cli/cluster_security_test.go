package cli

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/testcluster"
)

// TestSecurityAgainstCluster drives the security commands against a real
// in-process cluster with TLS and ACLs on: bootstrap, role tokens and their
// revocation, join tokens, agent revocation, client certificates, and the
// refusals relctl must put in one clear line.
func TestSecurityAgainstCluster(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	addr := c.Nodes[0].GRPCAddr()
	dir := t.TempDir()
	env := func(kv ...string) map[string]string {
		e := map[string]string{envAddr: addr, envCAFile: c.PKI.CAFile}
		for i := 0; i < len(kv); i += 2 {
			e[kv[i]] = kv[i+1]
		}
		return e
	}
	// expect runs relctl and checks its exit code, and that a failure is
	// one line containing want.
	expect := func(t *testing.T, e map[string]string, code int, want string, args ...string) result {
		t.Helper()
		res := runCLI(t, e, "", args...)
		if res.code != code {
			t.Fatalf("relctl %s: exit %d, want %d (stdout %q, stderr %q)", strings.Join(args, " "), res.code, code, res.stdout, res.stderr)
		}
		if code != exitOK {
			checkOneErrorLine(t, res)
		}
		if out := res.stdout + res.stderr; !strings.Contains(out, want) {
			t.Fatalf("relctl %s: output lacks %q:\n%s", strings.Join(args, " "), want, out)
		}
		return res
	}
	pin := pki.Pin(c.PKI.CA.Cert)

	// Without credentials: who am I works, everything else is refused
	// with the server's advice.
	expect(t, env(), exitOK, "You are:     anonymous", "acl", "whoami")
	res := expect(t, env(), exitRefused, "", "app", "list")
	if want := "relctl: ListApps needs credentials: give relctl a token (--token-file or REL_TOKEN) or a client certificate (--cert-file, --key-file) (Unauthenticated)\n"; res.stderr != want {
		t.Errorf("stderr = %q, want %q", res.stderr, want)
	}

	// Bootstrap once, the secret into a file.
	mgmt := filepath.Join(dir, "mgmt.token")
	res = expect(t, env(), exitOK, "Secret:  written to "+mgmt+" (mode 0600)", "acl", "bootstrap", "--out", mgmt)
	checkMode(t, mgmt, 0o600)
	secret := mustRead(t, mgmt)
	if !strings.HasPrefix(secret, auth.TokenPrefix) || strings.Contains(res.stdout, secret) {
		t.Errorf("token file holds %q; stdout:\n%s", secret, res.stdout)
	}
	expect(t, env(), exitRefused, "ACLs are already bootstrapped", "acl", "bootstrap")
	admin := env(envTokenFile, mgmt)
	res = expect(t, admin, exitOK, "", "-o", "json", "acl", "whoami")
	var me whoAmIJSON
	if err := json.Unmarshal([]byte(res.stdout), &me); err != nil {
		t.Fatal(err)
	}
	if me.Kind != "token" || me.Name != "management" || len(me.Grants) != 1 || me.Grants[0].Role != "admin" || me.ServerID != "s1" {
		t.Errorf("whoami as the management token: %+v", me)
	}

	// A viewer token reads but does not write; revoked, it is refused.
	res = expect(t, admin, exitOK, "", "-o", "json", "acl", "token", "create", "--name", "dashboards", "--role", "viewer")
	var viewerTok aclTokenSecretJSON
	if err := json.Unmarshal([]byte(res.stdout), &viewerTok); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(viewerTok.Secret, auth.TokenPrefix) || viewerTok.Token.Name != "dashboards" || strings.Join(viewerTok.Token.Roles, ",") != "viewer" {
		t.Errorf("token create answered %+v", viewerTok)
	}
	viewer := env(envToken, viewerTok.Secret)
	expect(t, admin, exitOK, "created app web", "app", "create", "web")
	expect(t, viewer, exitOK, "web", "app", "list")
	res = expect(t, viewer, exitRefused, "(PermissionDenied)", "app", "create", "api")
	if !strings.Contains(res.stderr, "may not CreateApp") {
		t.Errorf("stderr = %q, want the server's reason", res.stderr)
	}
	res = expect(t, admin, exitOK, viewerTok.Token.AccessorID, "acl", "token", "list")
	if !strings.Contains(res.stdout, "dashboards") || !strings.Contains(res.stdout, "management") {
		t.Errorf("token list:\n%s", res.stdout)
	}
	expect(t, admin, exitOK, "revoked token "+viewerTok.Token.AccessorID, "acl", "token", "revoke", viewerTok.Token.AccessorID)
	expect(t, viewer, exitRefused, "token not known to this cluster", "app", "list")
	expect(t, viewer, exitRefused, "(Unauthenticated)", "app", "list")

	// Join tokens: the secret, the cluster's pin and the agent's command.
	joinFile := filepath.Join(dir, "join.token")
	res = expect(t, admin, exitOK, "CA pin:      "+pin+"\n", "agent", "token", "create", "--uses", "2", "--labels", "env=prod",
		"--description", "prod hosts", "--out", joinFile)
	wantCmd := "rel-agent --servers " + addr + " --join-token-file " + joinFile + " --ca-pin " + pin + " --node-id <node-id> --labels env=prod"
	if !strings.Contains(res.stdout, wantCmd) {
		t.Errorf("stdout lacks %q:\n%s", wantCmd, res.stdout)
	}
	checkMode(t, joinFile, 0o600)
	if s := mustRead(t, joinFile); !strings.HasPrefix(s, auth.JoinPrefix) || strings.Contains(res.stdout, s) {
		t.Errorf("join token file holds %q; stdout:\n%s", s, res.stdout)
	}
	res = expect(t, admin, exitOK, "", "-o", "json", "agent", "token", "create")
	var join joinTokenSecretJSON
	if err := json.Unmarshal([]byte(res.stdout), &join); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(join.Secret, auth.JoinPrefix) || len(join.CAPins) != 1 || join.CAPins[0] != pin || join.Token.Uses != 1 || join.Token.ExpiresAt == "" {
		t.Errorf("agent token create answered %+v", join)
	}
	expect(t, admin, exitOK, "", "agent", "token", "create") // the secret is printed
	// Bound to node ids: one use each unless --uses says otherwise.
	res = expect(t, admin, exitOK, "web-7, web-8 (no other node may enrol with it)", "agent", "token", "create", "--node-id", "web-7", "--node-id", "web-8")
	if !regexp.MustCompile(`Uses: +2\n`).MatchString(res.stdout) {
		t.Errorf("a token bound to two nodes:\n%s", res.stdout)
	}
	expect(t, admin, exitUsage, "--node-id", "agent", "token", "create", "--node-id", "bad id")
	expect(t, admin, exitOK, "--node-id web-9", "agent", "token", "create", "--node-id", "web-9")
	res = expect(t, admin, exitOK, join.Token.AccessorID, "agent", "token", "list")
	if !strings.Contains(res.stdout, "prod hosts") || !strings.Contains(res.stdout, "2/2") {
		t.Errorf("agent token list:\n%s", res.stdout)
	}
	expect(t, admin, exitOK, "revoked join token "+join.Token.AccessorID, "agent", "token", "revoke", join.Token.AccessorID)
	expect(t, env(), exitRefused, "(Unauthenticated)", "agent", "token", "list")

	// Revoking an agent.
	res = expect(t, admin, exitOK, "", "-o", "json", "agent", "revoke", "web-1", "--reason", "disk stolen")
	var rev agentRevocationJSON
	if err := json.Unmarshal([]byte(res.stdout), &rev); err != nil {
		t.Fatal(err)
	}
	if rev.AgentID != "web-1" || rev.Reason != "disk stolen" || rev.RevokedAt == "" || !strings.Contains(rev.RevokedBy, "management") {
		t.Errorf("agent revoke answered %+v", rev)
	}

	// A person's client certificate: its role decides.
	cert, key := c.PKI.Files(t, pki.Leaf{Identity: testcluster.ClientID("alice", auth.Deployer)})
	alice := env(envCertFile, cert, envKeyFile, key)
	expect(t, alice, exitOK, "You are:     client alice", "acl", "whoami")
	expect(t, alice, exitOK, "web", "app", "list")
	expect(t, alice, exitRefused, "(PermissionDenied)", "app", "create", "api")

	// A client certificate of another CA: refused before dialling when
	// --ca-file does not hold its CA, in the handshake when it does but
	// the cluster does not trust it.
	other := testcluster.NewPKI(t, testcluster.ClusterName)
	ocert, okey := other.Files(t, pki.Leaf{Identity: testcluster.AdminID()})
	expect(t, env(envCertFile, ocert, envKeyFile, okey), exitUsage, "is not signed by the CA in REL_CA_FILE", "app", "list")
	bundle := writeTestFile(t, filepath.Join(dir, "bundle.pem"), mustRead(t, c.PKI.CAFile)+mustRead(t, other.CAFile), 0o644)
	expect(t, env(envCAFile, bundle, envCertFile, ocert, envKeyFile, okey), exitUnavailable,
		"refused the client certificate in REL_CERT_FILE ("+ocert+") (tls: unknown certificate authority)", "app", "list")

	// The cluster's servers checked against another CA.
	expect(t, env(envCAFile, other.CAFile, envTokenFile, mgmt), exitUnavailable,
		"relctl: the server at "+addr+" presented a certificate not signed by the CA in REL_CA_FILE ("+other.CAFile+"): check REL_CA_FILE and --addr (Unavailable)",
		"app", "list")
}
