package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// checkMode fails the test unless path has permission bits want.
func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %04o, want %04o", path, got, want)
	}
}

// TestTLSCommands makes a CA and certificates with relctl in a temp dir,
// inspects them, checks modes and the refusal to overwrite, and finally
// serves with the server certificate and connects with the client one.
func TestTLSCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki") // created by "ca create"
	noCA := map[string]string{envCAFile: "", envAddr: closedAddr(t)}

	// CA.
	res := runCLI(t, noCA, "", "-o", "json", "tls", "ca", "create", "--cluster", "demo", "--dir", dir, "--days", "30")
	if res.code != exitOK {
		t.Fatalf("ca create: exit %d, stderr %q", res.code, res.stderr)
	}
	var ca caCreatedJSON
	if err := json.Unmarshal([]byte(res.stdout), &ca); err != nil {
		t.Fatalf("%v:\n%s", err, res.stdout)
	}
	caFile, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if ca.CertFile != caFile || ca.KeyFile != caKey || ca.Cluster != "demo" || ca.ServerName != "server.demo.rel" {
		t.Errorf("ca create answered %+v", ca)
	}
	checkMode(t, dir, 0o700)
	checkMode(t, caFile, 0o644)
	checkMode(t, caKey, 0o600)
	loaded, err := pki.LoadCA(caFile, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Pin != pki.Pin(loaded.Cert) || loaded.Cluster != "demo" {
		t.Errorf("pin %s, cluster %s; the CA on disk has %s, %s", ca.Pin, ca.Cluster, pki.Pin(loaded.Cert), loaded.Cluster)
	}
	if days := time.Until(loaded.Cert.NotAfter).Hours() / 24; days < 29 || days > 30 {
		t.Errorf("CA valid for %.1f more days, want 30", days)
	}
	before := mustRead(t, caKey)

	// A second CA in the same place is refused and changes nothing.
	res = runCLI(t, noCA, "", "tls", "ca", "create", "--cluster", "demo", "--dir", dir)
	if res.code != exitUsage || !strings.Contains(res.stderr, caFile+" already exists") {
		t.Errorf("second ca create: exit %d, stderr %q", res.code, res.stderr)
	}
	checkOneErrorLine(t, res)
	if mustRead(t, caKey) != before {
		t.Error("the CA key was replaced")
	}

	// Server certificate: the CA from --ca-file, its key found beside it.
	res = runCLI(t, noCA, "", "tls", "cert", "create", "--server", "--node-id", "s1", "--dns", "s1.example.com",
		"--ip", "10.0.0.1", "--ca-file", caFile, "--dir", dir)
	if res.code != exitOK {
		t.Fatalf("cert create --server: exit %d, stderr %q", res.code, res.stderr)
	}
	serverCert, serverKey := filepath.Join(dir, "s1.pem"), filepath.Join(dir, "s1-key.pem")
	for _, want := range []string{"created the server certificate of s1 (cluster demo)", "Certificate:  " + serverCert,
		"DNS names:    server.demo.rel, localhost, s1.example.com", "IP addresses: 127.0.0.1, 10.0.0.1",
		"rel-server --node-id s1 --ca-file " + caFile + " --cert-file " + serverCert + " --key-file " + serverKey} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, res.stdout)
		}
	}
	checkMode(t, serverCert, 0o644)
	checkMode(t, serverKey, 0o600)

	// The same again is refused before anything is made.
	res = runCLI(t, noCA, "", "tls", "cert", "create", "--server", "--node-id", "s1", "--ca-file", caFile, "--dir", dir)
	if res.code != exitUsage || !strings.Contains(res.stderr, serverCert+" already exists") {
		t.Errorf("second cert create: exit %d, stderr %q", res.code, res.stderr)
	}

	// Client (CA from REL_CA_FILE, key named) and agent certificates.
	res = runCLI(t, map[string]string{envCAFile: caFile}, "", "tls", "cert", "create", "--client", "alice", "--role", "deployer",
		"--ca-key-file", caKey, "--dir", dir, "--days", "10")
	if res.code != exitOK {
		t.Fatalf("cert create --client: exit %d, stderr %q", res.code, res.stderr)
	}
	clientCert, clientKey := filepath.Join(dir, "alice.pem"), filepath.Join(dir, "alice-key.pem")
	if want := "export REL_CA_FILE=" + caFile + " REL_CERT_FILE=" + clientCert + " REL_KEY_FILE=" + clientKey; !strings.Contains(res.stdout, want) {
		t.Errorf("stdout lacks %q:\n%s", want, res.stdout)
	}
	res = runCLI(t, noCA, "", "tls", "cert", "create", "--agent", "--node-id", "web-1", "--label", "env=prod",
		"--ca-file", caFile, "--dir", dir)
	if res.code != exitOK {
		t.Fatalf("cert create --agent: exit %d, stderr %q", res.code, res.stderr)
	}
	checkMode(t, filepath.Join(dir, "agent-web-1-key.pem"), 0o600)

	// cert info of each.
	info := func(path string) []certInfoJSON {
		t.Helper()
		res := runCLI(t, noCA, "", "-o", "json", "tls", "cert", "info", path)
		if res.code != exitOK {
			t.Fatalf("cert info %s: exit %d, stderr %q", path, res.code, res.stderr)
		}
		var out struct {
			Certificates []certInfoJSON `json:"certificates"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
			t.Fatalf("%v:\n%s", err, res.stdout)
		}
		return out.Certificates
	}
	s := info(serverCert)[0]
	if s.Kind != "server" || s.ID != "s1" || s.Cluster != "demo" || s.Identity != "rel://demo/server/s1" || s.Status != certValid ||
		strings.Join(s.DNSNames, ",") != "server.demo.rel,localhost,s1.example.com" || strings.Join(s.IPAddresses, ",") != "127.0.0.1,10.0.0.1" ||
		s.Issuer != "Rel CA demo" || s.Pin != "" || !strings.Contains(s.Fingerprint, ":") {
		t.Errorf("server certificate info: %+v", s)
	}
	c := info(clientCert)[0]
	if c.Kind != "client" || c.ID != "alice" || c.Role != "deployer" || c.Status != certValid {
		t.Errorf("client certificate info: %+v", c)
	}
	if exp, err := time.Parse(time.RFC3339, c.NotAfter); err != nil || time.Until(exp) > 10*24*time.Hour || time.Until(exp) < 9*24*time.Hour {
		t.Errorf("client certificate expires %s, want in 10 days", c.NotAfter)
	}
	a := info(filepath.Join(dir, "agent-web-1.pem"))[0]
	if a.Kind != "agent" || a.ID != "web-1" || a.Labels["env"] != "prod" {
		t.Errorf("agent certificate info: %+v", a)
	}
	if exp, err := time.Parse(time.RFC3339, a.NotAfter); err != nil || time.Until(exp) > 24*time.Hour {
		t.Errorf("agent certificate expires %s, want within a day", a.NotAfter)
	}
	caInfo := info(caFile)[0]
	if caInfo.Kind != "ca" || !caInfo.IsCA || caInfo.Cluster != "demo" || caInfo.Pin != ca.Pin {
		t.Errorf("CA info: %+v", caInfo)
	}

	// A file of several certificates shows each; the table says which.
	chain := writeTestFile(t, filepath.Join(t.TempDir(), "chain.pem"), mustRead(t, serverCert)+mustRead(t, caFile), 0o644)
	if got := info(chain); len(got) != 2 || got[0].Kind != "server" || got[1].Kind != "ca" {
		t.Errorf("chain info: %+v", got)
	}
	res = runCLI(t, noCA, "", "tls", "cert", "info", chain)
	for _, want := range []string{"Certificate 1 of 2:\nSubject:      server s1\n", "\nCertificate 2 of 2:\nSubject:    Rel CA demo\n", "Status:       valid, expires in ", "CA pin:     " + ca.Pin + "\n"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, res.stdout)
		}
	}
	res = runCLI(t, noCA, "", "tls", "cert", "info", filepath.Join(dir, "nope.pem"))
	if res.code != exitUsage {
		t.Errorf("info of a missing file: exit %d, stderr %q", res.code, res.stderr)
	}

	// The certificates work: a server with s1's certificate, relctl with
	// the CA and alice's certificate.
	material, err := transport.NewMaterial(transport.Files{CA: caFile, Cert: serverCert, Key: serverKey})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveWithOptions(t, transport.Security{M: material}.GRPCServerOptions(), func(s *grpc.Server) {
		relv1.RegisterACLServiceServer(s, echoACL{})
	})
	res = runCLI(t, map[string]string{envAddr: addr, envCAFile: caFile, envCertFile: clientCert, envKeyFile: clientKey}, "",
		"-o", "json", "acl", "whoami")
	if res.code != exitOK || !strings.Contains(res.stdout, `"id": "alice"`) || !strings.Contains(res.stdout, `"cluster": "demo"`) {
		t.Errorf("whoami with the new certificates: exit %d, stdout %s, stderr %q", res.code, res.stdout, res.stderr)
	}
}

// TestExpiredCertInfo checks the status of a certificate outside its
// validity in both formats.
func TestExpiredCertInfo(t *testing.T) {
	dir := t.TempDir()
	expired, _ := issueFiles(t, testCA.ca, pki.Leaf{Identity: pki.Identity{Kind: pki.KindClient, ID: "old", Role: "viewer"},
		NotBefore: time.Now().Add(-72 * time.Hour), Validity: 24 * time.Hour}, dir)
	res := runCLI(t, nil, "", "tls", "cert", "info", expired)
	if res.code != exitOK || !strings.Contains(res.stdout, "Status:     EXPIRED 2d0h ago") {
		t.Errorf("exit %d, stdout:\n%s", res.code, res.stdout)
	}
	res = runCLI(t, nil, "", "-o", "json", "tls", "cert", "info", expired)
	if !strings.Contains(res.stdout, `"status": "expired"`) {
		t.Errorf("stdout:\n%s", res.stdout)
	}
}
