package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// clusterName is the cluster name of the bench's CAs.
const clusterName = "bench"

// flavor is what a bench cluster runs: today's binaries with mutual TLS, or
// the baseline binaries (the last commit before security), which are
// plaintext and take no TLS flags.
type flavor struct {
	name string // "tls" or "plaintext"
	bin  string // directory holding rel-server and rel-agent
	tls  bool
}

// benchPKI is one bench cluster's CA, made in-process: the CA and the
// servers' certificates on disk as rel-server reads them, and the bench's
// own admin client certificate in memory.
type benchPKI struct {
	dir               string
	ca                *pki.CA
	caFile, caKeyFile string
	admin             *transport.Bundle
	pool              *x509.CertPool
}

func newPKI(dir string) (*benchPKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now()
	ca, err := pki.NewCA(clusterName, 0, now)
	if err != nil {
		return nil, err
	}
	p := &benchPKI{dir: dir, ca: ca, caFile: filepath.Join(dir, "ca.pem"), caKeyFile: filepath.Join(dir, "ca-key.pem")}
	key, err := pki.EncodeKey(ca.Key)
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFile(p.caFile, ca.CertPEM(), 0o644, false); err != nil {
		return nil, err
	}
	if err := pki.WriteFile(p.caKeyFile, key, 0o600, false); err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.Issue(pki.Leaf{Identity: pki.Identity{Kind: pki.KindClient, ID: "bench", Role: string(auth.Admin)}}, now)
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		return nil, err
	}
	k, err := pki.ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if p.admin, err = transport.NewBundle([]*x509.Certificate{ca.Cert}, certs, k); err != nil {
		return nil, err
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca.Cert)
	return p, nil
}

// serverFiles issues server id's certificate and writes it and its key.
func (p *benchPKI) serverFiles(id string) (certFile, keyFile string, err error) {
	certPEM, keyPEM, err := p.ca.Issue(pki.Leaf{Identity: pki.Identity{Kind: pki.KindServer, ID: id}}, time.Now())
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(p.dir, id+".pem"), filepath.Join(p.dir, id+"-key.pem")
	if err := pki.WriteFile(certFile, certPEM, 0o644, false); err != nil {
		return "", "", err
	}
	return certFile, keyFile, pki.WriteFile(keyFile, keyPEM, 0o600, false)
}

func (p *benchPKI) security() transport.Security {
	return transport.Security{M: transport.StaticMaterial(p.admin)}
}

// anonymousTLS verifies the servers and presents no certificate (what a
// load balancer checking /v1/health does).
func (p *benchPKI) anonymousTLS() *tls.Config {
	return transport.VerifyingClientConfig(p.pool, clusterName, nil)
}

// clusterSec is how the bench talks to one cluster: gRPC dial options and
// HTTP clients for /v1/health (no client certificate) and /metrics (the
// admin certificate).
type clusterSec struct {
	pki           *benchPKI // nil in plaintext
	scheme        string
	health, admin *http.Client
}

func newClusterSec(fl flavor, work string) (*clusterSec, error) {
	if !fl.tls {
		cl := &http.Client{Timeout: 5 * time.Second}
		return &clusterSec{scheme: "http", health: cl, admin: cl}, nil
	}
	p, err := newPKI(filepath.Join(work, "pki"))
	if err != nil {
		return nil, fmt.Errorf("make the bench CA: %w", err)
	}
	return &clusterSec{
		pki:    p,
		scheme: "https",
		health: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: p.anonymousTLS()}},
		admin:  &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: p.security().ClientConfig()}},
	}, nil
}

func (cs *clusterSec) dialOptions() []grpc.DialOption {
	if cs.pki == nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return cs.pki.security().GRPCDialOptions()
}

// serverArgs are the TLS flags of server id (none in plaintext).
func (cs *clusterSec) serverArgs(s *server) ([]string, error) {
	if cs.pki == nil {
		return nil, nil
	}
	if s.certFile == "" {
		var err error
		if s.certFile, s.keyFile, err = cs.pki.serverFiles(s.id); err != nil {
			return nil, err
		}
	}
	return []string{"--ca-file", cs.pki.caFile, "--cert-file", s.certFile, "--key-file", s.keyFile, "--ca-key-file", cs.pki.caKeyFile}, nil
}

// agentArgs are the flags with which agents enrol: a join token good for
// uses agents, in a 0600 file, and the CA file (none in plaintext).
func (c *cluster) agentArgs(ctx context.Context, uses int) ([]string, error) {
	if c.sec.pki == nil {
		return nil, nil
	}
	conn, err := c.dial(nil)
	if err != nil {
		return nil, err
	}
	resp, err := relv1.NewACLServiceClient(conn).CreateJoinToken(ctx, &relv1.CreateJoinTokenRequest{
		Description: "bench", TtlSeconds: 3600, Uses: uint32(uses),
	})
	if err != nil {
		return nil, fmt.Errorf("create a join token: %w", err)
	}
	c.tokens++
	file := filepath.Join(c.sec.pki.dir, fmt.Sprintf("join-%d.token", c.tokens))
	if err := pki.WriteFile(file, []byte(resp.GetSecret()+"\n"), 0o600, false); err != nil {
		return nil, err
	}
	return []string{"--join-token-file", file, "--ca-file", c.sec.pki.caFile}, nil
}
