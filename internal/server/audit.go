package server

import (
	"context"
	"crypto/ed25519"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// maxAuditQueue bounds the refusals a server holds for its next
// audit_refusals entries: past it, a flood of bad requests is counted
// (rel_audit_refusals_dropped_total and a record "N refusals dropped"),
// not queued, so it can fill neither memory nor the log.
const maxAuditQueue = 2000

// notAuditedMethods are methods whose refusals are not recorded beyond
// the reads (rule perm read): they read (token lists, whoami, the
// cluster's internal reads) or are the servers' and agents' own traffic
// (their refusals are logged and counted by rel_auth_denied_total).
// ClusterService.Apply carries commands the FSM audits itself.
var notAuditedMethods = map[string]bool{
	relv1.ACLService_ListTokens_FullMethodName:        true,
	relv1.ACLService_ListJoinTokens_FullMethodName:    true,
	relv1.ACLService_WhoAmI_FullMethodName:            true,
	relv1.ClusterService_Apply_FullMethodName:         true,
	relv1.ClusterService_FetchArtifact_FullMethodName: true,
	relv1.ClusterService_LocalAgents_FullMethodName:   true,
	relv1.ClusterService_Status_FullMethodName:        true,
	relv1.AgentService_Connect_FullMethodName:         true,
	relv1.EnrollService_Renew_FullMethodName:          true,
}

// auditedMethod reports whether a refusal of method is recorded: methods
// that change something, as their rules say.
func auditedMethod(method string) bool {
	r, ok := rules[method]
	return ok && r.perm != auth.Read && !notAuditedMethods[method]
}

// refusalCodes are the codes that mean the request was refused (as
// opposed to failing: no leader, a timeout, a cancelled call).
var refusalCodes = map[codes.Code]bool{
	codes.InvalidArgument:    true,
	codes.PermissionDenied:   true,
	codes.Unauthenticated:    true,
	codes.FailedPrecondition: true,
	codes.NotFound:           true,
	codes.AlreadyExists:      true,
	codes.OutOfRange:         true,
}

// auditNote travels with a request: decided is set once the request's
// fate was decided somewhere that records it itself (the FSM applied or
// refused its command; the leader, to which the request was forwarded,
// answered it).
type auditNote struct{ decided atomic.Bool }

type auditNoteKey struct{}

func withAuditNote(ctx context.Context) (context.Context, *auditNote) {
	n := &auditNote{}
	return context.WithValue(ctx, auditNoteKey{}, n), n
}

// markDecided notes that ctx's request was decided where it is recorded.
func markDecided(ctx context.Context) {
	if n, ok := ctx.Value(auditNoteKey{}).(*auditNote); ok {
		n.decided.Store(true)
	}
}

// auditRefusal queues a refusal of a mutating request that never reached
// raft. req may be nil (streams): the refusal then names no app or env.
func (s *Server) auditRefusal(ctx context.Context, method string, p auth.Principal, req any, err error) {
	code := status.Code(err)
	if !refusalCodes[code] || !auditedMethod(method) {
		return
	}
	id := requestID(ctx)
	if id == "" {
		// Refused before the call got its id (authorization): the
		// caller's, if it sent a valid one.
		id, _ = incomingRequestID(ctx)
	}
	r := &relv1.AuditRefusal{
		TimeUnixNano: time.Now().UnixNano(),
		Actor:        refusedActor(p),
		Method:       method[lastSlash(method)+1:],
		Code:         code.String(),
		Message:      auditText(status.Convert(err).Message(), validate.MaxReasonLen-8),
		RequestId:    id,
		Server:       s.cfg.NodeID,
	}
	if rl := rules[method]; rl.resource != nil && req != nil {
		res := rl.resource(s, req)
		r.App, r.Env = auditText(res.App, 128), auditText(res.Env, 128)
	}
	s.auditRefusals.add(r)
}

func lastSlash(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			return i
		}
	}
	return -1
}

// refusedActor is who was refused: a person as actors are, else the
// principal's kind and id (a server or agent certificate), nil for a
// caller without credentials.
func refusedActor(p auth.Principal) *relv1.Actor {
	if a := actorOf(p); a != nil {
		return a
	}
	if p.Kind == "" || p.Kind == auth.KindAnonymous {
		return nil
	}
	return &relv1.Actor{Kind: auditText(p.Kind, 64), Id: auditText(p.ID, 128), Name: auditText(p.Name, 128)}
}

// auditBatcher group-commits this server's refusals as audit_refusals
// entries, as sessionBatcher does agent sessions: one goroutine commits
// what is queued while new refusals queue for the next entry. Nobody
// waits for the answer. A refusal that cannot be committed (no leader)
// is counted as dropped, and the next entry says so.
type auditBatcher struct {
	s       *Server
	mu      sync.Mutex
	q       []*relv1.AuditRefusal
	dropped uint64
	wake    chan struct{}
}

func newAuditBatcher(s *Server) *auditBatcher {
	return &auditBatcher{s: s, wake: make(chan struct{}, 1)}
}

func (b *auditBatcher) add(r *relv1.AuditRefusal) {
	b.mu.Lock()
	if len(b.q) >= maxAuditQueue {
		b.dropped++
		b.mu.Unlock()
		if b.s.metrics != nil {
			b.s.metrics.auditDropped.Inc()
		}
		return
	}
	b.q = append(b.q, r)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// take removes the next entry's refusals (at most
// validate.MaxAuditRefusals) and the drops so far.
func (b *auditBatcher) take() ([]*relv1.AuditRefusal, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(b.q), validate.MaxAuditRefusals)
	batch := append([]*relv1.AuditRefusal(nil), b.q[:n]...)
	b.q = append(b.q[:0:0], b.q[n:]...)
	d := b.dropped
	b.dropped = 0
	return batch, d
}

