package server

import (
	"context"
	"errors"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
)

func errPrecondition(format string, args ...any) error {
	return status.Errorf(codes.FailedPrecondition, format, args...)
}

func errNotFound(format string, args ...any) error {
	return status.Errorf(codes.NotFound, format, args...)
}

// toStatus maps an error to the gRPC status the client sees. It is the one
// place where sentinel errors become codes; nothing matches on error text.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, validate.ErrInvalid):
		return status.Error(codes.InvalidArgument, trimSentinel(err, validate.ErrInvalid))
	case errors.Is(err, state.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, state.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, state.ErrConflict):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, state.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, state.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, state.ErrRequestIDReused):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errNoLeader):
		return status.Error(codes.Unavailable, "the cluster has no leader yet: retry shortly")
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrEnqueueTimeout):
		return status.Errorf(codes.Unavailable, "%v: retry", err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the request timed out on the server")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "the request was cancelled")
	default:
		return status.Error(codes.Internal, err.Error())
	}
}

// trimSentinel drops the "invalid argument: " prefix validate adds, since
// the status code already says it.
func trimSentinel(err, sentinel error) string {
	msg, prefix := err.Error(), sentinel.Error()+": "
	if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):]
	}
	return msg
}
