package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/validate"
)

// Defaults of the tls commands.
const (
	defaultCluster   = "rel"
	defaultCADays    = int(pki.DefaultCAValidity / (24 * time.Hour))
	defaultLeafDays  = int(pki.DefaultLeafValidity / (24 * time.Hour))
	defaultAgentDays = 1
	// maxDays keeps a validity far from time.Duration's limit (292 years).
	maxDays = 100 * 365
)

func (r *runner) tlsCommand() *cobra.Command {
	return noun("tls",
		"Make the cluster's CA and certificates, and inspect certificates",
		`Every connection in a Rel cluster is mutual TLS with certificates of one
cluster CA. These commands make that CA and its certificates on this
machine, with no server involved: keep the CA key (ca-key.pem) offline, and
hand out only ca.pem and each holder's own certificate and key.

Certificates name exactly one identity in a URI SAN,
rel://<cluster>/<kind>/<id>: servers (which also carry the DNS name
server.<cluster>.rel that relctl and agents check), agents, and people
(clients) with a role. The servers take who you are and what you may do from
the certificate alone.

Agents normally get their certificates by enrolling with a join token
(relctl agent token create); "tls cert create --agent" is for hosts that
cannot.`,
		`  relctl tls ca create --cluster prod
  relctl tls cert create --server --node-id s1 --dns s1.example.com --ip 10.0.0.1
  relctl tls cert create --client alice --role deployer
  relctl tls cert info s1.pem`,
		noun("ca",
			"Create the cluster's certificate authority",
			`The CA signs every certificate of the cluster. Make it once, on a trusted
machine, and keep ca-key.pem away from the servers' hosts if you can.`,
			`  relctl tls ca create --cluster prod --dir /etc/rel`,
			r.tlsCACreateCommand(),
		),
		noun("cert",
			"Create and inspect certificates",
			`Create certificates for servers, people and agents with the CA key, and show
who a certificate names and until when it is valid.`,
			`  relctl tls cert create --server --node-id s1
  relctl tls cert info alice.pem`,
			r.tlsCertCreateCommand(),
			r.tlsCertInfoCommand(),
		),
	)
}

