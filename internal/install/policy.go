package install

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Schemes an agent can fetch external artifacts over, and the one it
// allows when Config.AllowedSchemes is empty.
var (
	knownSchemes   = []string{"https", "http", "file"}
	defaultSchemes = []string{"https"}
)

// maxRedirects is how many redirects one download attempt follows.
const maxRedirects = 5

// metadataAddrs are cloud metadata services outside the link-local range
// (169.254.169.254, the usual one, is link-local): AWS's IPv6 endpoint and
// Alibaba Cloud's.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("fd00:ec2::254"),
	netip.MustParseAddr("100.100.100.200"),
}

// thisNetwork is 0.0.0.0/8: as a destination, Linux takes 0.0.0.0 for the
// host itself.
var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// policyError is a source the agent's fetch policy refuses. It is final
// for that source: asking again gets the same answer.
type policyError struct{ msg string }

func (e *policyError) Error() string { return e.msg }

// fetchPolicy decides where external artifact sources may lead: which URL
// schemes, and which addresses the agent may connect to. Release
// metadata comes from the cluster, so without it anyone able to create a
// release could make every agent read its local files or the cloud
// metadata service (credentials) and install the answer.
type fetchPolicy struct {
	schemes []string       // allowed schemes of external URLs
	allow   []netip.Prefix // addresses allowed although in a refused range

	// onDial, if set, sees every address the policy let through, just
	// before the connect: tests use it to prove a refused address is never
	// dialed.
	onDial func(netip.AddrPort)
}

func newFetchPolicy(schemes []string, allow []netip.Prefix) (*fetchPolicy, error) {
	p := &fetchPolicy{}
	if len(schemes) == 0 {
		schemes = defaultSchemes
	}
	for _, s := range schemes {
		s = strings.ToLower(strings.TrimSpace(s))
		if !slices.Contains(knownSchemes, s) {
			return nil, fmt.Errorf("install: allowed URL scheme %q: the agent fetches over %s only", s, strings.Join(knownSchemes, ", "))
		}
		if !slices.Contains(p.schemes, s) {
			p.schemes = append(p.schemes, s)
		}
	}
	for _, pf := range allow {
		if !pf.IsValid() {
			return nil, fmt.Errorf("install: allowed fetch address range %v is not a valid prefix", pf)
		}
		p.allow = append(p.allow, pf.Masked())
	}
	return p, nil
}

// checkScheme refuses an external URL scheme the agent was not started
// with, saying how to allow it.
func (p *fetchPolicy) checkScheme(scheme string) error {
	if slices.Contains(p.schemes, scheme) {
		return nil
	}
	if !slices.Contains(knownSchemes, scheme) {
		return &policyError{fmt.Sprintf("scheme %q is not supported (the agent fetches over %s)", scheme, strings.Join(knownSchemes, ", "))}
	}
	return &policyError{fmt.Sprintf("scheme %q is not allowed on this agent (start rel-agent with --allow-url-schemes %s to allow it)",
		scheme, strings.Join(append(slices.Clone(p.schemes), scheme), ","))}
}

// checkAddr refuses the addresses that lead back into the host or to its
// cloud provider: loopback, link-local (where 169.254.169.254 answers),
// other metadata addresses, unspecified and multicast, unless an allowed
// prefix holds the address. Private ranges (RFC 1918, ULA) stay allowed:
// internal artifact servers live there.
func (p *fetchPolicy) checkAddr(ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	for _, pf := range p.allow {
		if pf.Contains(ip) {
			return nil
		}
	}
	var what string
	switch {
	case ip.IsLoopback():
		what = "a loopback address"
	case ip.IsLinkLocalUnicast():
		what = "a link-local address (where cloud metadata services answer)"
	case slices.Contains(metadataAddrs, ip):
		what = "a cloud metadata address"
	case ip.IsUnspecified() || thisNetwork.Contains(ip):
		what = "an unspecified address"
	case ip.IsMulticast():
		what = "a multicast address"
	default:
		return nil
	}
	return &policyError{fmt.Sprintf("address %s is %s: artifacts are not fetched from it (start rel-agent with --allow-fetch-from %s to allow it)",
		ip, what, netip.PrefixFrom(ip, ip.BitLen()))}
}

