// Package pki is Rel's certificate authority and the identities certificates
// carry. It uses only the standard library (crypto/x509): a cluster CA made
// by `relctl tls ca create`, leaf certificates for servers, agents and
// people, CSR signing for agent enrolment, the CA pin agents check on their
// first contact, and the file rules for keys (0600, refused when group or
// others may read them).
//
// Every leaf names exactly one identity in a URI SAN:
//
//	rel://<cluster>/server/<node-id>
//	rel://<cluster>/agent/<node-id>[?label=k%3Dv...]
//	rel://<cluster>/client/<name>?role=<role>
//
// Servers also carry the DNS SAN server.<cluster>.rel, which every client
// verifies (tls.Config.ServerName), so a server certificate does not need
// the IP addresses peers dial. Identities and roles come only from these
// SANs, never from a request field.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// Kinds of certificate holders.
const (
	KindServer = "server"
	KindAgent  = "agent"
	KindClient = "client"
)

// uriScheme is the scheme of identity URIs.
const uriScheme = "rel"

// ErrNoIdentity is wrapped when a certificate names no Rel identity.
var ErrNoIdentity = errors.New("certificate names no Rel identity")

var (
	clusterRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	idRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
)

// CheckCluster checks a cluster name: a DNS label (1-63 of a-z, 0-9, '-'),
// since it becomes part of server.<cluster>.rel.
func CheckCluster(name string) error {
	if !clusterRE.MatchString(name) {
		return fmt.Errorf("cluster name %q: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// CheckID checks a node id or client name: 1-63 letters, digits and . _ -,
// starting with a letter or digit (the node id rule of rel-server).
func CheckID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("id %q: use 1-63 letters, digits and . _ -, starting with a letter or digit", id)
	}
	return nil
}

// ServerName is the DNS name every server certificate of cluster carries
// and every client checks.
func ServerName(cluster string) string { return "server." + cluster + ".rel" }

// Identity is who a certificate names.
type Identity struct {
	Cluster string
	Kind    string // KindServer, KindAgent or KindClient
	ID      string // node id (server, agent) or name (client)
	// Role is a client certificate's role (viewer, deployer, ...); empty
	// for servers and agents.
	Role string
	// Labels are labels an agent's join token fixed: the agent may not
	// claim other values for these keys.
	Labels map[string]string
}

// String is the identity's URI.
func (id Identity) String() string { return id.URI().String() }

// URI is the identity as a URI SAN.
func (id Identity) URI() *url.URL {
	u := &url.URL{Scheme: uriScheme, Host: id.Cluster, Path: "/" + id.Kind + "/" + id.ID}
	q := url.Values{}
	if id.Role != "" {
		q.Set("role", id.Role)
	}
	keys := make([]string, 0, len(id.Labels))
	for k := range id.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q.Add("label", k+"="+id.Labels[k])
	}
	u.RawQuery = q.Encode()
	return u
}

// Check reports whether the identity is well formed.
func (id Identity) Check() error {
	if err := CheckCluster(id.Cluster); err != nil {
		return err
	}
	switch id.Kind {
	case KindServer, KindAgent:
		if id.Role != "" {
			return fmt.Errorf("%s certificates have no role", id.Kind)
		}
	case KindClient:
		if id.Role == "" {
			return errors.New("a client certificate needs a role")
		}
	default:
		return fmt.Errorf("kind %q: want server, agent or client", id.Kind)
	}
	if len(id.Labels) > 0 && id.Kind != KindAgent {
		return errors.New("only agent certificates carry labels")
	}
	return CheckID(id.ID)
}

// ParseURI reads an identity URI.
func ParseURI(u *url.URL) (Identity, error) {
	if u.Scheme != uriScheme {
		return Identity{}, fmt.Errorf("%w: URI %q is not rel://", ErrNoIdentity, u)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 2 {
		return Identity{}, fmt.Errorf("%w: URI %q: want rel://<cluster>/<kind>/<id>", ErrNoIdentity, u)
	}
	id := Identity{Cluster: u.Host, Kind: parts[0], ID: parts[1]}
	q := u.Query()
	id.Role = q.Get("role")
	for _, kv := range q["label"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return Identity{}, fmt.Errorf("%w: URI %q: label %q is not KEY=VALUE", ErrNoIdentity, u, kv)
		}
		if id.Labels == nil {
			id.Labels = map[string]string{}
		}
		id.Labels[k] = v
	}
	if err := id.Check(); err != nil {
		return Identity{}, fmt.Errorf("%w: URI %q: %v", ErrNoIdentity, u, err)
	}
	return id, nil
}

// ParseIdentity reads the identity a leaf certificate names. A leaf names
// exactly one; a server certificate must also carry server.<cluster>.rel.
func ParseIdentity(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != uriScheme {
			continue
		}
		id, err := ParseURI(u)
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("%w (subject %q): make certificates with relctl tls cert create", ErrNoIdentity, cert.Subject.CommonName)
	case 1:
	default:
		return Identity{}, fmt.Errorf("%w: certificate %q names %d identities; a certificate must name one", ErrNoIdentity, cert.Subject.CommonName, len(found))
	}
	id := found[0]
	if id.Kind == KindServer {
		want := ServerName(id.Cluster)
		ok := false
		for _, n := range cert.DNSNames {
			ok = ok || n == want
		}
		if !ok {
			return Identity{}, fmt.Errorf("%w: server certificate %q lacks the DNS name %s", ErrNoIdentity, cert.Subject.CommonName, want)
		}
	}
	return id, nil
}

// CACluster is the cluster a CA certificate was made for (its rel:// URI).
func CACluster(ca *x509.Certificate) (string, error) {
	for _, u := range ca.URIs {
		if u.Scheme == uriScheme && (u.Path == "" || u.Path == "/") {
			if err := CheckCluster(u.Host); err != nil {
				return "", err
			}
			return u.Host, nil
		}
	}
	return "", fmt.Errorf("CA certificate %q names no Rel cluster: make it with relctl tls ca create", ca.Subject.CommonName)
}
