package cli

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/relhq/rel/internal/reqid"
)

// Request ids. Every request relctl makes carries an id in the
// rel-request-id metadata, and every attempt of the same request carries
// the same one: invoke picks it once, before it tries the addresses, and
// the interceptors below send it with each attempt. The cluster applies a
// request id once and answers a repeat with the first answer, so moving on
// to another server after an Unavailable answer (whose write may or may not
// have been applied) cannot apply a write twice.

type requestIDKey struct{}

// withRequestID returns ctx carrying a request id: the one it carries
// already, or a new one.
func withRequestID(ctx context.Context) context.Context {
	if requestIDFrom(ctx) != "" {
		return ctx
	}
	return context.WithValue(ctx, requestIDKey{}, reqid.New())
}

// requestIDFrom is the request id ctx carries, "" if none.
func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// outgoingRequestID adds ctx's request id (a new one for a call made
// without invoke, which has no other attempt) to the call's metadata.
func outgoingRequestID(ctx context.Context) context.Context {
	id := requestIDFrom(ctx)
	if id == "" {
		id = reqid.New()
	}
	return metadata.AppendToOutgoingContext(ctx, reqid.MetadataKey, id)
}

func unaryRequestID(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(outgoingRequestID(ctx), method, req, reply, cc, opts...)
}

func streamRequestID(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(outgoingRequestID(ctx), desc, cc, method, opts...)
}
