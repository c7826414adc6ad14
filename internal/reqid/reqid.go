// Package reqid names requests that write, so that a request sent again (by
// relctl after a failed attempt, or by a server re-forwarding a write after
// a leader change) is applied once. The id travels as gRPC metadata; the
// server that accepts a request stamps it into the raft command, and the
// FSM answers a repeat with the first answer (see internal/state's
// requests table).
package reqid

import (
	"crypto/rand"
	"encoding/hex"
)

// MetadataKey is the gRPC metadata key of a request's id.
const MetadataKey = "rel-request-id"

// MaxLen is the longest request id accepted.
const MaxLen = 64

// New returns a new random request id: "rq-" and 32 hex digits.
func New() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return "rq-" + hex.EncodeToString(b)
}
