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