// control runs on every socket the external client opens, after name
// resolution and before connect(2): the address checked is the one
// connected to, whatever DNS answered this time (rebinding) and whatever
// URL a redirect led to.
func (p *fetchPolicy) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &policyError{fmt.Sprintf("cannot check address %q (%s): refused", address, network)}
	}
	if err := p.checkAddr(ap.Addr()); err != nil {
		return err
	}
	if p.onDial != nil {
		p.onDial(ap)
	}
	return nil
}

// checkHost checks a host name by resolving it, for requests sent through
// a proxy: the agent then connects to the proxy, and the proxy to the
// host. A name that does not resolve here is left to the proxy (proxied
// networks often resolve external names at the proxy only); the proxy's
// own egress rules are the guard in that case.
func (p *fetchPolicy) checkHost(ctx context.Context, host string) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		return p.checkAddr(ip)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for _, ip := range ips {
		if err := p.checkAddr(ip); err != nil {
			return err
		}
	}
	return nil
}

// checkRedirect keeps redirects within the policy: an allowed scheme (the
// address is checked when the redirect's connection is dialed) and at
// most maxRedirects of them.
func (p *fetchPolicy) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return &policyError{fmt.Sprintf("more than %d redirects (the last to %q)", maxRedirects, req.URL.Redacted())}
	}
	if s := req.URL.Scheme; s != "https" && s != "http" {
		// Even where file:// sources are allowed: a server must not pick
		// a local file for the agent to read.
		return &policyError{fmt.Sprintf("redirect to %q: a redirect may only lead to an https or http URL", req.URL.Redacted())}
	}
	if err := p.checkScheme(req.URL.Scheme); err != nil {
		return &policyError{fmt.Sprintf("redirect to %q: %v", req.URL.Redacted(), err)}
	}
	return nil
}

// storeRedirect bounds the redirects of the cluster's store, which is
// exempt from the address policy but still reached over HTTP(S) only.
func storeRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return &policyError{fmt.Sprintf("more than %d redirects (the last to %q)", maxRedirects, req.URL.Redacted())}
	}
	if s := req.URL.Scheme; s != "https" && s != "http" {
		return &policyError{fmt.Sprintf("redirect to %q: the cluster's store is reached over https or http only", req.URL.Redacted())}
	}
	return nil
}

// client returns the HTTP client for external sources: base (or a default
// client) with a transport of its own whose every connection goes through
// the policy, and the policy's redirect rule. base's transport must be an
// *http.Transport that does not dial by itself, or the policy could not see
// the addresses it connects to.
func (p *fetchPolicy) client(base *http.Client) (*http.Client, error) {
	c := &http.Client{}
	var tr *http.Transport
	if base != nil {
		*c = *base
		switch t := base.Transport.(type) {
		case nil:
		case *http.Transport:
			//lint:ignore SA1019 the deprecated Dial and DialTLS are checked on purpose: a transport setting them would bypass the policy
			if t.DialContext != nil || t.Dial != nil || t.DialTLSContext != nil || t.DialTLS != nil {
				return nil, errors.New("install: HTTPClient's transport has a dial function of its own: the fetch policy must see every address it connects to (leave Dial, DialContext and DialTLS unset)")
			}
			tr = t.Clone()
		default:
			return nil, fmt.Errorf("install: HTTPClient's transport is a %T: the fetch policy needs an *http.Transport (or none) to check every address it connects to", t)
		}
	}
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: p.control}
	tr.DialContext = dialer.DialContext
	if proxy := tr.Proxy; proxy != nil {
		tr.Proxy = func(req *http.Request) (*url.URL, error) {
			pu, err := proxy(req)
			if err != nil || pu == nil {
				return pu, err
			}
			// The connection goes to the proxy: check where it is asked to go.
			if err := p.checkHost(req.Context(), req.URL.Hostname()); err != nil {
				return nil, err
			}
			return pu, nil
		}
	}
	c.Transport = tr
	c.CheckRedirect = p.checkRedirect
	return c, nil
}

// storeClient returns the client for the cluster's store: base as given
// (the agent's mTLS client authenticates the servers), with a redirect
// rule when it has none; a default client without base.
func storeClient(base *http.Client) *http.Client {
	if base == nil {
		return &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), CheckRedirect: storeRedirect}
	}
	c := *base
	if c.CheckRedirect == nil {
		c.CheckRedirect = storeRedirect
	}
	return &c
}
