package state

import "errors"

// Sentinel errors of the state store. Callers match them with errors.Is; the
// gRPC layer maps them to status codes in one place.
var (
	// ErrNotFound: the row a write depends on, or a read asked for, does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a create names a row that exists; rows are immutable.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the write contradicts current state (a second active
	// rollout for the same app and environment, say).
	ErrConflict = errors.New("conflict")
	// ErrUnauthenticated: a credential in the write (a join token) is not
	// valid: unknown, expired or used up.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the credential is valid but may not do this.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrRequestIDReused: a command carries the request id of an earlier,
	// different request (see RequestRecord).
	ErrRequestIDReused = errors.New("request id reused")
)

// Error is an application error with a message written for people. It
// unwraps to one of the sentinels so that code never matches on the text.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

func newError(kind error, msg string) error { return &Error{Kind: kind, Msg: msg} }

// errorKinds names the sentinels a request record stores its refusal by.
var errorKinds = []struct {
	name string
	err  error
}{
	{"not_found", ErrNotFound},
	{"already_exists", ErrAlreadyExists},
	{"conflict", ErrConflict},
	{"unauthenticated", ErrUnauthenticated},
	{"permission_denied", ErrPermissionDenied},
	{"request_id_reused", ErrRequestIDReused},
}

// errorKindInternal is the kind of an error that wraps no sentinel.
const errorKindInternal = "internal"

// ErrorKind names the sentinel err wraps, for a request record: "" for no
// error, "internal" for an error that wraps none.
func ErrorKind(err error) string {
	if err == nil {
		return ""
	}
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return errorKindInternal
}

// ErrorFromKind rebuilds the error a request record stored: an *Error of
// the named sentinel with the message, nil for kind "".
func ErrorFromKind(kind, msg string) error {
	if kind == "" {
		return nil
	}
	for _, k := range errorKinds {
		if k.name == kind {
			return newError(k.err, msg)
		}
	}
	return errors.New(msg)
}
