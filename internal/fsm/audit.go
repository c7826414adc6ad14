package fsm

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// notAudited are the command kinds that add no audit record, each with
// why. Every other kind is audited, applied or refused: people's requests
// (they carry an actor) and the leader's decisions that change what runs
// or what is kept (catch-ups and rollbacks are create_rollout, retention
// passes, artifact GC). A new kind is audited unless it is added here.
var notAudited = map[string]string{
	"report_batch":       "agents' reports: the rollouts they move are audited when they start, and history keeps what ran",
	"agent_sessions":     "agents connecting and disconnecting: traffic that would swamp the trail",
	"agent_up":           "agents connecting (logs written before agent_sessions)",
	"agent_down":         "agents disconnecting (logs written before agent_sessions)",
	"rollout_step":       "the engine's steps of a rollout already audited (an automatic rollback started in one is audited)",
	"rollout_step_delta": "as rollout_step",
	"register_server":    "servers registering their own addresses at every election",
	"init_cluster":       "the first leader naming the cluster, once",
	"audit_refusals":     "the carrier of refusals: each refusal in it is a record of its own",
	"webhook_progress":   "the leader's record of webhook deliveries, one entry per delivered event: 'relctl webhook deliveries' shows them",
}

// leaderActor is the actor of the servers' own commands; anonymousActor
// of requests made without credentials.
var (
	leaderActor    = &relv1.Actor{Kind: "server", Id: "leader", Name: "leader"}
	anonymousActor = &relv1.Actor{Kind: "anonymous"}
)

