package cli

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// JSON shapes of the tls commands.

type caCreatedJSON struct {
	Cluster     string `json:"cluster"`
	ServerName  string `json:"server_name"`
	CertFile    string `json:"cert_file"`
	KeyFile     string `json:"key_file"`
	NotBefore   string `json:"not_before"`
	NotAfter    string `json:"not_after"`
	Pin         string `json:"pin"`
	Fingerprint string `json:"sha256_fingerprint"`
	// The audit key pair written beside the CA.
	AuditKeyFile    string `json:"audit_key_file"`
	AuditPubKeyFile string `json:"audit_public_key_file"`
}

// certInfoJSON describes one certificate. Kind is server, agent, client or
// ca; Identity is the rel:// URI of a leaf; IdentityError says why a
// certificate names no Rel identity. Status is valid, expired or
// not_yet_valid. Pin is set for CA certificates only.
type certInfoJSON struct {
	Subject       string            `json:"subject"`
	IsCA          bool              `json:"is_ca"`
	Kind          string            `json:"kind"`
	ID            string            `json:"id"`
	Cluster       string            `json:"cluster"`
	Role          string            `json:"role"`
	Labels        map[string]string `json:"labels"`
	Identity      string            `json:"identity"`
	IdentityError string            `json:"identity_error"`
	DNSNames      []string          `json:"dns_names"`
	IPAddresses   []string          `json:"ip_addresses"`
	URIs          []string          `json:"uris"`
	Issuer        string            `json:"issuer"`
	NotBefore     string            `json:"not_before"`
	NotAfter      string            `json:"not_after"`
	Status        string            `json:"status"`
	Serial        string            `json:"serial"`
	Fingerprint   string            `json:"sha256_fingerprint"`
	Pin           string            `json:"pin"`
}

// certCreatedJSON is a new certificate: where it was written and what it is.
type certCreatedJSON struct {
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	CAFile   string `json:"ca_file"`
	// CappedByCA reports that the certificate expires with the CA, before
	// the --days asked for.
	CappedByCA bool `json:"capped_by_ca"`
	certInfoJSON
}

func (p printer) caCreated(c caCreatedJSON) error {
	if p.json() {
		return p.writeJSON(c)
	}
	if _, err := fmt.Fprintf(p.w, "created the CA of cluster %q\n", c.Cluster); err != nil {
		return err
	}
	return p.aligned(1, func(tw io.Writer) {
		fmt.Fprintf(tw, "Certificate:\t%s (give it to servers, agents and relctl: --ca-file)\n", cell(c.CertFile))
		fmt.Fprintf(tw, "Key:\t%s (mode 0600: keep it secret and offline, it signs every certificate)\n", cell(c.KeyFile))
		fmt.Fprintf(tw, "Servers:\tchecked as %s\n", c.ServerName)
		fmt.Fprintf(tw, "Valid until:\t%s\n", c.NotAfter)
		fmt.Fprintf(tw, "CA pin:\t%s (agents check it: rel-agent --ca-pin)\n", c.Pin)
		fmt.Fprintf(tw, "SHA256:\t%s\n", c.Fingerprint)
		if c.AuditKeyFile != "" {
			fmt.Fprintf(tw, "Audit key:\t%s (mode 0600: servers sign audit checkpoints with it, rel-server --audit-key-file)\n", cell(c.AuditKeyFile))
			fmt.Fprintf(tw, "Audit public key:\t%s (relctl audit verify --public-key checks checkpoints with it)\n", cell(c.AuditPubKeyFile))
		}
		fmt.Fprintf(tw, "Next:\trelctl tls cert create --server --node-id ID --ca-file %s\n", cell(c.CertFile))
	})
}

