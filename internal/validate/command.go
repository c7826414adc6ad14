package validate

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/freeze"
	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Limits on what a command may carry, beyond the user-facing ones. They
// bound the size of a raft entry and of a row, so that nothing a peer or a
// bug sends can make every replica hold something huge.
const (
	MaxIDLen        = 64
	MaxReasonLen    = 4 << 10
	MaxOutputLen    = 1 << 10
	MaxFactLen      = 256
	MaxReportsBatch = 100_000
	// MaxAgentSessions bounds an agent_sessions entry (ups and downs
	// together): a server commits at most that many per entry.
	MaxAgentSessions = 1000
	MaxRolloutHosts  = 100_000
	MaxEventsPerStep = 200_000
	MaxTokenUses     = 100_000
	MaxGlobs         = 32
)

var (
	nodeIDRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	idRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	accessorRE = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

// NodeID checks a server's or an agent's id: 1-63 letters, digits and
// . _ -, starting with a letter or digit.
func NodeID(kind, s string) error {
	if !nodeIDRE.MatchString(s) {
		return invalid("%s %q: use 1-63 letters, digits and . _ -, starting with a letter or digit", kind, s)
	}
	return nil
}

// Accessor checks a token's public id.
func Accessor(s string) error {
	if !accessorRE.MatchString(s) {
		return invalid("token accessor %q: want the 16 hex digits 'relctl acl token list' or 'relctl agent token list' shows", s)
	}
	return nil
}

func id(kind, s string) error {
	if !idRE.MatchString(s) {
		return invalid("%s %q: want 1-64 letters, digits and . _ -", kind, s)
	}
	return nil
}

func maxLen(kind, s string, n int) error {
	if len(s) > n {
		return invalid("%s is %d bytes long: the limit is %d", kind, len(s), n)
	}
	return nil
}

func hostPort(kind, s string, optional bool) error {
	if s == "" && optional {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || len(s) > 255 {
		return invalid("%s %q is not HOST:PORT", kind, s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return invalid("%s %q: port must be 1-65535", kind, s)
	}
	return nil
}

func secretHash(s string) error {
	if !sha256RE.MatchString(s) {
		return invalid("secret hash is not 64 lower-case hex digits")
	}
	return nil
}

func positive(kind string, v int64) error {
	if v <= 0 {
		return invalid("%s is not stamped", kind)
	}
	return nil
}

// Command checks a raft command before it is proposed, whoever built it:
// the leader validates what its own endpoints built and what a peer
// forwarded alike, so nothing that could stop or fork a replica (a missing
// message, an unknown kind, an oversized field) reaches the log.
func Command(cmd *relv1.Command) error {
	if cmd == nil {
		return invalid("empty command")
	}
	if cmd.GetStampedUnixNano() <= 0 {
		return invalid("command is not time-stamped")
	}
	if id := cmd.GetRequestId(); id != "" {
		if err := RequestID(id); err != nil {
			return err
		}
	}
	if ok, err := approvalCommand(cmd); ok {
		return err
	}
	if ok, err := eventCommand(cmd); ok {
		return err
	}
	if ok, err := auditCommand(cmd); ok {
		return err
	}
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_CreateApp:
		a := k.CreateApp.GetApp()
		if a == nil {
			return invalid("create_app carries no app")
		}
		if a.GetLifecycle() != "" {
			if err := Name("lifecycle name", a.GetLifecycle()); err != nil {
				return err
			}
		}
		return first(Name("app name", a.GetName()), Description(a.GetDescription()))
	case *relv1.Command_CreateEnvironment:
		e := k.CreateEnvironment.GetEnvironment()
		if e == nil {
			return invalid("create_environment carries no environment")
		}
		return first(Name("environment name", e.GetName()), Description(e.GetDescription()), Labels("selector", e.GetSelector(), true))
	case *relv1.Command_UpdateEnvironment:
		c := k.UpdateEnvironment
		e := c.GetEnvironment()
		if e == nil {
			return invalid("update_environment carries no environment")
		}
		if err := first(Name("environment name", e.GetName()), Description(e.GetDescription()), Labels("selector", e.GetSelector(), true)); err != nil {
			return err
		}
		if c.GetExpectModifyIndex() == 0 {
			return invalid("update_environment names no index to expect")
		}
		if n := len(c.GetJoining()) + len(c.GetLeaving()); n > MaxRolloutHosts {
			return invalid("update_environment lists %d joining and leaving hosts: the limit is %d", n, MaxRolloutHosts)
		}
		for _, h := range append(append([]string(nil), c.GetJoining()...), c.GetLeaving()...) {
			if err := NodeID("agent id", h); err != nil {
				return err
			}
		}
		return nil
	case *relv1.Command_DeleteEnvironment:
		return Name("environment name", k.DeleteEnvironment.GetName())
	case *relv1.Command_CreateLifecycle:
		return Lifecycle(k.CreateLifecycle.GetLifecycle())
	case *relv1.Command_UpdateLifecycle:
		return Lifecycle(k.UpdateLifecycle.GetLifecycle())
	case *relv1.Command_DeleteLifecycle:
		return Name("lifecycle name", k.DeleteLifecycle.GetName())
	case *relv1.Command_SetAppLifecycle:
		c := k.SetAppLifecycle
		if err := Name("app name", c.GetApp()); err != nil {
			return err
		}
		if c.GetLifecycle() == "" {
			return nil
		}
		return Name("lifecycle name", c.GetLifecycle())
	case *relv1.Command_BlockRelease:
		c := k.BlockRelease
		if err := first(Name("app name", c.GetApp()), Version(c.GetVersion()), maxLen("block reason", c.GetReason(), MaxReasonLen)); err != nil {
			return err
		}
		if c.GetBlocked() && strings.TrimSpace(c.GetReason()) == "" {
			return invalid("a block needs a reason (--reason TEXT): people who find the release blocked read it")
		}
		return positive("block_release time", c.GetAtUnixNano())
	case *relv1.Command_RemoveRollouts:
		ids := k.RemoveRollouts.GetRolloutIds()
		if len(ids) == 0 || len(ids) > MaxRemovedRollouts {
			return invalid("a retention pass removes 1 to %d rollouts, not %d", MaxRemovedRollouts, len(ids))
		}
		for _, r := range ids {
			if err := id("rollout id", r); err != nil {
				return err
			}
		}
		return nil
	case *relv1.Command_FoldHistory:
		c := k.FoldHistory
		if n := c.GetMaxEntries(); n == 0 || n > MaxFoldedHistory {
			return invalid("a history retention pass folds 1 to %d entries, not %d", MaxFoldedHistory, n)
		}
		if c.GetCutoffUnixNano() <= 0 {
			return invalid("fold_history has no cutoff time")
		}
		return nil
	case *relv1.Command_PruneDeployments:
		return pruneDeployments(k.PruneDeployments.GetCutoffUnixNano(), k.PruneDeployments.GetMaxEntries())
	case *relv1.Command_RemoveAgents:
		c := k.RemoveAgents
		ids := c.GetAgentIds()
		if len(ids) == 0 || len(ids) > MaxRemovedAgents {
			return invalid("an agent retention pass removes 1 to %d agents, not %d", MaxRemovedAgents, len(ids))
		}
		for _, a := range ids {
			if err := NodeID("agent id", a); err != nil {
				return err
			}
		}
		if c.GetCutoffUnixNano() <= 0 || c.GetAtUnixNano() <= 0 {
			return invalid("remove_agents needs its cutoff and its time")
		}
		if c.GetCutoffUnixNano() > c.GetAtUnixNano() {
			return invalid("remove_agents' cutoff is after its time: agents must have been away for some time")
		}
		return nil
	case *relv1.Command_DeleteRelease:
		if err := Name("app name", k.DeleteRelease.GetApp()); err != nil {
			return err
		}
		return Version(k.DeleteRelease.GetVersion())
	case *relv1.Command_RemoveArtifacts:
		ds := k.RemoveArtifacts.GetDigests()
		if len(ds) == 0 || len(ds) > MaxRemovedArtifacts {
			return invalid("an artifact GC pass removes 1 to %d artifacts, not %d", MaxRemovedArtifacts, len(ds))
		}
		seen := make(map[string]bool, len(ds))
		for _, d := range ds {
			l, err := SHA256(d)
			if err != nil {
				return err
			}
			if l != d {
				return invalid("artifact digest %q is not in lower case", d)
			}
			if seen[d] {
				return invalid("artifact %s is named twice in one GC pass", d)
			}
			seen[d] = true
		}
		return nil
	case *relv1.Command_CreateRelease:
		return release(k.CreateRelease.GetRelease())
	case *relv1.Command_RegisterServer:
		s := k.RegisterServer.GetServer()
		if s == nil {
			return invalid("register_server carries no server")
		}
		return first(NodeID("server id", s.GetId()), hostPort("raft address", s.GetRaftAddr(), false),
			hostPort("gRPC address", s.GetGrpcAddr(), false), hostPort("HTTP address", s.GetHttpAddr(), true))
	case *relv1.Command_DeregisterServer:
		return NodeID("server id", k.DeregisterServer.GetId())
	case *relv1.Command_AgentUp:
		return agentUp(k.AgentUp)
	case *relv1.Command_AgentDown:
		return agentDown(k.AgentDown)
	case *relv1.Command_AgentSessions:
		return agentSessions(k.AgentSessions)
	case *relv1.Command_ReportBatch:
		rs := k.ReportBatch.GetReports()
		if len(rs) == 0 || len(rs) > MaxReportsBatch {
			return invalid("report batch holds %d reports: want 1-%d", len(rs), MaxReportsBatch)
		}
		for _, r := range rs {
			if r == nil {
				return invalid("report batch holds an empty report")
			}
			if err := first(NodeID("agent id", r.GetAgentId()), id("session id", r.GetSessionId()), Report(r.GetReport())); err != nil {
				return err
			}
		}
		return nil
	case *relv1.Command_CreateRollout:
		return createRollout(k.CreateRollout)
	case *relv1.Command_RolloutStep:
		return rolloutStep(k.RolloutStep, false)
	case *relv1.Command_RolloutStepDelta:
		return rolloutStep(k.RolloutStepDelta, true)
	case *relv1.Command_RolloutControl:
		c := k.RolloutControl
		switch c.GetAction() {
		case rollout.ActionPause, rollout.ActionResume, rollout.ActionApprove, rollout.ActionAbort:
		default:
			return invalid("rollout action %q: want pause, resume, approve or abort", c.GetAction())
		}
		return first(id("rollout id", c.GetRolloutId()), maxLen("reason", c.GetReason(), MaxDescriptionLen), positive("control time", c.GetAtUnixNano()))
	case *relv1.Command_InitCluster:
		return id("cluster id", k.InitCluster.GetClusterId())
	case *relv1.Command_AclBootstrap:
		return aclToken(k.AclBootstrap.GetToken())
	case *relv1.Command_CreateAclToken:
		return aclToken(k.CreateAclToken.GetToken())
	case *relv1.Command_DeleteAclToken:
		return Accessor(k.DeleteAclToken.GetAccessorId())
	case *relv1.Command_CreateJoinToken:
		return joinToken(k.CreateJoinToken.GetToken())
	case *relv1.Command_UseJoinToken:
		c := k.UseJoinToken
		return first(secretHash(c.GetSecretHash()), NodeID("agent id", c.GetAgentId()), positive("enrolment time", c.GetAtUnixNano()))
	case *relv1.Command_DeleteJoinToken:
		return Accessor(k.DeleteJoinToken.GetAccessorId())
	case *relv1.Command_RevokeAgent:
		r := k.RevokeAgent.GetRevocation()
		if r == nil {
			return invalid("revoke_agent carries no revocation")
		}
		return first(NodeID("agent id", r.GetAgentId()), positive("revocation time", r.GetRevokedUnixNano()),
			maxLen("reason", r.GetReason(), MaxDescriptionLen), maxLen("revoked by", r.GetRevokedBy(), MaxFactLen))
	case *relv1.Command_AuditRefusals:
		return auditRefusals(k.AuditRefusals)
	case *relv1.Command_CreateFreeze:
		return FreezeWindow(k.CreateFreeze.GetWindow(), time.Unix(0, cmd.GetStampedUnixNano()))
	case *relv1.Command_DeleteFreeze:
		return Name("freeze name", k.DeleteFreeze.GetName())
	case nil:
		return invalid("command has no kind")
	default:
		return invalid("unknown command %T", k)
	}
}

// MaxAuditRefusals bounds an audit_refusals entry: a server commits at
// most that many refusals per entry.
const MaxAuditRefusals = 500

// auditRefusals checks the refusals a server gathered: each bounded, so
// that a flood of bad requests (each carrying as much text as it likes)
// cannot make a huge entry.
func auditRefusals(c *relv1.AuditRefusals) error {
	rs := c.GetRefusals()
	if len(rs) == 0 && c.GetDropped() == 0 {
		return invalid("audit_refusals holds no refusal and drops none")
	}
	if len(rs) > MaxAuditRefusals {
		return invalid("audit_refusals holds %d refusals: at most %d", len(rs), MaxAuditRefusals)
	}
	if err := NodeID("server id", c.GetServer()); err != nil {
		return err
	}
	for _, r := range rs {
		if r == nil {
			return invalid("audit_refusals holds an empty refusal")
		}
		a := r.GetActor()
		if err := first(positive("refusal time", r.GetTimeUnixNano()),
			maxLen("method", r.GetMethod(), MaxFactLen), maxLen("code", r.GetCode(), MaxFactLen),
			maxLen("message", r.GetMessage(), MaxReasonLen), maxLen("request id", r.GetRequestId(), MaxFactLen),
			maxLen("app", r.GetApp(), MaxFactLen), maxLen("environment", r.GetEnv(), MaxFactLen),
			maxLen("server", r.GetServer(), MaxFactLen),
			maxLen("actor kind", a.GetKind(), MaxFactLen), maxLen("actor id", a.GetId(), MaxFactLen),
			maxLen("actor name", a.GetName(), MaxFactLen)); err != nil {
			return err
		}
	}
	return nil
}

// first returns the first non-nil error.
func first(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func release(r *relv1.Release) error {
	if r == nil {
		return invalid("create_release carries no release")
	}
	sum, err := SHA256(r.GetSha256())
	if err != nil {
		return err
	}
	if sum != r.GetSha256() {
		return invalid("sha256 %q is not lower-case", r.GetSha256())
	}
	if r.GetSize() < 0 {
		return invalid("release size %d is negative", r.GetSize())
	}
	return first(Name("app name", r.GetApp()), Version(r.GetVersion()), ArtifactURL(r.GetArtifactUrl()),
		Notes(r.GetNotes()), Commit(r.GetCommit()), Labels("label", r.GetLabels(), false),
		Changelog(r.GetChangelog()), BuildURL(r.GetBuildUrl()), CommitTime(r.GetCommitUnixNano(), r.GetCreatedUnixNano()))
}

// AgentUp checks one agent's connect, alone or as an item of a batch.
func AgentUp(c *relv1.AgentUp) error { return agentUp(c) }

// AgentDown checks one agent's disconnect, alone or as an item of a batch.
func AgentDown(d *relv1.AgentDown) error { return agentDown(d) }

func agentDown(d *relv1.AgentDown) error {
	return first(NodeID("agent id", d.GetAgentId()), id("session id", d.GetSessionId()), maxLen("reason", d.GetReason(), MaxReasonLen))
}

// agentSessions checks a batch: 1 to MaxAgentSessions items, each as the
// single kinds check it, naming the item that is wrong.
func agentSessions(c *relv1.AgentSessions) error {
	n := len(c.GetUp()) + len(c.GetDown())
	if n == 0 || n > MaxAgentSessions {
		return invalid("agent_sessions holds %d connects and disconnects: want 1-%d", n, MaxAgentSessions)
	}
	for i, u := range c.GetUp() {
		if err := agentUp(u); err != nil {
			return fmt.Errorf("agent_sessions up %d: %w", i, err)
		}
	}
	for i, d := range c.GetDown() {
		if d == nil {
			return invalid("agent_sessions down %d is empty", i)
		}
		if err := agentDown(d); err != nil {
			return fmt.Errorf("agent_sessions down %d: %w", i, err)
		}
	}
	return nil
}

func agentUp(c *relv1.AgentUp) error {
	a := c.GetAgent()
	if a == nil {
		return invalid("agent_up carries no agent")
	}
	if err := first(NodeID("agent id", a.GetId()), Labels("label", a.GetLabels(), false), maxLen("agent version", a.GetAgentVersion(), MaxFactLen),
		id("session id", a.GetSessionId()), NodeID("server id", a.GetServerId())); err != nil {
		return err
	}
	if nb := c.GetCertNotBeforeUnixNano(); nb < 0 {
		return invalid("agent_up certificate time %d is negative: stamp the certificate's NotBefore, or 0 for none", nb)
	}
	if f := a.GetFacts(); f != nil {
		for _, v := range []string{f.GetHostname(), f.GetOs(), f.GetPlatform(), f.GetPlatformVersion(), f.GetKernel(), f.GetArch()} {
			if err := maxLen("host fact", v, MaxFactLen); err != nil {
				return err
			}
		}
	}
	if len(c.GetInstalled()) > 1000 {
		return invalid("agent reports %d installed apps: the limit is 1000", len(c.GetInstalled()))
	}
	for _, r := range c.GetInstalled() {
		if err := Report(r); err != nil {
			return err
		}
	}
	return nil
}

// Report checks one app report from an agent.
func Report(r *relv1.AppReport) error {
	if r == nil {
		return invalid("empty app report")
	}
	if err := Name("app name", r.GetApp()); err != nil {
		return err
	}
	for _, v := range []string{r.GetVersion(), r.GetPreviousVersion()} {
		if v != "" {
			if err := Version(v); err != nil {
				return err
			}
		}
	}
	switch r.GetPhase() {
	case "", "downloading", "installing", "starting", "verifying", "healthy", "failed", "drifted":
	default:
		return invalid("report phase %q: want downloading, installing, starting, verifying, healthy, failed or drifted", r.GetPhase())
	}
	if r.GetRolloutId() != "" {
		if err := id("rollout id", r.GetRolloutId()); err != nil {
			return err
		}
	}
	return first(maxLen("report reason", r.GetReason(), MaxReasonLen), maxLen("report output", r.GetOutput(), MaxOutputLen))
}

func createRollout(c *relv1.CreateRollout) error {
	if c == nil {
		return invalid("empty create_rollout")
	}
	return first(rolloutRow(c.GetRollout()), ApprovalPolicy(c.GetRollout().GetApprovalPolicy()), desiredRows(c.GetDesired()), events(c.GetEvents()))
}

// rolloutStep checks an engine step; a delta (only the hosts that changed,
// matched by agent id) may not name a host twice.
func rolloutStep(c *relv1.RolloutStep, delta bool) error {
	if err := first(rolloutRow(c.GetRollout()), desiredRows(c.GetDesired()), events(c.GetEvents())); err != nil {
		return err
	}
	if delta {
		seen := make(map[string]bool, len(c.GetRollout().GetHosts()))
		for _, h := range c.GetRollout().GetHosts() {
			if seen[h.GetAgentId()] {
				return invalid("rollout step names host %q twice", h.GetAgentId())
			}
			seen[h.GetAgentId()] = true
		}
	}
	if c.GetStartRollback() != nil {
		return createRollout(c.GetStartRollback())
	}
	return nil
}

// MaxRemovedRollouts, MaxFoldedHistory and MaxRemovedAgents bound one
// retention pass, to keep its raft entry, and the work of applying it,
// small.
const (
	MaxRemovedRollouts = 1000
	MaxFoldedHistory   = 5000
	MaxRemovedAgents   = 1000
)

// MaxRemovedArtifacts bounds one artifact GC pass (65 bytes a digest: the
// entry stays under 70 KB).
const MaxRemovedArtifacts = 1000

func rolloutRow(r *relv1.Rollout) error {
	if r == nil {
		return invalid("command carries no rollout")
	}
	if err := first(id("rollout id", r.GetId()), Name("app name", r.GetApp()), Version(r.GetVersion()),
		Name("environment name", r.GetEnvironment()), maxLen("rollout reason", r.GetReason(), MaxReasonLen),
		maxLen("freeze overridden", r.GetFreezeOverridden(), MaxNameLen), maxLen("paused by freeze", r.GetPausedByFreeze(), MaxNameLen)); err != nil {
		return err
	}
	switch r.GetKind() {
	case rollout.KindDeploy, rollout.KindCatchUp, "":
	case rollout.KindRollback:
		if err := id("rolled back rollout id", r.GetRollbackOf()); err != nil {
			return err
		}
	default:
		return invalid("rollout kind %q: want deploy, rollback or catch_up", r.GetKind())
	}
	if st := r.GetState(); st != "" && !slices.Contains(rollout.States, st) {
		return invalid("rollout state %q is not one Rel knows", r.GetState())
	}
	if len(r.GetHosts()) > MaxRolloutHosts {
		return invalid("rollout has %d hosts: the limit is %d", len(r.GetHosts()), MaxRolloutHosts)
	}
	for _, h := range r.GetHosts() {
		if h == nil {
			return invalid("rollout holds an empty host")
		}
		if err := first(NodeID("agent id", h.GetAgentId()), maxLen("host reason", h.GetReason(), MaxReasonLen)); err != nil {
			return err
		}
		for _, v := range []string{h.GetPreviousVersion(), h.GetTargetVersion()} {
			if v != "" {
				if err := Version(v); err != nil {
					return err
				}
			}
		}
		if !slices.Contains(rollout.HostStates, h.GetState()) {
			return invalid("host state %q is not one Rel knows", h.GetState())
		}
	}
	return nil
}

func desiredRows(ds []*relv1.Desired) error {
	if len(ds) > MaxRolloutHosts {
		return invalid("%d desired rows: the limit is %d", len(ds), MaxRolloutHosts)
	}
	for _, d := range ds {
		if d == nil {
			return invalid("empty desired row")
		}
		if err := first(NodeID("agent id", d.GetAgentId()), Name("app name", d.GetApp()), Version(d.GetVersion()), ArtifactURL(d.GetArtifactUrl())); err != nil {
			return err
		}
		if _, err := SHA256(d.GetSha256()); err != nil {
			return err
		}
		if d.GetRolloutId() != "" {
			if err := id("rollout id", d.GetRolloutId()); err != nil {
				return err
			}
		}
	}
	return nil
}

func events(es []*relv1.RolloutEvent) error {
	if len(es) > MaxEventsPerStep {
		return invalid("%d events: the limit is %d", len(es), MaxEventsPerStep)
	}
	for _, e := range es {
		if e == nil {
			return invalid("empty rollout event")
		}
		if err := first(id("event rollout id", e.GetRolloutId()), maxLen("event type", e.GetType(), MaxIDLen),
			maxLen("event host", e.GetHost(), MaxIDLen), maxLen("event message", e.GetMessage(), MaxReasonLen)); err != nil {
			return err
		}
	}
	return nil
}

func aclToken(t *relv1.ACLToken) error {
	if t == nil {
		return invalid("command carries no token")
	}
	if len(t.GetRoles()) == 0 {
		return invalid("a token needs at least one role (%s)", auth.RoleNames())
	}
	for _, r := range t.GetRoles() {
		if _, err := auth.ParseRole(r); err != nil {
			return invalid("%v", err)
		}
	}
	if len(t.GetApps()) > MaxGlobs || len(t.GetEnvironments()) > MaxGlobs {
		return invalid("a token may name at most %d app and %d environment globs", MaxGlobs, MaxGlobs)
	}
	if err := auth.CheckGlobs("app", t.GetApps()); err != nil {
		return invalid("%v", err)
	}
	if err := auth.CheckGlobs("environment", t.GetEnvironments()); err != nil {
		return invalid("%v", err)
	}
	if t.GetExpiresUnixNano() < 0 {
		return invalid("token expiry is negative")
	}
	return first(Accessor(t.GetAccessorId()), secretHash(t.GetSecretHash()), TokenName(t.GetName()),
		maxLen("created by", t.GetCreatedBy(), MaxFactLen), positive("token creation time", t.GetCreatedUnixNano()))
}

// TokenName checks an operator token's name: what it is for, e.g. "ci-web".
func TokenName(s string) error {
	if s == "" {
		return invalid("token name is empty: say what it is for, e.g. --name ci-web")
	}
	return maxLen("token name", s, MaxNameLen)
}

func joinToken(t *relv1.JoinToken) error {
	if t == nil {
		return invalid("command carries no join token")
	}
	if t.GetUses() == 0 || t.GetUses() > MaxTokenUses {
		return invalid("join token uses %d: want 1-%d", t.GetUses(), MaxTokenUses)
	}
	if t.GetExpiresUnixNano() <= t.GetCreatedUnixNano() {
		return invalid("join token expires before it is created")
	}
	if len(t.GetUsedBy()) > 0 {
		return invalid("a new join token has not been used")
	}
	if len(t.GetNodeIds()) > MaxTokenUses {
		return invalid("a join token may name at most %d node ids", MaxTokenUses)
	}
	for _, id := range t.GetNodeIds() {
		if err := NodeID("node id", id); err != nil {
			return err
		}
	}
	return first(Accessor(t.GetAccessorId()), secretHash(t.GetSecretHash()), Description(t.GetDescription()),
		Labels("label", t.GetLabels(), false), maxLen("created by", t.GetCreatedBy(), MaxFactLen),
		positive("join token creation time", t.GetCreatedUnixNano()))
}

// FreezeWindow checks a freeze window at time now: its name, the size of
// its fields, and what freeze.Validate checks (scope, times, cron
// expressions, time zone, length), each error naming the field.
func FreezeWindow(w *relv1.FreezeWindow, now time.Time) error {
	if w == nil {
		return invalid("create_freeze carries no window")
	}
	if err := Name("freeze name", w.GetName()); err != nil {
		return err
	}
	if len(w.GetApps()) > MaxGlobs || len(w.GetEnvironments()) > MaxGlobs {
		return invalid("a freeze window has at most %d app and %d environment globs", MaxGlobs, MaxGlobs)
	}
	for _, g := range append(append([]string{}, w.GetApps()...), w.GetEnvironments()...) {
		if err := maxLen("glob", g, MaxNameLen); err != nil {
			return err
		}
	}
	if err := first(maxLen("cron start", w.GetCronStart(), MaxFactLen), maxLen("cron end", w.GetCronEnd(), MaxFactLen),
		maxLen("time zone", w.GetTimeZone(), MaxFactLen), Description(w.GetReason())); err != nil {
		return err
	}
	if err := freeze.Validate(w, now); err != nil {
		return invalid("%s", freeze.Reason(err))
	}
	return nil
}
