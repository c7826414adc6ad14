package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes. Scripts branch on these, so they are part of relctl's interface
// and documented in the root command's help: change them only with care.
const (
	exitOK          = 0
	exitRefused     = 1 // the server refused the request, or any other failure
	exitUsage       = 2 // the command line is wrong; retrying cannot help
	exitUnavailable = 3 // no server reachable, a failed TLS handshake, or the cluster has no leader yet
	exitTimeout     = 4 // deadline exceeded
)

// exitCodeHelp is the exit code table of the root command's Long help.
const exitCodeHelp = `Exit codes:
  0  success
  1  the server refused the request (InvalidArgument, NotFound,
     AlreadyExists, FailedPrecondition, Unauthenticated, PermissionDenied,
     ...), a local --artifact whose sha256 is not --sha256, "rollout
     status --watch" saw the rollout end in a state other than succeeded,
     "rollout plan" found blockers, or another failure not listed below
  2  usage error: unknown command or flag, wrong number of arguments, a
     malformed KEY=VALUE, APP@VERSION or --notes @FILE, a local --artifact
     that is missing or not a regular file, a malformed rollout spec flag
     (--canary, --waves, --max-failures, ...), a bad --output, --addr,
     --timeout or --upload-timeout value (from flags or environment), no
     --ca-file, TLS material or a token relctl cannot use (unreadable, a key
     group or others may read, a certificate expired or of another CA), or
     a file that "tls ... create" or --out would overwrite
  3  unavailable: no server reachable at any --addr address, a failed TLS
     handshake (a server certificate of another CA or cluster, a client
     certificate the server refused), or the cluster has no leader yet
  4  deadline exceeded: no answer within --timeout (raise it with --timeout),
     an upload not finished within --upload-timeout, or the server gave up
     waiting itself`

// usageError is a command line relctl cannot act on. It is reported with a
// pointer to the command's help rather than cobra's usage dump, because every
// failure must be exactly one line on stderr.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// unreachableError means no address in --addr accepted a connection.
type unreachableError struct {
	addrs []string
	last  error // the last address's connection error, for diagnosis
}

func (e *unreachableError) Error() string {
	msg := fmt.Sprintf("no rel server reachable at %s; start rel-server or set --addr/REL_ADDR",
		strings.Join(e.addrs, ", "))
	if e.last != nil {
		msg += fmt.Sprintf(" (last error: %s)", status.Convert(e.last).Message())
	}
	return msg
}

// timeoutError means relctl's own --timeout ran out, as opposed to a
// DeadlineExceeded the server returned, which is passed through like any
// other status.
type timeoutError struct {
	addr    string
	timeout time.Duration
	// flag names the flag that set timeout when it is not --timeout
	// (--upload-timeout), and doing says what ran out of time ("upload").
	flag, doing string
}

func (e *timeoutError) Error() string {
	if e.flag == "" {
		return fmt.Sprintf("no answer from %s within --timeout %s; raise it with --timeout", e.addr, e.timeout)
	}
	return fmt.Sprintf("%s to %s did not finish within %s %s; raise it with %s", e.doing, e.addr, e.flag, e.timeout, e.flag)
}

// exitCodeFor maps a gRPC status code to relctl's exit code.
func exitCodeFor(c codes.Code) int {
	switch c {
	case codes.OK:
		return exitOK
	case codes.Unavailable:
		return exitUnavailable
	case codes.DeadlineExceeded:
		return exitTimeout
	default:
		return exitRefused
	}
}

// describeError turns the error a command ended with into its exit code and
// the one line printed after "relctl: ". helpPath is the command path named
// in usage errors (e.g. "relctl app create"). beforeRun reports that the
// command's RunE never started, so the error came from cobra parsing the
// command line (unknown flag, wrong arguments, missing required flag): those
// are usage errors whatever their type.
func describeError(err error, helpPath string, beforeRun bool) (int, string) {
	var (
		ue *usageError
		ur *unreachableError
		te *timeoutError
		he *tlsError
	)
	switch {
	case errors.As(err, &ue) || beforeRun:
		return exitUsage, oneLine(fmt.Sprintf("%s (see %s --help)", err.Error(), helpPath))
	case errors.As(err, &ur):
		return exitUnavailable, oneLine(ur.Error())
	case errors.As(err, &he):
		return exitUnavailable, oneLine(he.Error() + " (" + codes.Unavailable.String() + ")")
	case errors.As(err, &te):
		return exitTimeout, oneLine(te.Error())
	case errors.Is(err, context.DeadlineExceeded):
		// Only reachable if a deadline error escaped without going through
		// the client; still worth its own exit code.
		return exitTimeout, oneLine(err.Error() + "; raise it with --timeout")
	}
	if s, ok := status.FromError(err); ok {
		return exitCodeFor(s.Code()), oneLine(fmt.Sprintf("%s (%s)", s.Message(), s.Code()))
	}
	return exitRefused, oneLine(err.Error())
}

// oneLine flattens a message onto a single line: server and library messages
// may contain newlines, and relctl promises exactly one line per failure.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }), " ")
}
