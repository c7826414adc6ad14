package server

import (
	"context"
	"maps"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// maxCSRBytes bounds a certificate request.
const maxCSRBytes = 16 << 10

// enrollService implements relv1.EnrollService: agents trade a join token
// (Enroll) or their current certificate (Renew) and a certificate request
// for a short-lived certificate bound to their node id.
type enrollService struct {
	relv1.UnimplementedEnrollServiceServer
	s *Server
}

// Enroll spends one use of the join token through raft, so a single-use
// token enrols one agent however many servers are asked at once, and only
// then signs the certificate. The request's CSR is checked first, so a bad
// request never spends a use.
func (e *enrollService) Enroll(ctx context.Context, req *relv1.EnrollRequest) (*relv1.EnrollResponse, error) {
	s := e.s
	if err := validate.NodeID("agent node id", req.GetNodeId()); err != nil {
		return nil, toStatus(err)
	}
	if !strings.HasPrefix(req.GetJoinToken(), auth.JoinPrefix) {
		return nil, status.Errorf(codes.Unauthenticated, "that is not a join token (they start with %q): make one with 'relctl agent token create'", auth.JoinPrefix)
	}
	if err := checkCSR(req.GetCsr()); err != nil {
		return nil, err
	}
	ca := s.signer.Load()
	if ca == nil {
		return e.forwardEnroll(ctx, req)
	}
	hash := auth.HashSecret(req.GetJoinToken())
	now := time.Now()
	_, err := s.apply(ctx, &relv1.Command{StampedUnixNano: now.UnixNano(), Kind: &relv1.Command_UseJoinToken{UseJoinToken: &relv1.UseJoinToken{
		SecretHash: hash, AgentId: req.GetNodeId(), AtUnixNano: now.UnixNano(),
	}}})
	if err != nil {
		s.logger.Warn("enrolment refused", "agent", req.GetNodeId(), "err", status.Convert(toStatus(err)).Message())
		return nil, toStatus(err)
	}
	tok, err := s.store.JoinTokenBySecret(hash)
	if err != nil {
		// Spent, then revoked before this replica read it back.
		return nil, status.Error(codes.Unauthenticated, "the join token was revoked during enrolment")
	}
	resp, err := e.sign(ca, req.GetCsr(), req.GetNodeId(), maps.Clone(tok.GetLabels()))
	if err != nil {
		return nil, err
	}
	s.metrics.enrolments.WithLabelValues("enrol").Inc()
	s.logger.Info("agent enrolled", "agent", req.GetNodeId(), "join_token", tok.GetAccessorId(), "labels", tok.GetLabels(),
		"expires", time.Unix(0, resp.GetNotAfterUnixNano()).UTC().Format(time.RFC3339))
	return resp, nil
}

// forwardEnroll hands the enrolment to the leader when this server cannot
// sign; nothing was spent here.
func (e *enrollService) forwardEnroll(ctx context.Context, req *relv1.EnrollRequest) (*relv1.EnrollResponse, error) {
	conn, err := e.s.leaderTarget(ctx)
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, status.Error(codes.FailedPrecondition, "no server here can sign agent certificates: start the servers with --ca-key-file (the CA key), or give agents certificates made with 'relctl tls cert create --agent'")
	}
	return relv1.NewEnrollServiceClient(conn).Enroll(forwardCtx(ctx), req)
}

// Renew signs a new certificate for the agent the caller's certificate
// names, with the labels it fixes. The interceptor has checked that the
// certificate is current and not revoked.
func (e *enrollService) Renew(ctx context.Context, req *relv1.RenewRequest) (*relv1.EnrollResponse, error) {
	p := auth.FromContext(ctx)
	if p.Kind != auth.KindAgent {
		return nil, status.Error(codes.PermissionDenied, "only agents renew their certificates")
	}
	if err := checkCSR(req.GetCsr()); err != nil {
		return nil, err
	}
	ca := e.s.signer.Load()
	if ca == nil {
		conn, err := e.s.leaderTarget(ctx)
		if err != nil {
			return nil, err
		}
		if conn == nil {
			return nil, status.Error(codes.FailedPrecondition, "no server here can sign agent certificates: start the servers with --ca-key-file")
		}
		return relv1.NewEnrollServiceClient(conn).Renew(forwardCtx(ctx), req)
	}
	resp, err := e.sign(ca, req.GetCsr(), p.ID, maps.Clone(p.Labels))
	if err != nil {
		return nil, err
	}
	e.s.metrics.enrolments.WithLabelValues("renew").Inc()
	e.s.logger.Info("agent certificate renewed", "agent", p.ID, "expires", time.Unix(0, resp.GetNotAfterUnixNano()).UTC().Format(time.RFC3339))
	return resp, nil
}

func checkCSR(csr []byte) error {
	if len(csr) == 0 || len(csr) > maxCSRBytes {
		return status.Errorf(codes.InvalidArgument, "certificate request of %d bytes: send one DER PKCS#10 request of at most %d bytes", len(csr), maxCSRBytes)
	}
	if _, err := pki.CheckCSR(csr); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

// sign issues the agent's certificate. If the agent was revoked before, the
// new certificate starts after the revocation, so that it is not refused
// with the old ones.
func (e *enrollService) sign(ca *pki.CA, csr []byte, agentID string, labels map[string]string) (*relv1.EnrollResponse, error) {
	now := time.Now()
	leaf := pki.Leaf{
		Identity: pki.Identity{Cluster: ca.Cluster, Kind: pki.KindAgent, ID: agentID, Labels: labels},
		Validity: e.s.cfg.AgentCertTTL,
	}
	if rev := e.s.store.Revocation(agentID); rev != nil {
		// Certificates carry whole seconds: the first second after the
		// revocation, since a NotBefore within its second would be read
		// back as at or before the revocation and refused.
		if after := time.Unix(0, rev.GetRevokedUnixNano()).Truncate(time.Second).Add(time.Second); after.After(now.Add(-time.Minute)) {
			leaf.NotBefore = after
		}
	}
	der, err := ca.SignCSR(csr, leaf, now)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	if wait := time.Until(leaf.NotBefore); wait > 0 {
		// Enrolled within a second of the revocation: answer once the
		// certificate is valid (at most a second), so the agent's first
		// handshake does not fail with "not yet valid".
		time.Sleep(wait)
	}
	certs, _ := pki.ParseCerts(pki.EncodeCert(der))
	return &relv1.EnrollResponse{
		Certificate:      pki.EncodeCert(der),
		CaCertificates:   e.s.sec.M.Current().CAPEM(),
		NotAfterUnixNano: certs[0].NotAfter.UnixNano(),
	}, nil
}