// auditRecord describes cmd for the audit trail, or returns nil for a kind
// not audited. It runs before the command is applied, so that what the
// command removes (a release's digest) can still be read. Seq, index and
// hashes are the store's to fill in (state.Store.AppendAudit).
func (f *FSM) auditRecord(cmd *relv1.Command) *relv1.AuditRecord {
	kind, target := Describe(cmd)
	if kind == "" {
		return nil
	}
	rec := &relv1.AuditRecord{
		TimeUnixNano: cmd.GetStampedUnixNano(),
		Actor:        cmd.GetActor(),
		Action:       kind,
		Object:       target,
		RequestId:    cmd.GetRequestId(),
	}
	if rec.Actor == nil {
		rec.Actor = leaderActor
		if cmd.GetRequestId() != "" {
			// A request without credentials (ACL bootstrap, an agent's
			// enrolment): every request gets an id, the servers' own
			// commands none.
			rec.Actor = anonymousActor
		}
	}
	if _, skip := notAudited[kind]; skip {
		// An automatic rollback is started by a step: the leader's
		// decision to change what runs.
		var step *relv1.RolloutStep
		switch k := cmd.GetKind().(type) {
		case *relv1.Command_RolloutStep:
			step = k.RolloutStep
		case *relv1.Command_RolloutStepDelta:
			step = k.RolloutStepDelta
		}
		rb := step.GetStartRollback().GetRollout()
		if rb == nil {
			return nil
		}
		rec.Action = "automatic_rollback"
		f.describeRollout(rec, rb)
		return rec
	}
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_CreateApp:
		rec.App = k.CreateApp.GetApp().GetName()
	case *relv1.Command_CreateEnvironment:
		rec.Env = k.CreateEnvironment.GetEnvironment().GetName()
	case *relv1.Command_UpdateEnvironment:
		rec.Env = k.UpdateEnvironment.GetEnvironment().GetName()
	case *relv1.Command_DeleteEnvironment:
		rec.Env = k.DeleteEnvironment.GetName()
	case *relv1.Command_CreateRelease:
		r := k.CreateRelease.GetRelease()
		rec.App, rec.Digest = r.GetApp(), r.GetSha256()
	case *relv1.Command_DeleteRelease:
		rec.App = k.DeleteRelease.GetApp()
		if r, _, err := f.store.Release(nil, k.DeleteRelease.GetApp(), k.DeleteRelease.GetVersion()); err == nil {
			rec.Digest = r.GetSha256()
		}
	case *relv1.Command_CreateRollout:
		f.describeRollout(rec, k.CreateRollout.GetRollout())
	case *relv1.Command_RolloutControl:
		c := k.RolloutControl
		rec.Reason = c.GetReason()
		if ro, err := f.store.Rollout(nil, c.GetRolloutId()); err == nil {
			rec.App, rec.Env = ro.GetApp(), ro.GetEnvironment()
			if r, _, err := f.store.Release(nil, ro.GetApp(), ro.GetVersion()); err == nil {
				rec.Digest = r.GetSha256()
			}
		}
	case *relv1.Command_AclBootstrap:
		rec.Object = k.AclBootstrap.GetToken().GetName()
	case *relv1.Command_CreateAclToken:
		t := k.CreateAclToken.GetToken()
		rec.Object = fmt.Sprintf("%s %s (%s)", t.GetAccessorId(), t.GetName(), strings.Join(t.GetRoles(), ","))
	case *relv1.Command_CreateJoinToken:
		rec.Object = k.CreateJoinToken.GetToken().GetAccessorId()
	case *relv1.Command_RevokeAgent:
		rec.Reason = k.RevokeAgent.GetRevocation().GetReason()
	case *relv1.Command_RemoveRollouts:
		rec.Object = listed("rollouts", k.RemoveRollouts.GetRolloutIds())
		rec.Reason = "retention"
	case *relv1.Command_FoldHistory:
		rec.Object = fmt.Sprintf("history ended before %d (at most %d entries)", k.FoldHistory.GetCutoffUnixNano(), k.FoldHistory.GetMaxEntries())
		rec.Reason = "retention"
	case *relv1.Command_PruneDeployments:
		rec.Object = fmt.Sprintf("deployment records finished before %d (at most %d)", k.PruneDeployments.GetCutoffUnixNano(), k.PruneDeployments.GetMaxEntries())
		rec.Reason = "retention"
	case *relv1.Command_RemoveAgents:
		rec.Object = listed("agents", k.RemoveAgents.GetAgentIds())
		rec.Reason = "retention"
	case *relv1.Command_AuditArchived:
		rec.Object = fmt.Sprintf("audit records 1-%d archived (record %d's hash %s)", k.AuditArchived.GetSeq(), k.AuditArchived.GetSeq(), audit.HexHash(k.AuditArchived.GetHash()))
	case *relv1.Command_TrimAudit:
		c := k.TrimAudit
		// Described before it applies: the records it is about to remove
		// (contiguous from the anchor).
		ret, _ := f.store.AuditRetention()
		n, _ := f.store.TrimmableAudit(c.GetCutoffUnixNano(), int(c.GetMaxRecords()))
		rec.Object = fmt.Sprintf("%d audit records removed (%d-%d; archived up to %d, stamped at or before %d)",
			n, ret.GetTrimmedSeq()+1, ret.GetTrimmedSeq()+uint64(n), ret.GetArchivedSeq(), c.GetCutoffUnixNano())
		rec.Reason = "retention"
	case *relv1.Command_RemoveArtifacts:
		rec.Object = listed("artifacts", k.RemoveArtifacts.GetDigests())
		rec.Reason = "artifact garbage collection"
	case *relv1.Command_DeleteAclToken, *relv1.Command_DeleteJoinToken, *relv1.Command_UseJoinToken,
		*relv1.Command_DeregisterServer:
		// Describe's target says it all.
	default:
		// A kind without a case of its own (one added later): what its
		// fields say, by their names.
		f.describeByFields(rec, cmd)
	}
	return rec
}

// describeByFields fills in a record of a kind this file has no case for
// from the command's fields, by name: app, environment or env, reason or
// comment, rollout_id (whose rollout gives the app, environment and
// digest), and name or id for the object; in the kind's message and in the
// messages it holds directly.
func (f *FSM) describeByFields(rec *relv1.AuditRecord, cmd *relv1.Command) {
	m := cmd.ProtoReflect()
	fd := m.WhichOneof(kindField)
	if fd == nil || fd.Message() == nil {
		return
	}
	msgs := []protoreflect.Message{m.Get(fd).Message()}
	fields := msgs[0].Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		if sub := fields.Get(i); sub.Message() != nil && !sub.IsList() && !sub.IsMap() && msgs[0].Has(sub) {
			msgs = append(msgs, msgs[0].Get(sub).Message())
		}
	}
	set := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	var rolloutID, name string
	for _, msg := range msgs {
		fs := msg.Descriptor().Fields()
		for i := 0; i < fs.Len(); i++ {
			fd := fs.Get(i)
			if fd.Kind() != protoreflect.StringKind || fd.IsList() || fd.IsMap() {
				continue
			}
			v := msg.Get(fd).String()
			switch fd.Name() {
			case "app":
				set(&rec.App, v)
			case "environment", "env":
				set(&rec.Env, v)
			case "reason", "comment", "change_reason":
				set(&rec.Reason, v)
			case "rollout_id":
				set(&rolloutID, v)
			case "name", "id":
				set(&name, v)
			}
		}
	}
	if rolloutID != "" {
		if ro, err := f.store.Rollout(nil, rolloutID); err == nil {
			set(&rec.App, ro.GetApp())
			set(&rec.Env, ro.GetEnvironment())
			if r, _, err := f.store.Release(nil, ro.GetApp(), ro.GetVersion()); err == nil {
				set(&rec.Digest, r.GetSha256())
			}
		}
	}
	if rec.Object == "" {
		rec.Object = rolloutID
		if rec.Object == "" {
			rec.Object = name
		}
	}
}

