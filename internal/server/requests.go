package server

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/fsm"
	"github.com/relhq/rel/internal/reqid"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Request ids. Every unary call has one: the caller's rel-request-id
// metadata (relctl sends the same one on each attempt of a request), or one
// made by the server the call reached. forwardCtx passes it to the leader;
// Server.apply stamps it into the command; the FSM applies a request id
// once and answers a repeat with the first answer. So a write re-sent after
// a leader change, by relctl or by a server forwarding it, acts once.
// Streams carry none: the commands an agent's stream makes are the
// server's own.

type requestIDKey struct{}

// unaryRequestID gives the call its request id.
func (s *Server) unaryRequestID(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	id, err := incomingRequestID(ctx)
	if err != nil {
		return nil, err
	}
	if id == "" {
		id = reqid.New()
	}
	return handler(context.WithValue(ctx, requestIDKey{}, id), req)
}

// incomingRequestID is the caller's request id, "" if it sent none.
func incomingRequestID(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(reqid.MetadataKey)
	switch len(v) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", status.Errorf(codes.InvalidArgument, "%d request ids (%s metadata): send one per request", len(v), reqid.MetadataKey)
	}
	if err := validate.RequestID(v[0]); err != nil {
		return "", toStatus(err)
	}
	return v[0], nil
}

// requestID is the id of the request ctx serves, "" outside a unary call.
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// applied is the FSM's answer to a command that it did not refuse.
type applied struct {
	// Index is the raft index of the entry that applied the command: for
	// a repeated request id, of the first one.
	Index uint64
	// Ref names what the command created (fsm.Result.Ref).
	Ref string
	// Duplicate says the request id had been applied before, so nothing
	// was applied now and Index and Ref are the first answer's.
	Duplicate bool
	// Items holds the refusals of a command answered per item
	// (fsm.Result.Items), nil where an item was applied; it may be shorter
	// than the command's items when the last ones were applied.
	Items []error
}

// item is the answer to the command's i-th item (see Items).
func (a applied) item(i int) error {
	if i < len(a.Items) {
		return a.Items[i]
	}
	return nil
}

// itemErrors encodes per-item refusals for ApplyResponse, as request
// records keep errors, so a forwarding server rebuilds the same sentinels.
func itemErrors(items []error) []*relv1.ItemError {
	var out []*relv1.ItemError
	for i, err := range items {
		if err != nil {
			out = append(out, &relv1.ItemError{Item: uint32(i), Kind: state.ErrorKind(err), Message: err.Error()})
		}
	}
	return out
}

// itemsFrom decodes ApplyResponse.item_errors (see itemErrors).
func itemsFrom(errs []*relv1.ItemError) []error {
	if len(errs) == 0 {
		return nil
	}
	n := 0
	for _, e := range errs {
		n = max(n, int(e.GetItem())+1)
	}
	if n > validate.MaxAgentSessions {
		return nil // not an answer to a command this server sent
	}
	out := make([]error, n)
	for _, e := range errs {
		out[e.GetItem()] = state.ErrorFromKind(e.GetKind(), e.GetMessage())
	}
	return out
}

// repeated returns the first answer this replica holds for the request's
// id, when that id was given to the request probe describes (a command
// like the one the handler would make): the handler answers with it
// without deciding anew, on a state the first attempt changed. nil means
// go on; the FSM still recognises a repeat the replica does not hold yet,
// and refuses an id given to another request.
func (s *Server) repeated(ctx context.Context, probe *relv1.Command) *relv1.RequestRecord {
	id := requestID(ctx)
	if id == "" {
		return nil
	}
	rec := s.store.Request(id)
	if rec == nil {
		return nil
	}
	if kind, target := fsm.Describe(probe); rec.GetKind() != kind || rec.GetTarget() != target {
		return nil
	}
	return rec
}

// repeatedAnswer is repeated's record as the first answer: its index, or
// the FSM's refusal.
func (s *Server) repeatedAnswer(ctx context.Context, probe *relv1.Command) (index uint64, ref string, ok bool, err error) {
	rec := s.repeated(ctx, probe)
	if rec == nil {
		return 0, "", false, nil
	}
	// The first attempt's record in the audit trail stands for this one.
	markDecided(ctx)
	if err := state.ErrorFromKind(rec.GetErrorKind(), rec.GetError()); err != nil {
		return 0, "", true, toStatus(err)
	}
	return rec.GetIndex(), rec.GetRef(), true, nil
}

// repeatedRollout answers a StartRollout or RollbackRollout that repeats
// a request already applied (ok): with the first attempt's refusal, or
// with the rollout it created, as it is now, and the first index.
func (s *Server) repeatedRollout(ctx context.Context, probe *relv1.Rollout) (_ *relv1.Rollout, index uint64, ok bool, _ error) {
	index, ref, ok, err := s.repeatedAnswer(ctx, &relv1.Command{Kind: &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: probe}}})
	if !ok || err != nil {
		return nil, 0, ok, err
	}
	ro, err := s.firstRollout(ctx, index, ref)
	return ro, index, true, err
}

// firstRollout reads the rollout a request's first attempt created, once
// this replica has applied it.
func (s *Server) firstRollout(ctx context.Context, index uint64, id string) (*relv1.Rollout, error) {
	ro, err := s.readAfter(ctx, index, id)
	if err != nil {
		return nil, toStatus(err)
	}
	return ro, nil
}

// startProbe and rollbackProbe describe the rollout StartRollout and
// RollbackRollout would create, for repeated.
func startProbe(req *relv1.StartRolloutRequest) *relv1.Rollout {
	return &relv1.Rollout{Kind: rollout.KindDeploy, App: req.GetApp(), Version: req.GetVersion(), Environment: req.GetEnvironment()}
}

func rollbackProbe(req *relv1.RollbackRolloutRequest) *relv1.Rollout {
	return &relv1.Rollout{Kind: rollout.KindRollback, RollbackOf: req.GetId()}
}

// secretShownOnce refuses a repeat of a request whose first attempt made a
// secret (a token): only its hash was replicated, and the secret went out
// in the answer to that attempt alone. A server re-forwarding the same
// command holds the same secret, so only a client's new attempt (with a
// new secret of its own, never stored) ends here.
func secretShownOnce(what, accessor, revoke string, index uint64) error {
	return status.Errorf(codes.AlreadyExists, "an earlier attempt of this request (the same request id) created %s %s at index %d; its secret is shown only in the answer to that attempt: if that answer was lost, revoke it ('%s %s') and create another",
		what, accessor, index, revoke, accessor)
}