func (r *runner) tlsCACreateCommand() *cobra.Command {
	var (
		cluster, dir string
		days         int
	)
	cmd := &cobra.Command{
		Use:   "create [--cluster NAME] [--dir DIR] [--days N]",
		Short: "Create the cluster's CA: ca.pem and ca-key.pem (and the audit key pair)",
		Long: `Create a new certificate authority for cluster NAME (default "` + defaultCluster + `"):
DIR/ca.pem, the CA certificate (mode 0644), and DIR/ca-key.pem, its key
(mode 0600). Beside them it writes the cluster's audit key pair (ed25519):
DIR/audit.key (mode 0600), with which servers sign audit checkpoints
(rel-server --audit-key-file), and DIR/audit.pub, with which anyone checks
them ('relctl audit verify --checkpoint FILE --public-key audit.pub').
No file is ever overwritten: if one exists the command stops before making
anything. DIR is created (mode 0700) if missing.

The cluster name is 1-63 lower-case letters, digits and '-'. It is part of
every certificate the CA signs, and servers are checked as
server.<cluster>.rel: with the default, server.rel.rel.

It prints the CA pin, sha256 of the CA's public key, which agents check on
their first contact (rel-agent --ca-pin). No server is contacted, and
--ca-file is not needed.`,
		Example: `  relctl tls ca create
  relctl tls ca create --cluster prod --dir /etc/rel --days 3650
  relctl tls ca create --cluster staging -o json | jq -r .pin`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	cmd.RunE = r.doLocal(func(context.Context, []string) error {
		if err := pki.CheckCluster(cluster); err != nil {
			return usagef("--cluster: %v", err)
		}
		validity, err := daysFlag(days)
		if err != nil {
			return err
		}
		certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
		auditKey, auditPub := filepath.Join(dir, audit.KeyFileName), filepath.Join(dir, audit.PubKeyFileName)
		if err := prepareOutputs(dir, "--dir", certFile, keyFile, auditKey, auditPub); err != nil {
			return err
		}
		ca, err := pki.NewCA(cluster, validity, time.Now())
		if err != nil {
			return err
		}
		keyPEM, err := pki.EncodeKey(ca.Key)
		if err != nil {
			return err
		}
		if err := writePair(certFile, ca.CertPEM(), keyFile, keyPEM); err != nil {
			return err
		}
		if auditKey, auditPub, err = audit.WriteKeyPair(dir); err != nil {
			return err
		}
		return r.printer().caCreated(caCreatedJSON{
			AuditKeyFile:    auditKey,
			AuditPubKeyFile: auditPub,
			Cluster:         cluster,
			ServerName:      pki.ServerName(cluster),
			CertFile:        certFile,
			KeyFile:         keyFile,
			NotBefore:       certTime(ca.Cert.NotBefore),
			NotAfter:        certTime(ca.Cert.NotAfter),
			Pin:             pki.Pin(ca.Cert),
			Fingerprint:     pki.Fingerprint(ca.Cert),
		})
	})
	f := cmd.Flags()
	f.StringVar(&cluster, "cluster", defaultCluster, "the cluster's `NAME`; servers are checked as server.<NAME>.rel")
	f.StringVar(&dir, "dir", ".", "`DIR` to write ca.pem and ca-key.pem to")
	f.IntVar(&days, "days", defaultCADays, "how many `DAYS` the CA is valid")
	_ = cmd.MarkFlagDirname("dir")
	return cmd
}

// certKinds are the flags of "tls cert create" that choose what to make.
const certKindFlags = "--server, --client NAME or --agent"

func (r *runner) tlsCertCreateCommand() *cobra.Command {
	var (
		server, agent                 bool
		client, nodeID, role, caKey   string
		dir                           string
		dnsNames, ipFlags, labelFlags []string
		days                          int
	)
	cmd := &cobra.Command{
		Use:   "create (--server --node-id ID [--dns NAME]... [--ip IP]... | --client NAME --role ROLE | --agent --node-id ID [--label K=V]...) [--ca-file ca.pem] [--ca-key-file ca-key.pem] [--dir DIR] [--days N]",
		Short: "Create a certificate for a server, a person or an agent",
		Long: `Create a key and a certificate signed by the cluster's CA, for exactly one of:

  --server --node-id ID   a rel-server. Besides server.<cluster>.rel it is
                          valid for localhost and 127.0.0.1, so that curl
                          can check https://127.0.0.1:7480/v1/health on the
                          host, and for every --dns NAME and --ip IP (the
                          names load balancers and HTTP clients use).
  --client NAME --role ROLE
                          a person or pipeline using relctl with that role
                          (` + auth.RoleNames() + `).
  --agent --node-id ID    a rel-agent that cannot enrol with a join token,
                          with the labels --label fixes. Agents normally
                          enrol (relctl agent token create), which needs
                          no CA key on the host.

The files are DIR/<name>.pem (mode 0644) and DIR/<name>-key.pem (mode 0600),
where <name> is the node id for a server, agent-<id> for an agent and NAME
for a client. Existing files are never overwritten.

The CA certificate is --ca-file (or REL_CA_FILE, default ./ca.pem) and its
key --ca-key-file (default ca-key.pem beside the CA certificate). Validity:
--days, default ` + fmt.Sprint(defaultLeafDays) + ` for servers and clients and ` + fmt.Sprint(defaultAgentDays) + ` for agents (at most
` + fmt.Sprint(int(pki.MaxAgentValidity/(24*time.Hour))) + `); never beyond the CA's own expiry. No server is contacted.`,
		Example: `  relctl tls cert create --server --node-id s1 --dns s1.example.com --ip 10.0.0.1
  relctl tls cert create --client alice --role deployer --dir ~/.rel
  relctl tls cert create --client ci-web --role release-creator --days 90
  relctl tls cert create --agent --node-id web-1 --label env=prod --days 7
  relctl tls cert create --server --node-id s2 --ca-file /etc/rel/ca.pem --ca-key-file /secure/ca-key.pem`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	cmd.RunE = r.doLocal(func(context.Context, []string) error {
		flags := cmd.Flags()
		var kinds []string
		if server {
			kinds = append(kinds, "--server")
		}
		if flags.Changed("client") {
			kinds = append(kinds, "--client")
		}
		if agent {
			kinds = append(kinds, "--agent")
		}
		if len(kinds) != 1 {
			got := "none"
			if len(kinds) > 1 {
				got = strings.Join(kinds, " and ")
			}
			return usagef("give exactly one of %s (got %s)", certKindFlags, got)
		}
		kind := strings.TrimPrefix(kinds[0], "--")
		refuse := func(flag, forWhat string) error {
			if flags.Changed(flag) {
				return usagef("--%s is for %s certificates, not --%s", flag, forWhat, kind)
			}
			return nil
		}
		var (
			id   pki.Identity
			name string
			ips  []net.IP
		)
		switch kind {
		case "server":
			if err := firstError(refuse("role", "--client"), refuse("label", "--agent")); err != nil {
				return err
			}
			if nodeID == "" {
				return usagef("--server needs --node-id ID: the server's --node-id")
			}
			id, name = pki.Identity{Kind: pki.KindServer, ID: nodeID}, nodeID
		case "client":
			if err := firstError(refuse("node-id", "--server and --agent"), refuse("dns", "--server"), refuse("ip", "--server"), refuse("label", "--agent")); err != nil {
				return err
			}
			if client == "" {
				return usagef("--client needs a NAME: who the certificate is for, e.g. --client alice")
			}
			if role == "" {
				return usagef("--client needs --role ROLE (%s)", auth.RoleNames())
			}
			if _, err := auth.ParseRole(role); err != nil {
				return usagef("--role: %v", err)
			}
			id, name = pki.Identity{Kind: pki.KindClient, ID: client, Role: role}, client
		case "agent":
			if err := firstError(refuse("role", "--client"), refuse("dns", "--server"), refuse("ip", "--server")); err != nil {
				return err
			}
			if nodeID == "" {
				return usagef("--agent needs --node-id ID: the agent's --node-id")
			}
			labels, err := parseKeyValues("label", labelFlags)
			if err != nil {
				return err
			}
			if err := validate.Labels("label", labels, false); err != nil {
				return usagef("--%v", err)
			}
			if len(labels) > 0 {
				id.Labels = labels
			}
			id.Kind, id.ID, name = pki.KindAgent, nodeID, "agent-"+nodeID
		}
		if err := pki.CheckID(id.ID); err != nil {
			return usagef("%v", err)
		}
		for _, s := range ipFlags {
			ip := net.ParseIP(s)
			if ip == nil {
				return usagef("--ip %q is not an IP address", s)
			}
			ips = append(ips, ip)
		}
		for _, d := range dnsNames {
			if d == "" || strings.ContainsFunc(d, func(r rune) bool { return r <= ' ' || r > '~' || r == ',' }) {
				return usagef("--dns %q is not a DNS name", d)
			}
		}
		if !flags.Changed("days") {
			days = defaultLeafDays
			if kind == "agent" {
				days = defaultAgentDays
			}
		}
		validity, err := daysFlag(days)
		if err != nil {
			return err
		}
		if kind == "agent" && validity > pki.MaxAgentValidity {
			return usagef("--days %d: an agent certificate lives at most %d days; agents that can reach the servers renew theirs", days, int(pki.MaxAgentValidity/(24*time.Hour)))
		}

		caFile := r.secure.ca
		if !caFile.given() {
			caFile = setting{value: "ca.pem", source: "--ca-file"}
		}
		caKeySetting := setting{value: caKey, source: "--ca-key-file"}
		if !flags.Changed("ca-key-file") {
			caKeySetting.value = filepath.Join(filepath.Dir(caFile.value), "ca-key.pem")
		}
		ca, err := pki.LoadCA(caFile.value, caKeySetting.value)
		if err != nil {
			return usagef("the CA (%s, key %s): %v", caFile.describe(), caKeySetting.describe(), err)
		}
		id.Cluster = ca.Cluster
		if err := id.Check(); err != nil {
			return usagef("%v", err)
		}

		leaf := pki.Leaf{Identity: id, Validity: validity}
		if kind == "server" {
			leaf.DNSNames = dedupe(append([]string{"localhost"}, dnsNames...))
			leaf.IPs = dedupeIPs(append([]net.IP{net.IPv4(127, 0, 0, 1)}, ips...))
		}
		certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		if err := prepareOutputs(dir, "--dir", certFile, keyFile); err != nil {
			return err
		}
		now := time.Now()
		certPEM, keyPEM, err := ca.Issue(leaf, now)
		if err != nil {
			return err
		}
		certs, err := pki.ParseCerts(certPEM)
		if err != nil {
			return err
		}
		if err := writePair(certFile, certPEM, keyFile, keyPEM); err != nil {
			return err
		}
		out := certCreatedJSON{
			CertFile:     certFile,
			KeyFile:      keyFile,
			CAFile:       caFile.value,
			certInfoJSON: toCertInfoJSON(certs[0], now),
			CappedByCA:   certs[0].NotAfter.Equal(ca.Cert.NotAfter) && now.Add(validity).After(ca.Cert.NotAfter),
		}
		return r.printer().certCreated(out)
	})
	f := cmd.Flags()
	f.BoolVar(&server, "server", false, "make a rel-server's certificate (with --node-id)")
	f.StringVar(&client, "client", "", "make a person's or pipeline's certificate, named `NAME` (with --role)")
	f.BoolVar(&agent, "agent", false, "make a rel-agent's certificate (with --node-id)")
	f.StringVar(&nodeID, "node-id", "", "the server's or agent's node `ID`")
	f.StringVar(&role, "role", "", "the client's `ROLE`: "+auth.RoleNames())
	f.StringArrayVar(&dnsNames, "dns", nil, "extra DNS `NAME` a server certificate is valid for (repeatable)")
	f.StringArrayVar(&ipFlags, "ip", nil, "extra `IP` address a server certificate is valid for (repeatable)")
	f.StringArrayVar(&labelFlags, "label", nil, "label `KEY=VALUE[,...]` an agent certificate fixes (repeatable)")
	f.StringVar(&caKey, "ca-key-file", "", "the CA's key `FILE` (default ca-key.pem beside --ca-file)")
	f.StringVar(&dir, "dir", ".", "`DIR` to write the certificate and key to")
	f.IntVar(&days, "days", 0, fmt.Sprintf("how many `DAYS` the certificate is valid (default %d; %d for --agent)", defaultLeafDays, defaultAgentDays))
	_ = cmd.MarkFlagFilename("ca-key-file")
	_ = cmd.MarkFlagDirname("dir")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions(roleNames(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (r *runner) tlsCertInfoCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "info FILE",
		Short: "Show who a certificate names, its names and its validity",
		Long: `Show every certificate in the PEM file FILE: who it names (kind, id,
cluster, role, the labels an agent certificate fixes), its DNS names and IP
addresses, issuer, validity and whether it is expired or not yet valid,
serial number and sha256 fingerprint (as openssl prints it). For a CA
certificate: its cluster and its pin, which agents check (rel-agent
--ca-pin). No server is contacted. The command exits 0 whatever the
certificates' state; scripts read "status" from -o json.`,
		Example: `  relctl tls cert info s1.pem
  relctl tls cert info ca.pem -o json | jq -r '.certificates[0].pin'
  relctl tls cert info alice.pem -o json | jq -r '.certificates[0].not_after'`,
		Args: exactArgs("FILE"),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return []cobra.Completion{"pem", "crt"}, cobra.ShellCompDirectiveFilterFileExt
		},
		RunE: r.doLocal(func(_ context.Context, args []string) error {
			certs, err := pki.ReadCertsFile(args[0])
			if err != nil {
				return usagef("%v", err)
			}
			now := time.Now()
			out := make([]certInfoJSON, 0, len(certs))
			for _, c := range certs {
				out = append(out, toCertInfoJSON(c, now))
			}
			return r.printer().certInfo(out)
		}),
	}
}

// daysFlag turns --days into a validity.
func daysFlag(days int) (time.Duration, error) {
	if days <= 0 || days > maxDays {
		return 0, usagef("--days %d: want 1 to %d", days, maxDays)
	}
	return time.Duration(days) * 24 * time.Hour, nil
}

// prepareOutputs checks that none of files exists, so that nothing is
// made when one would be refused, then creates dir (0700) if it is missing.
func prepareOutputs(dir, dirFlag string, files ...string) error {
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			return usagef("%s already exists: relctl never overwrites keys and certificates; move it away or choose another %s", f, dirFlag)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return usagef("%s: %v", f, unwrapPath(err))
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return usagef("%s %s: %v", dirFlag, dir, unwrapPath(err))
	}
	return nil
}

// writePair writes a key (0600) and then its certificate (0644), both
// exclusively. If the certificate cannot be written, the key just written
// is removed again: a key without its certificate is of no use.
func writePair(certFile string, certPEM []byte, keyFile string, keyPEM []byte) error {
	if err := pki.WriteFile(keyFile, keyPEM, 0o600, true); err != nil {
		return err
	}
	if err := pki.WriteFile(certFile, certPEM, 0o644, true); err != nil {
		_ = os.Remove(keyFile)
		return err
	}
	return nil
}

// firstError is the first non-nil error of errs.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func dedupe(names []string) []string {
	var out []string
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func dedupeIPs(ips []net.IP) []net.IP {
	var out []net.IP
	for _, ip := range ips {
		if !slices.ContainsFunc(out, ip.Equal) {
			out = append(out, ip)
		}
	}
	return out
}

func roleNames() []string {
	out := make([]string, len(auth.Roles))
	for i, r := range auth.Roles {
		out[i] = string(r)
	}
	return out
}

// Certificate states of "tls cert info".
const (
	certValid       = "valid"
	certExpired     = "expired"
	certNotYetValid = "not_yet_valid"
)

func toCertInfoJSON(c *x509.Certificate, now time.Time) certInfoJSON {
	out := certInfoJSON{
		Subject:     c.Subject.CommonName,
		IsCA:        c.IsCA,
		Labels:      map[string]string{},
		DNSNames:    nonNilStrings(c.DNSNames),
		IPAddresses: []string{},
		URIs:        []string{},
		Issuer:      c.Issuer.CommonName,
		NotBefore:   certTime(c.NotBefore),
		NotAfter:    certTime(c.NotAfter),
		Status:      certValid,
		Serial:      fmt.Sprintf("%X", c.SerialNumber),
		Fingerprint: pki.Fingerprint(c),
	}
	for _, ip := range c.IPAddresses {
		out.IPAddresses = append(out.IPAddresses, ip.String())
	}
	for _, u := range c.URIs {
		out.URIs = append(out.URIs, u.String())
	}
	switch {
	case now.After(c.NotAfter):
		out.Status = certExpired
	case now.Before(c.NotBefore):
		out.Status = certNotYetValid
	}
	if c.IsCA {
		out.Kind = "ca"
		out.Pin = pki.Pin(c)
		cluster, err := pki.CACluster(c)
		if err != nil {
			out.IdentityError = err.Error()
		}
		out.Cluster = cluster
		return out
	}
	id, err := pki.ParseIdentity(c)
	if err != nil {
		out.IdentityError = err.Error()
		return out
	}
	out.Kind, out.ID, out.Cluster, out.Role, out.Identity = id.Kind, id.ID, id.Cluster, id.Role, id.String()
	if id.Labels != nil {
		out.Labels = id.Labels
	}
	return out
}

func certTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