// describeRollout fills in what a record of a new rollout says.
func (f *FSM) describeRollout(rec *relv1.AuditRecord, ro *relv1.Rollout) {
	rec.App, rec.Env = ro.GetApp(), ro.GetEnvironment()
	rec.Object = ro.GetId() + " (" + ro.GetApp() + "@" + ro.GetVersion() + " to " + ro.GetEnvironment() + ")"
	if ro.GetKind() == rollout.KindRollback {
		rec.Object = ro.GetId() + " (rollback of " + ro.GetRollbackOf() + ")"
	}
	rec.Reason = ro.GetChangeReason()
	if rec.Reason == "" {
		rec.Reason = ro.GetReason()
	}
	if r, _, err := f.store.Release(nil, ro.GetApp(), ro.GetVersion()); err == nil {
		rec.Digest = r.GetSha256()
	}
}

// maxListed bounds the names a record of a retention pass lists.
const maxListed = 20

func listed(what string, names []string) string {
	if len(names) <= maxListed {
		return fmt.Sprintf("%d %s: %s", len(names), what, strings.Join(names, " "))
	}
	return fmt.Sprintf("%d %s: %s ...", len(names), what, strings.Join(names[:maxListed], " "))
}

// recordResult completes rec with the command's outcome.
func recordResult(rec *relv1.AuditRecord, err error) {
	if err == nil {
		rec.Result = audit.Applied
		return
	}
	rec.Result, rec.ErrorKind, rec.Message = audit.Refused, state.ErrorKind(err), err.Error()
}

// refusalRecords are the records of refusals that never reached raft, as
// one server gathered them.
func refusalRecords(cmd *relv1.Command, c *relv1.AuditRefusals) []*relv1.AuditRecord {
	out := make([]*relv1.AuditRecord, 0, len(c.GetRefusals())+1)
	for _, r := range c.GetRefusals() {
		a := r.GetActor()
		if a == nil {
			a = anonymousActor
		}
		out = append(out, &relv1.AuditRecord{
			TimeUnixNano: r.GetTimeUnixNano(),
			Actor:        a,
			Action:       r.GetMethod(),
			Result:       audit.Refused,
			ErrorKind:    r.GetCode(),
			Message:      r.GetMessage(),
			App:          r.GetApp(),
			Env:          r.GetEnv(),
			RequestId:    r.GetRequestId(),
			Object:       refusedObject(r),
		})
	}
	if n := c.GetDropped(); n > 0 {
		out = append(out, &relv1.AuditRecord{
			TimeUnixNano: cmd.GetStampedUnixNano(),
			Actor:        &relv1.Actor{Kind: "server", Id: c.GetServer(), Name: c.GetServer()},
			Action:       "refusals_dropped",
			Result:       audit.Refused,
			Message:      fmt.Sprintf("%d refusals dropped: server %s's audit queue was full", n, c.GetServer()),
		})
	}
	return out
}

// refusedObject names what a refused request named, and the server that
// refused it: "app api, env prod (server s1)".
func refusedObject(r *relv1.AuditRefusal) string {
	var parts []string
	if r.GetApp() != "" {
		parts = append(parts, "app "+r.GetApp())
	}
	if r.GetEnv() != "" {
		parts = append(parts, "env "+r.GetEnv())
	}
	what := strings.Join(parts, ", ")
	if what != "" {
		what += " "
	}
	return what + "(server " + r.GetServer() + ")"
}
