package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/dashboard"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// uiBackend is what the dashboard (internal/dashboard) may ask of the
// server: who holds a token, and gRPC methods called in-process through
// the same handlers and interceptor code as over the wire (the method's
// authorization rule, the audit of refusals and mutations, a request id,
// forwarding to the leader), so a button on a web page can do nothing
// relctl with the same token could not.
type uiBackend struct {
	s *Server
	// services are the gRPC services the dashboard may call, by full
	// service name.
	services map[string]uiService
}

type uiService struct {
	desc *grpc.ServiceDesc
	impl any
}

var _ dashboard.Backend = (*uiBackend)(nil)

func newUIBackend(s *Server) *uiBackend {
	b := &uiBackend{s: s, services: map[string]uiService{}}
	for _, svc := range []uiService{
		{&relv1.ControlService_ServiceDesc, &controlService{s: s}},
		{&relv1.ApprovalService_ServiceDesc, &approvalService{s: s}},
		{&relv1.AuditService_ServiceDesc, &auditService{s: s}},
		{&relv1.ClusterService_ServiceDesc, &clusterService{s: s}},
		{&relv1.ReportService_ServiceDesc, &reportService{s: s}},
		{&relv1.EventService_ServiceDesc, &eventService{s: s}},
	} {
		b.services[svc.desc.ServiceName] = svc
	}
	return b
}

// TokenPrincipal resolves a token by the hash of its secret, with the
// same checks (unknown, expired, catching up) as a bearer token on gRPC.
func (b *uiBackend) TokenPrincipal(hash string) (auth.Principal, error) {
	return b.s.tokenPrincipalByHash(hash)
}

// Invoke calls the unary gRPC method (its full name) with req as p.
func (b *uiBackend) Invoke(ctx context.Context, p auth.Principal, method string, req proto.Message) (any, error) {
	svcName, name, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	svc, known := b.services[svcName]
	if !ok || !known {
		return nil, status.Errorf(codes.Unimplemented, "the dashboard does not call %s", method)
	}
	for _, m := range svc.desc.Methods {
		if m.MethodName != name {
			continue
		}
		dec := func(into any) error {
			proto.Merge(into.(proto.Message), req)
			return nil
		}
		// The chain of setupGRPC's interceptors after authentication:
		// metrics, authorization and audit (callAs), the request id.
		intercept := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			return b.s.metrics.unaryInterceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
				return b.s.callAs(ctx, p, info.FullMethod, req, func(ctx context.Context, req any) (any, error) {
					return b.s.unaryRequestID(ctx, req, info, handler)
				})
			})
		}
		return m.Handler(svc.impl, ctx, dec, intercept)
	}
	return nil, status.Error(codes.Unimplemented, fmt.Sprintf("%s is not a unary method of %s", name, svcName))
}

// setupUI mounts the web dashboard on mux. Its live streams end when the
// server's context is cancelled, before the HTTP server shuts down.
func (s *Server) setupUI(mux *http.ServeMux) {
	ui, err := dashboard.New(dashboard.Config{Backend: newUIBackend(s), Context: s.ctx, Logger: s.logger.With("component", "dashboard")})
	if err != nil {
		// The templates are embedded and parsed by the package's tests:
		// this is a broken build, not a configuration error.
		panic(fmt.Sprintf("dashboard: %v", err))
	}
	ui.Register(mux)
}