func (b *auditBatcher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		}
		for {
			batch, dropped := b.take()
			if len(batch) == 0 && dropped == 0 {
				break
			}
			cmd := &relv1.Command{Kind: &relv1.Command_AuditRefusals{AuditRefusals: &relv1.AuditRefusals{
				Refusals: batch, Dropped: dropped, Server: b.s.cfg.NodeID}}}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := b.s.applyCommand(actx, cmd)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				b.s.logger.Warn("audit: could not record refusals", "refusals", len(batch), "err", err)
				b.mu.Lock()
				b.dropped += uint64(len(batch)) + dropped
				b.mu.Unlock()
				if b.s.metrics != nil {
					b.s.metrics.auditDropped.Add(float64(len(batch)))
				}
				// Wait for the next refusal (or leader) before trying
				// again, rather than spinning without a leader.
				break
			}
		}
	}
}

// auditService serves the audit trail: reading it, signing its head and
// marking what an archive covers. Nothing here deletes or edits a record;
// the leader's retention pass (trimAudit) removes archived records only.
type auditService struct {
	relv1.UnimplementedAuditServiceServer
	s *Server
}

func (a *auditService) ListAudit(ctx context.Context, req *relv1.ListAuditRequest) (*relv1.ListAuditResponse, error) {
	s := a.s
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewAuditServiceClient(conn).ListAudit(forwardCtx(ctx), req)
	}
	f := state.AuditFilter{FromSeq: req.GetSinceSeq(), SinceUnixNano: req.GetSinceUnixNano(), Actor: req.GetActor(), App: req.GetApp(), Env: req.GetEnv()}
	var after relv1.AuditRecord
	if ok, err := parsePageToken("audit", req.GetPageToken(), &after); err != nil {
		return nil, err
	} else if ok && after.GetSeq()+1 > f.FromSeq {
		f.FromSeq = after.GetSeq() + 1
	}
	budget := newPageBudget(req.GetPageSize())
	resp := &relv1.ListAuditResponse{}
	more := false
	idx, ret, err := s.store.AuditWithRetention(memdb.NewWatchSet(), f, func(r *relv1.AuditRecord) bool {
		if budget.full() || !budget.take(r) {
			more = true
			return false
		}
		resp.Records = append(resp.Records, r)
		return true
	})
	if err != nil {
		return nil, toStatus(err)
	}
	resp.Index = idx
	resp.TrimmedSeq, resp.TrimmedHash = ret.GetTrimmedSeq(), ret.GetTrimmedHash()
	resp.ArchivedSeq, resp.ArchivedHash = ret.GetArchivedSeq(), ret.GetArchivedHash()
	if more && len(resp.Records) > 0 {
		resp.NextPageToken = pageToken("audit", &relv1.AuditRecord{Seq: resp.Records[len(resp.Records)-1].GetSeq()})
	}
	return resp, nil
}

// AuditCheckpoint signs the head of this server's replica of the trail: a
// prefix of the chain every replica holds.
func (a *auditService) AuditCheckpoint(ctx context.Context, _ *relv1.AuditCheckpointRequest) (*relv1.SignedAuditHead, error) {
	s := a.s
	if s.auditKey == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "server %s has no audit key: start it with --audit-key-file (the audit.key that 'relctl tls ca create' writes beside the CA), or ask another server", s.cfg.NodeID)
	}
	// The last record, or the anchor when retention removed every one.
	seq, hash, err := s.store.AuditHeadSeq()
	if err != nil {
		return nil, toStatus(err)
	}
	cp := &relv1.SignedAuditHead{Cluster: s.cluster(), Seq: seq, Hash: hash, TimeUnixNano: time.Now().UnixNano()}
	audit.Sign(cp, s.auditKey)
	return cp, nil
}

// MarkAuditArchived proposes audit_archived: the FSM sets the mark if
// its replica holds record seq with that hash (FailedPrecondition
// otherwise); a mark at or below the current one changes nothing.
func (a *auditService) MarkAuditArchived(ctx context.Context, req *relv1.MarkAuditArchivedRequest) (*relv1.MarkAuditArchivedResponse, error) {
	s := a.s
	if err := validate.AuditArchived(req.GetSeq(), req.GetHash()); err != nil {
		return nil, toStatus(err)
	}
	idx, err := s.apply(ctx, &relv1.Command{Kind: &relv1.Command_AuditArchived{AuditArchived: &relv1.AuditArchived{Seq: req.GetSeq(), Hash: req.GetHash()}}})
	if err != nil {
		return nil, toStatus(err)
	}
	s.waitLocal(ctx, idx)
	resp := &relv1.MarkAuditArchivedResponse{ArchivedSeq: req.GetSeq(), Index: idx}
	if ret, err := s.store.AuditRetention(); err == nil && ret.GetArchivedSeq() > resp.ArchivedSeq {
		resp.ArchivedSeq = ret.GetArchivedSeq()
	}
	s.logger.Info("audit records marked archived", "seq", req.GetSeq(), "mark", resp.ArchivedSeq, "by", auth.FromContext(ctx).String())
	return resp, nil
}

// loadAuditKey reads --audit-key-file, if given.
func loadAuditKey(cfg Config) (ed25519.PrivateKey, error) {
	if cfg.AuditKeyFile == "" {
		return nil, nil
	}
	return audit.ReadKeyFile(cfg.AuditKeyFile)
}

// auditText bounds a string a refusal carries and makes it valid UTF-8
// (a caller's bytes may not be, and clipping may cut a rune): a command
// with invalid UTF-8 would not encode, and the whole batch would be lost.
func auditText(s string, n int) string {
	return strings.ToValidUTF8(clip(s, n), "?")
}
