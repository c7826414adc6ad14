package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/version"
)

// connectTimeout bounds how long one address may take to accept a connection
// before relctl moves on to the next. Without it a black-holed address (a
// firewall dropping SYNs) would use up the whole --timeout and the remaining
// addresses would never be tried.
const connectTimeout = 5 * time.Second

// dialOptions is the one place that decides how relctl connects to servers:
// TLS with the cluster's CA, the client certificate and token of sec (see
// security.dialOptions), and the connection parameters below. rec records
// why a handshake failed.
func dialOptions(sec *security, rec *handshakeRecord) []grpc.DialOption {
	return append(sec.dialOptions(rec),
		grpc.WithUserAgent("relctl/"+version.Version),
		grpc.WithChainUnaryInterceptor(unaryRequestID),
		grpc.WithChainStreamInterceptor(streamRequestID),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.DefaultConfig,
			MinConnectTimeout: connectTimeout,
		}),
	)
}

// parseAddrs splits a comma-separated --addr/REL_ADDR value. source names
// where the value came from, for the error message.
func parseAddrs(source, value string) ([]string, error) {
	var addrs []string
	for _, a := range strings.Split(value, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, usagef("%s %q: empty address in list (want HOST:PORT[,HOST:PORT...])", source, value)
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" {
			return nil, usagef("%s: %q is not HOST:PORT", source, a)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// rpc performs one gRPC call on cc, passing opts through to it.
type rpc func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) error

// retryPause is the pause before relctl goes through the addresses again
// after a server answered Unavailable; it doubles up to maxRetryPause.
const (
	retryPause    = 200 * time.Millisecond
	maxRetryPause = 2 * time.Second
)

// invoke runs call against the addresses in order and returns the address
// that answered.
//
// Every attempt carries the same request id (see withRequestID), so the
// cluster applies the call once however many attempts reach it. invoke
// moves to the next address when the current one could not be reached at
// all (the call failed with Unavailable before any connection to a server
// existed: grpc.Peer stays empty until a transport carries the call, and a
// failed TLS handshake sent nothing either) and when a server answered
// Unavailable (no leader yet, a leader change while it forwarded the call,
// a server shutting down, a connection lost during the call): whether
// such a call was applied is unknown, and the request id makes asking
// again safe. After a pass in which a server answered Unavailable it goes
// through the addresses again, after a pause, until --timeout; after a
// pass that reached no server at all it stops. Any other answer is final.
//
// When no attempt succeeds, the last server's Unavailable answer is
// reported (even when --timeout ran out meanwhile: it says why), else the
// first handshake failure, because it says more than a refused connection,
// else that no address was reachable.
//
// The errors returned are the usage error of unusable TLS material,
// *tlsError, *unreachableError, *timeoutError, or the server's status error
// unchanged.
func invoke(ctx context.Context, sec *security, addrs []string, timeout time.Duration, call rpc) (string, error) {
	ctx = withRequestID(ctx)
	var (
		last, handshake error
		answered        error // the last server's Unavailable answer
		answeredAddr    string
	)
	for pause := retryPause; ; pause = min(2*pause, maxRetryPause) {
		answeredNow := false
		for _, addr := range addrs {
			rec := &handshakeRecord{}
			// The explicit dns scheme keeps a host name that looks like a URL
			// scheme ("unix", "passthrough") from being read as one.
			cc, err := grpc.NewClient("dns:///"+addr, dialOptions(sec, rec)...)
			if err != nil {
				return addr, fmt.Errorf("connect to %s: %w", addr, err)
			}
			var p peer.Peer
			err = call(ctx, cc, grpc.Peer(&p))
			_ = cc.Close() // nothing useful to do about a failed close of a one-shot connection
			switch {
			case err == nil:
				return addr, nil
			case deadlinePassed(ctx, err):
				if answered != nil {
					return answeredAddr, answered
				}
				return addr, &timeoutError{addr: addr, timeout: timeout}
			case status.Code(err) == codes.Unavailable && ctx.Err() == nil && p.Addr == nil:
				if herr := rec.get(); herr != nil && handshake == nil {
					handshake = sec.describeHandshake(addr, herr)
				}
				last = err
			case status.Code(err) == codes.Unavailable && ctx.Err() == nil:
				answered, answeredAddr, answeredNow = err, addr, true
			default:
				return addr, err
			}
		}
		if !answeredNow || !retry.Sleep(ctx, retry.Jitter(pause)) {
			break
		}
	}
	switch {
	case answered != nil:
		return answeredAddr, answered
	case handshake != nil:
		return "", handshake
	}
	return "", &unreachableError{addrs: addrs, last: last}
}

// deadlinePassed reports whether err is ctx's own deadline running out. The
// context's timer may fire after the transport has already failed the call
// (a loaded machine, or the server giving up at the same deadline), so a
// DeadlineExceeded past ctx's deadline counts as well as ctx.Err().
func deadlinePassed(ctx context.Context, err error) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && status.Code(err) == codes.DeadlineExceeded && !time.Now().Before(d)
}
