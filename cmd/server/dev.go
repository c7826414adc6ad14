package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/pki"
)

// devCluster is the cluster name of --dev's CA.
const devCluster = "dev"

// devFiles are the TLS files --dev makes in its data dir.
type devFiles struct {
	ca, caKey, cert, key string
	// auditKey signs audit checkpoints; audit.pub beside it verifies them.
	auditKey string
}

// makeDevTLS makes a CA and this node's server certificate in dir/tls: the
// dev server runs with TLS like any other, only with material it made
// itself.
func makeDevTLS(dir, nodeID string) (devFiles, error) {
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return devFiles{}, err
	}
	now := time.Now()
	ca, err := pki.NewCA(devCluster, 0, now)
	if err != nil {
		return devFiles{}, err
	}
	certPEM, keyPEM, err := ca.Issue(pki.Leaf{
		Identity: pki.Identity{Kind: pki.KindServer, ID: nodeID},
		DNSNames: []string{"localhost"},
		IPs:      []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}, now)
	if err != nil {
		return devFiles{}, err
	}
	caKey, err := pki.EncodeKey(ca.Key)
	if err != nil {
		return devFiles{}, err
	}
	f := devFiles{
		ca: filepath.Join(tlsDir, "ca.pem"), caKey: filepath.Join(tlsDir, "ca-key.pem"),
		cert: filepath.Join(tlsDir, nodeID+".pem"), key: filepath.Join(tlsDir, nodeID+"-key.pem"),
	}
	for _, w := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{{f.ca, ca.CertPEM(), 0o644}, {f.caKey, caKey, 0o600}, {f.cert, certPEM, 0o644}, {f.key, keyPEM, 0o600}} {
		if err := pki.WriteFile(w.path, w.data, w.perm, true); err != nil {
			return devFiles{}, err
		}
	}
	if f.auditKey, _, err = audit.WriteKeyPair(tlsDir); err != nil {
		return devFiles{}, err
	}
	return f, nil
}

// checkLoopback refuses a --dev address that is not on loopback: a dev
// server's credentials sit in a temp dir and it is meant for one machine.
func checkLoopback(flag, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--%s %q is not HOST:PORT", flag, addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--dev listens on loopback only: --%s %s is not a loopback address (use 127.0.0.1, or run a real cluster: see the README, \"Securing a cluster\")", flag, addr)
}