func (p printer) certCreated(c certCreatedJSON) error {
	if p.json() {
		return p.writeJSON(c)
	}
	who := c.ID
	if c.Role != "" {
		who += " with role " + c.Role
	}
	if _, err := fmt.Fprintf(p.w, "created the %s certificate of %s (cluster %s)\n", c.Kind, cell(who), c.Cluster); err != nil {
		return err
	}
	return p.aligned(1, func(tw io.Writer) {
		fmt.Fprintf(tw, "Certificate:\t%s\n", cell(c.CertFile))
		fmt.Fprintf(tw, "Key:\t%s (mode 0600: it stays with its holder)\n", cell(c.KeyFile))
		fmt.Fprintf(tw, "Identity:\t%s\n", cell(c.Identity))
		if len(c.DNSNames) > 0 {
			fmt.Fprintf(tw, "DNS names:\t%s\n", cell(strings.Join(c.DNSNames, ", ")))
		}
		if len(c.IPAddresses) > 0 {
			fmt.Fprintf(tw, "IP addresses:\t%s\n", strings.Join(c.IPAddresses, ", "))
		}
		if len(c.Labels) > 0 {
			fmt.Fprintf(tw, "Labels:\t%s\n", cell(formatMap(c.Labels)))
		}
		until := c.NotAfter
		if c.CappedByCA {
			until += " (the CA's own expiry, before --days)"
		}
		fmt.Fprintf(tw, "Valid until:\t%s\n", until)
		fmt.Fprintf(tw, "SHA256:\t%s\n", c.Fingerprint)
		switch c.Kind {
		case "server":
			fmt.Fprintf(tw, "Use it with:\trel-server --node-id %s --ca-file %s --cert-file %s --key-file %s\n",
				cell(c.ID), cell(c.CAFile), cell(c.CertFile), cell(c.KeyFile))
		case "client":
			fmt.Fprintf(tw, "Use it with:\texport REL_CA_FILE=%s REL_CERT_FILE=%s REL_KEY_FILE=%s\n",
				cell(c.CAFile), cell(c.CertFile), cell(c.KeyFile))
		}
	})
}

func (p printer) certInfo(certs []certInfoJSON) error {
	if p.json() {
		return p.writeJSON(struct {
			Certificates []certInfoJSON `json:"certificates"`
		}{Certificates: certs})
	}
	var b strings.Builder
	for i, c := range certs {
		if len(certs) > 1 {
			if i > 0 {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "Certificate %d of %d:\n", i+1, len(certs))
		}
		if err := (printer{w: &b, format: p.format, now: p.now}).certBlock(c); err != nil {
			return err
		}
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

// certBlock prints one certificate as a key: value block.
func (p printer) certBlock(c certInfoJSON) error {
	return p.aligned(1, func(tw io.Writer) {
		line := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, cell(v)) }
		line("Subject", c.Subject)
		line("Kind", c.Kind)
		if c.ID != "" {
			line("ID", c.ID)
		}
		line("Cluster", c.Cluster)
		if c.Role != "" {
			line("Role", c.Role)
		}
		if len(c.Labels) > 0 {
			line("Labels", formatMap(c.Labels))
		}
		switch {
		case c.IdentityError != "":
			line("Identity", "none: "+c.IdentityError)
		case c.Identity != "":
			line("Identity", c.Identity)
		}
		if len(c.DNSNames) > 0 {
			line("DNS names", strings.Join(c.DNSNames, ", "))
		}
		if len(c.IPAddresses) > 0 {
			line("IP addresses", strings.Join(c.IPAddresses, ", "))
		}
		line("Issuer", c.Issuer)
		line("Not before", c.NotBefore)
		line("Not after", c.NotAfter)
		line("Status", p.certStatus(c))
		line("Serial", c.Serial)
		line("SHA256", c.Fingerprint)
		if c.Pin != "" {
			line("CA pin", c.Pin)
		}
	})
}

// certStatus says whether a certificate is usable now, and for how long.
func (p printer) certStatus(c certInfoJSON) string {
	now := p.clock()
	switch c.Status {
	case certExpired:
		if t, err := time.Parse(time.RFC3339, c.NotAfter); err == nil {
			return "EXPIRED " + humanDuration(now.Sub(t)) + " ago"
		}
		return "EXPIRED"
	case certNotYetValid:
		if t, err := time.Parse(time.RFC3339, c.NotBefore); err == nil {
			return "NOT YET VALID: valid in " + humanDuration(t.Sub(now)) + " (check this machine's clock)"
		}
		return "NOT YET VALID"
	}
	if t, err := time.Parse(time.RFC3339, c.NotAfter); err == nil {
		return "valid, expires in " + humanDuration(t.Sub(now))
	}
	return "valid"
}
