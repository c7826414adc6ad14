package validate

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

const (
	testSHA      = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	testHash     = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	testAccessor = "0123456789abcdef"
)

func testRollout() *relv1.Rollout {
	return &relv1.Rollout{
		Id: "ro-1", App: "web", Version: "1.0.0", Environment: "prod", Kind: "deploy", State: "running",
		Hosts: []*relv1.RolloutHost{{AgentId: "web-1", State: "pending", TargetVersion: "1.0.0", PreviousVersion: "0.9.0"}},
	}
}

func testDesired() []*relv1.Desired {
	return []*relv1.Desired{{AgentId: "web-1", App: "web", Version: "1.0.0", Sha256: testSHA, ArtifactUrl: "rel://sha256/" + testSHA, RolloutId: "ro-1"}}
}

func testEvents() []*relv1.RolloutEvent {
	return []*relv1.RolloutEvent{{RolloutId: "ro-1", Seq: 1, Type: "started", Host: "web-1", Message: "started"}}
}

func testReport() *relv1.AppReport {
	return &relv1.AppReport{App: "web", Version: "1.0.0", PreviousVersion: "0.9.0", Phase: "healthy", RolloutId: "ro-1", Reason: "ok", Output: "done", AtUnixNano: 5}
}

func testACLToken() *relv1.ACLToken {
	return &relv1.ACLToken{AccessorId: testAccessor, SecretHash: testHash, Name: "ci-web", Roles: []string{"deployer"},
		Apps: []string{"web*"}, Environments: []string{"prod"}, CreatedUnixNano: 1, CreatedBy: "client test-admin"}
}

func testJoinToken() *relv1.JoinToken {
	return &relv1.JoinToken{AccessorId: testAccessor, SecretHash: testHash, Description: "web hosts", CreatedUnixNano: 1,
		ExpiresUnixNano: 2, Uses: 3, UsesLeft: 3, Labels: map[string]string{"env": "prod"}, CreatedBy: "client test-admin"}
}

// validCommands is one valid command of every kind, keyed by the name of
// its field in Command's oneof.
func validCommands() map[string]*relv1.Command {
	cmd := func(k any) *relv1.Command {
		c := &relv1.Command{StampedUnixNano: 1}
		switch k := k.(type) {
		case *relv1.Command_CreateApp:
			c.Kind = k
		case *relv1.Command_CreateEnvironment:
			c.Kind = k
		case *relv1.Command_UpdateEnvironment:
			c.Kind = k
		case *relv1.Command_RemoveRollouts:
			c.Kind = k
		case *relv1.Command_FoldHistory:
			c.Kind = k
		case *relv1.Command_PruneDeployments:
			c.Kind = k
		case *relv1.Command_RemoveAgents:
			c.Kind = k
		case *relv1.Command_DeleteRelease:
			c.Kind = k
		case *relv1.Command_RemoveArtifacts:
			c.Kind = k
		case *relv1.Command_CreateLifecycle:
			c.Kind = k
		case *relv1.Command_UpdateLifecycle:
			c.Kind = k
		case *relv1.Command_DeleteLifecycle:
			c.Kind = k
		case *relv1.Command_SetAppLifecycle:
			c.Kind = k
		case *relv1.Command_BlockRelease:
			c.Kind = k
		case *relv1.Command_DeleteEnvironment:
			c.Kind = k
		case *relv1.Command_CreateRelease:
			c.Kind = k
		case *relv1.Command_RegisterServer:
			c.Kind = k
		case *relv1.Command_DeregisterServer:
			c.Kind = k
		case *relv1.Command_AgentUp:
			c.Kind = k
		case *relv1.Command_AgentDown:
			c.Kind = k
		case *relv1.Command_ReportBatch:
			c.Kind = k
		case *relv1.Command_AgentSessions:
			c.Kind = k
		case *relv1.Command_CreateRollout:
			c.Kind = k
		case *relv1.Command_RolloutStep:
			c.Kind = k
		case *relv1.Command_RolloutStepDelta:
			c.Kind = k
		case *relv1.Command_RolloutControl:
			c.Kind = k
		case *relv1.Command_InitCluster:
			c.Kind = k
		case *relv1.Command_AclBootstrap:
			c.Kind = k
		case *relv1.Command_CreateAclToken:
			c.Kind = k
		case *relv1.Command_DeleteAclToken:
			c.Kind = k
		case *relv1.Command_CreateJoinToken:
			c.Kind = k
		case *relv1.Command_UseJoinToken:
			c.Kind = k
		case *relv1.Command_DeleteJoinToken:
			c.Kind = k
		case *relv1.Command_CreateFreeze:
			c.Kind = k
		case *relv1.Command_DeleteFreeze:
			c.Kind = k
		case *relv1.Command_TrimEvents:
			c.Kind = k
		case *relv1.Command_CreateWebhook:
			c.Kind = k
		case *relv1.Command_DeleteWebhook:
			c.Kind = k
		case *relv1.Command_WebhookProgress:
			c.Kind = k
		case *relv1.Command_RedeliverWebhook:
			c.Kind = k
		case *relv1.Command_RevokeAgent:
			c.Kind = k
		case *relv1.Command_AuditRefusals:
			c.Kind = k
		case *relv1.Command_AuditArchived:
			c.Kind = k
		case *relv1.Command_TrimAudit:
			c.Kind = k
		default:
			panic("unknown kind")
		}
		return c
	}
	bootstrap := testACLToken()
	bootstrap.Roles, bootstrap.Apps, bootstrap.Environments = []string{"admin"}, nil, nil
	m := map[string]*relv1.Command{
		"create_app": cmd(&relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "web", Description: "the web tier", CreatedUnixNano: 1}}}),
		"create_environment": cmd(&relv1.Command_CreateEnvironment{CreateEnvironment: &relv1.CreateEnvironment{Environment: &relv1.Environment{
			Name: "prod", Selector: map[string]string{"env": "prod"}, CreatedUnixNano: 1}}}),
		"update_environment": cmd(&relv1.Command_UpdateEnvironment{UpdateEnvironment: &relv1.UpdateEnvironment{Environment: &relv1.Environment{
			Name: "prod", Selector: map[string]string{"env": "prod", "tier": "web"}, CreatedUnixNano: 1}, ExpectModifyIndex: 4, Joining: []string{"web-2"}, Leaving: []string{"web-1"}}}),
		"delete_environment": cmd(&relv1.Command_DeleteEnvironment{DeleteEnvironment: &relv1.DeleteEnvironment{Name: "prod"}}),
		"create_lifecycle":   cmd(&relv1.Command_CreateLifecycle{CreateLifecycle: &relv1.CreateLifecycle{Lifecycle: testLifecycle()}}),
		"update_lifecycle":   cmd(&relv1.Command_UpdateLifecycle{UpdateLifecycle: &relv1.UpdateLifecycle{Lifecycle: testLifecycle()}}),
		"delete_lifecycle":   cmd(&relv1.Command_DeleteLifecycle{DeleteLifecycle: &relv1.DeleteLifecycle{Name: "std"}}),
		"set_app_lifecycle":  cmd(&relv1.Command_SetAppLifecycle{SetAppLifecycle: &relv1.SetAppLifecycle{App: "web", Lifecycle: "std"}}),
		"block_release":      cmd(&relv1.Command_BlockRelease{BlockRelease: &relv1.BlockRelease{App: "web", Version: "1.2.0", Blocked: true, Reason: "CVE", AtUnixNano: 5}}),
		"remove_artifacts":   cmd(&relv1.Command_RemoveArtifacts{RemoveArtifacts: &relv1.RemoveArtifacts{Digests: []string{testSHA, strings.Repeat("b", 64)}}}),
		"remove_rollouts":    cmd(&relv1.Command_RemoveRollouts{RemoveRollouts: &relv1.RemoveRollouts{RolloutIds: []string{"ro-1", "ro-2"}}}),
		"fold_history":       cmd(&relv1.Command_FoldHistory{FoldHistory: &relv1.FoldHistory{CutoffUnixNano: 10, MaxEntries: 5000}}),
		"prune_deployments":  cmd(&relv1.Command_PruneDeployments{PruneDeployments: &relv1.PruneDeployments{CutoffUnixNano: 10, MaxEntries: 5000}}),
		"remove_agents":      cmd(&relv1.Command_RemoveAgents{RemoveAgents: &relv1.RemoveAgents{AgentIds: []string{"web-1", "web-2"}, CutoffUnixNano: 10, AtUnixNano: 20}}),
		"delete_release":     cmd(&relv1.Command_DeleteRelease{DeleteRelease: &relv1.DeleteRelease{App: "web", Version: "1.0.0"}}),
		"create_release": cmd(&relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: &relv1.Release{
			App: "web", Version: "1.0.0", ArtifactUrl: "https://artifacts.example.com/web-1.0.0.tgz", Sha256: testSHA, Size: 10,
			Notes: "notes", Commit: "abc123", Labels: map[string]string{"build": "7"}, CreatedUnixNano: 1}}}),
		"register_server": cmd(&relv1.Command_RegisterServer{RegisterServer: &relv1.RegisterServer{Server: &relv1.Server{
			Id: "s1", RaftAddr: "127.0.0.1:7401", GrpcAddr: "127.0.0.1:7400", HttpAddr: "127.0.0.1:7480"}}}),
		"deregister_server": cmd(&relv1.Command_DeregisterServer{DeregisterServer: &relv1.DeregisterServer{Id: "s1"}}),
		"agent_up": cmd(&relv1.Command_AgentUp{AgentUp: &relv1.AgentUp{
			Agent: &relv1.Agent{Id: "web-1", Labels: map[string]string{"env": "prod"}, AgentVersion: "1.0", SessionId: "sess-1", ServerId: "s1",
				Facts: &relv1.HostFacts{Hostname: "web-1", Os: "linux"}},
			Installed: []*relv1.AppReport{testReport()}}}),
		"agent_down": cmd(&relv1.Command_AgentDown{AgentDown: &relv1.AgentDown{AgentId: "web-1", SessionId: "sess-1", AtUnixNano: 1, Reason: "stream closed"}}),
		"agent_sessions": cmd(&relv1.Command_AgentSessions{AgentSessions: &relv1.AgentSessions{
			Up: []*relv1.AgentUp{
				{Agent: &relv1.Agent{Id: "web-1", Labels: map[string]string{"env": "prod"}, SessionId: "sess-1", ServerId: "s1"},
					Installed: []*relv1.AppReport{testReport()}, CertNotBeforeUnixNano: 1},
				{Agent: &relv1.Agent{Id: "web-2", SessionId: "sess-2", ServerId: "s1"}},
			},
			Down: []*relv1.AgentDown{{AgentId: "web-3", SessionId: "sess-3", AtUnixNano: 1, Reason: "stream closed"}}}}),
		"report_batch": cmd(&relv1.Command_ReportBatch{ReportBatch: &relv1.ReportBatch{Reports: []*relv1.AgentReport{
			{AgentId: "web-1", SessionId: "sess-1", Report: testReport()}}}}),
		"create_rollout": cmd(&relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: testRollout(), Desired: testDesired(), Events: testEvents()}}),
		"rollout_step": cmd(&relv1.Command_RolloutStep{RolloutStep: &relv1.RolloutStep{Rollout: testRollout(), ExpectModifyIndex: 3,
			Desired: testDesired(), Events: testEvents()}}),
		"rollout_step_delta": cmd(&relv1.Command_RolloutStepDelta{RolloutStepDelta: &relv1.RolloutStep{Rollout: testRollout(), ExpectModifyIndex: 3,
			Desired: testDesired(), Events: testEvents()}}),
		"rollout_control":   cmd(&relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{RolloutId: "ro-1", Action: "pause", AtUnixNano: 1, Reason: "lunch"}}),
		"init_cluster":      cmd(&relv1.Command_InitCluster{InitCluster: &relv1.InitCluster{ClusterId: "cl-0123"}}),
		"acl_bootstrap":     cmd(&relv1.Command_AclBootstrap{AclBootstrap: &relv1.ACLBootstrap{Token: bootstrap}}),
		"create_acl_token":  cmd(&relv1.Command_CreateAclToken{CreateAclToken: &relv1.CreateACLToken{Token: testACLToken()}}),
		"delete_acl_token":  cmd(&relv1.Command_DeleteAclToken{DeleteAclToken: &relv1.DeleteACLToken{AccessorId: testAccessor}}),
		"create_join_token": cmd(&relv1.Command_CreateJoinToken{CreateJoinToken: &relv1.CreateJoinToken{Token: testJoinToken()}}),
		"use_join_token":    cmd(&relv1.Command_UseJoinToken{UseJoinToken: &relv1.UseJoinToken{SecretHash: testHash, AgentId: "web-1", AtUnixNano: 1}}),
		"delete_join_token": cmd(&relv1.Command_DeleteJoinToken{DeleteJoinToken: &relv1.DeleteJoinToken{AccessorId: testAccessor}}),
		"create_freeze":     cmd(&relv1.Command_CreateFreeze{CreateFreeze: &relv1.CreateFreeze{Window: testFreeze()}}),
		"delete_freeze":     cmd(&relv1.Command_DeleteFreeze{DeleteFreeze: &relv1.DeleteFreeze{Name: "weekend"}}),
		"trim_events":       cmd(&relv1.Command_TrimEvents{TrimEvents: &relv1.TrimEvents{BeforeSeq: 10, CutoffUnixNano: 5, MaxEvents: 100}}),
		"create_webhook": cmd(&relv1.Command_CreateWebhook{CreateWebhook: &relv1.CreateWebhook{Webhook: &relv1.Webhook{Name: "chat", Url: "https://hooks.example.com/x",
			Events: []string{"rollout.*", "release.*"}, Format: "slack", Secret: []byte("s3cret")}}}),
		"delete_webhook":    cmd(&relv1.Command_DeleteWebhook{DeleteWebhook: &relv1.DeleteWebhook{Name: "chat"}}),
		"webhook_progress":  cmd(&relv1.Command_WebhookProgress{WebhookProgress: &relv1.WebhookProgress{Name: "chat", CreateIndex: 3, DeliveredSeq: 7}}),
		"redeliver_webhook": cmd(&relv1.Command_RedeliverWebhook{RedeliverWebhook: &relv1.RedeliverWebhook{Name: "chat", Seq: 7}}),
		"revoke_agent": cmd(&relv1.Command_RevokeAgent{RevokeAgent: &relv1.RevokeAgent{Revocation: &relv1.AgentRevocation{
			AgentId: "web-1", RevokedUnixNano: 1, RevokedBy: "client test-admin", Reason: "host stolen"}}}),
		"audit_refusals": cmd(&relv1.Command_AuditRefusals{AuditRefusals: &relv1.AuditRefusals{Server: "s1", Dropped: 2, Refusals: []*relv1.AuditRefusal{
			{TimeUnixNano: 1, Actor: &relv1.Actor{Kind: "token", Id: testAccessor, Name: "ci"}, Method: "StartRollout", Code: "PermissionDenied", Message: "no", App: "web", Env: "prod", Server: "s1"}}}}),
		"audit_archived": cmd(&relv1.Command_AuditArchived{AuditArchived: &relv1.AuditArchived{Seq: 12, Hash: make([]byte, 32)}}),
		"trim_audit":     cmd(&relv1.Command_TrimAudit{TrimAudit: &relv1.TrimAudit{CutoffUnixNano: 10, MaxRecords: 5000}}),
	}
	for k, v := range approvalValidCommands() {
		m[k] = v
	}
	return m
}

// oneofKinds lists the names of Command's kinds from its descriptor, so a
// command kind added later without tests here fails TestCommandCoversEveryKind.
func oneofKinds() []string {
	var out []string
	fields := (&relv1.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("kind").Fields()
	for i := 0; i < fields.Len(); i++ {
		out = append(out, string(fields.Get(i).Name()))
	}
	return out
}

func TestCommandCoversEveryKind(t *testing.T) {
	valid := validCommands()
	invalid := map[string]bool{}
	for _, tc := range invalidCommandCases() {
		invalid[tc.kind] = true
	}
	for _, kind := range oneofKinds() {
		if valid[kind] == nil {
			t.Errorf("command kind %s has no valid example in validCommands: add one", kind)
		}
		if !invalid[kind] {
			t.Errorf("command kind %s has no invalid cases in invalidCommandCases: add them", kind)
		}
	}
}

func TestCommandValid(t *testing.T) {
	for kind, cmd := range validCommands() {
		if err := Command(cmd); err != nil {
			t.Errorf("%s: valid command refused: %v", kind, err)
		}
		// And the same after a round trip through the wire format, which
		// is what a peer's Apply carries.
		b, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		var back relv1.Command
		if err := proto.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if err := Command(&back); err != nil {
			t.Errorf("%s: decoded valid command refused: %v", kind, err)
		}
	}
	// Optional parts left out are fine.
	c := validCommands()["rollout_step"]
	step := c.GetRolloutStep()
	step.Desired, step.Events = nil, nil
	step.StartRollback = &relv1.CreateRollout{Rollout: testRollout()}
	step.StartRollback.Rollout.Kind, step.StartRollback.Rollout.RollbackOf = "rollback", "ro-0"
	if err := Command(c); err != nil {
		t.Errorf("rollout step starting a rollback: %v", err)
	}
	// A delta step that changes only the rollout's header carries no host.
	c = validCommands()["rollout_step_delta"]
	c.GetRolloutStepDelta().Rollout.Hosts = nil
	if err := Command(c); err != nil {
		t.Errorf("delta step without hosts: %v", err)
	}
	c = validCommands()["register_server"]
	c.GetRegisterServer().Server.HttpAddr = ""
	if err := Command(c); err != nil {
		t.Errorf("server without an HTTP address: %v", err)
	}
}

type invalidCase struct {
	kind   string
	name   string
	mutate func(c *relv1.Command)
	want   string
}

func invalidCommandCases() []invalidCase {
	return append(baseInvalidCommandCases(), approvalInvalidCommandCases()...)
}

func baseInvalidCommandCases() []invalidCase {
	long := func(n int) string { return strings.Repeat("x", n) }
	return []invalidCase{
		{"create_freeze", "no window", func(c *relv1.Command) { c.GetCreateFreeze().Window = nil }, "carries no window"},
		{"create_freeze", "bad name", func(c *relv1.Command) { c.GetCreateFreeze().Window.Name = "Week End" }, `freeze name "Week End"`},
		{"create_freeze", "bad cron", func(c *relv1.Command) { c.GetCreateFreeze().Window.CronEnd = "0 8 * * MONDAYS" }, "cron end"},
		{"create_freeze", "bad time zone", func(c *relv1.Command) { c.GetCreateFreeze().Window.TimeZone = "Europe/Atlantis" }, "time zone"},
		{"create_freeze", "no apps", func(c *relv1.Command) { c.GetCreateFreeze().Window.Apps = nil }, "apps is empty"},
		{"create_freeze", "no environments", func(c *relv1.Command) { c.GetCreateFreeze().Window.Environments = nil }, "environments is empty"},
		{"create_freeze", "too many globs", func(c *relv1.Command) { c.GetCreateFreeze().Window.Apps = make([]string, MaxGlobs+1) }, "at most"},
		{"create_freeze", "long reason", func(c *relv1.Command) { c.GetCreateFreeze().Window.Reason = long(MaxDescriptionLen + 1) }, "description is"},
		{"create_freeze", "end before start", func(c *relv1.Command) {
			w := c.GetCreateFreeze().Window
			w.CronStart, w.CronEnd, w.StartUnixNano, w.EndUnixNano = "", "", 2e9, 1e9
		}, "is not after start"},
		{"delete_freeze", "bad name", func(c *relv1.Command) { c.GetDeleteFreeze().Name = "" }, "freeze name is empty"},
		{"trim_events", "no bound", func(c *relv1.Command) { c.GetTrimEvents().MaxEvents = 0 }, "removes 1 to 5000 events, not 0"},
		{"trim_events", "too many", func(c *relv1.Command) { c.GetTrimEvents().MaxEvents = 5001 }, "removes 1 to 5000 events, not 5001"},
		{"trim_events", "nothing before", func(c *relv1.Command) { c.GetTrimEvents().BeforeSeq = 1 }, "removes nothing"},
		{"trim_events", "no cutoff", func(c *relv1.Command) { c.GetTrimEvents().CutoffUnixNano = 0 }, "cutoff is not stamped"},
		{"create_webhook", "bad name", func(c *relv1.Command) { c.GetCreateWebhook().GetWebhook().Name = "" }, "webhook name is empty"},
		{"create_webhook", "ftp URL", func(c *relv1.Command) { c.GetCreateWebhook().GetWebhook().Url = "ftp://x/y" }, "must be http or https"},
		{"create_webhook", "no host", func(c *relv1.Command) { c.GetCreateWebhook().GetWebhook().Url = "https:///y" }, "has no host"},
		{"create_webhook", "credentials", func(c *relv1.Command) { c.GetCreateWebhook().GetWebhook().Url = "https://u:p@x/y" }, "carries credentials"},
		{"create_webhook", "format", func(c *relv1.Command) { c.GetCreateWebhook().GetWebhook().Format = "xml" }, "want json or slack"},
		{"create_webhook", "no events", func(c *relv1.Command) { c.GetCreateWebhook().GetWebhook().Events = nil }, "1 to 32 event globs"},
		{"create_webhook", "unknown glob", func(c *relv1.Command) { c.GetCreateWebhook().GetWebhook().Events = []string{"rollouts.*"} }, "matches no event type"},
		{"delete_webhook", "bad name", func(c *relv1.Command) { c.GetDeleteWebhook().Name = "" }, "webhook name is empty"},
		{"webhook_progress", "bad name", func(c *relv1.Command) { c.GetWebhookProgress().Name = "" }, "webhook name is empty"},
		{"redeliver_webhook", "no seq", func(c *relv1.Command) { c.GetRedeliverWebhook().Seq = 0 }, "names no event seq"},
		{"create_app", "no app", func(c *relv1.Command) { c.GetCreateApp().App = nil }, "carries no app"},
		{"create_app", "no message", func(c *relv1.Command) { c.Kind = &relv1.Command_CreateApp{} }, "carries no app"},
		{"create_app", "bad name", func(c *relv1.Command) { c.GetCreateApp().App.Name = "Web_1" }, `app name "Web_1"`},
		{"create_app", "long description", func(c *relv1.Command) { c.GetCreateApp().App.Description = long(MaxDescriptionLen + 1) }, "description is"},

		{"create_environment", "no environment", func(c *relv1.Command) { c.GetCreateEnvironment().Environment = nil }, "carries no environment"},
		{"create_environment", "bad name", func(c *relv1.Command) { c.GetCreateEnvironment().Environment.Name = "" }, "environment name is empty"},
		{"create_environment", "empty selector", func(c *relv1.Command) { c.GetCreateEnvironment().Environment.Selector = nil }, "selector is empty"},
		{"create_environment", "bad selector key", func(c *relv1.Command) {
			c.GetCreateEnvironment().Environment.Selector = map[string]string{"bad key": "x"}
		}, `selector key "bad key"`},
		{"create_environment", "long description", func(c *relv1.Command) {
			c.GetCreateEnvironment().Environment.Description = long(MaxDescriptionLen + 1)
		}, "description is"},

		{"update_environment", "no environment", func(c *relv1.Command) { c.GetUpdateEnvironment().Environment = nil }, "carries no environment"},
		{"update_environment", "bad name", func(c *relv1.Command) { c.GetUpdateEnvironment().Environment.Name = "" }, "environment name is empty"},
		{"update_environment", "empty selector", func(c *relv1.Command) { c.GetUpdateEnvironment().Environment.Selector = nil }, "selector is empty"},
		{"update_environment", "long description", func(c *relv1.Command) {
			c.GetUpdateEnvironment().Environment.Description = long(MaxDescriptionLen + 1)
		}, "description is"},
		{"update_environment", "no expected index", func(c *relv1.Command) { c.GetUpdateEnvironment().ExpectModifyIndex = 0 }, "no index to expect"},
		{"update_environment", "bad host id", func(c *relv1.Command) { c.GetUpdateEnvironment().Joining = []string{"bad host"} }, `agent id "bad host"`},

		{"delete_environment", "bad name", func(c *relv1.Command) { c.GetDeleteEnvironment().Name = "" }, "environment name is empty"},
		{"delete_environment", "no message", func(c *relv1.Command) { c.Kind = &relv1.Command_DeleteEnvironment{} }, "environment name is empty"},
		{"remove_rollouts", "none", func(c *relv1.Command) { c.GetRemoveRollouts().RolloutIds = nil }, "a retention pass removes 1 to 1000 rollouts, not 0"},
		{"create_lifecycle", "no phases", func(c *relv1.Command) { c.GetCreateLifecycle().Lifecycle.Phases = nil }, "has no phases"},
		{"create_lifecycle", "bad name", func(c *relv1.Command) { c.GetCreateLifecycle().Lifecycle.Name = "Std!" }, "lifecycle name"},
		{"update_lifecycle", "env in two phases", func(c *relv1.Command) {
			c.GetUpdateLifecycle().Lifecycle.Phases[1].Environments = []string{"dev"}
		}, "environment dev is in two phases, dev and prod"},
		{"update_lifecycle", "min above size", func(c *relv1.Command) {
			p := c.GetUpdateLifecycle().Lifecycle.Phases[1]
			p.Progress, p.MinEnvironments = "min", 3
		}, "needs min 3 of its 2 environments"},
		{"delete_lifecycle", "empty", func(c *relv1.Command) { c.GetDeleteLifecycle().Name = "" }, "lifecycle name is empty"},
		{"set_app_lifecycle", "bad app", func(c *relv1.Command) { c.GetSetAppLifecycle().App = "" }, "app name is empty"},
		{"block_release", "no reason", func(c *relv1.Command) { c.GetBlockRelease().Reason = " " }, "a block needs a reason"},
		{"block_release", "not stamped", func(c *relv1.Command) { c.GetBlockRelease().AtUnixNano = 0 }, "block_release time is not stamped"},
		{"remove_artifacts", "none", func(c *relv1.Command) { c.GetRemoveArtifacts().Digests = nil }, "an artifact GC pass removes 1 to 1000 artifacts, not 0"},
		{"remove_artifacts", "too many", func(c *relv1.Command) {
			c.GetRemoveArtifacts().Digests = make([]string, 1001)
		}, "an artifact GC pass removes 1 to 1000 artifacts, not 1001"},
		{"remove_artifacts", "bad digest", func(c *relv1.Command) { c.GetRemoveArtifacts().Digests = []string{"abc"} }, `sha256 "abc" is not 64 hex digits`},
		{"remove_artifacts", "upper case", func(c *relv1.Command) { c.GetRemoveArtifacts().Digests = []string{strings.Repeat("B", 64)} }, "is not in lower case"},
		{"remove_artifacts", "twice", func(c *relv1.Command) { c.GetRemoveArtifacts().Digests = []string{testSHA, testSHA} }, "named twice"},
		{"remove_rollouts", "bad id", func(c *relv1.Command) { c.GetRemoveRollouts().RolloutIds = []string{"ro 1"} }, "rollout id"},
		{"fold_history", "none", func(c *relv1.Command) { c.GetFoldHistory().MaxEntries = 0 }, "folds 1 to 5000 entries, not 0"},
		{"fold_history", "too many", func(c *relv1.Command) { c.GetFoldHistory().MaxEntries = 5001 }, "folds 1 to 5000 entries, not 5001"},
		{"fold_history", "no cutoff", func(c *relv1.Command) { c.GetFoldHistory().CutoffUnixNano = 0 }, "no cutoff"},
		{"prune_deployments", "none", func(c *relv1.Command) { c.GetPruneDeployments().MaxEntries = 0 }, "removes 1 to 5000 records, not 0"},
		{"prune_deployments", "too many", func(c *relv1.Command) { c.GetPruneDeployments().MaxEntries = 5001 }, "removes 1 to 5000 records, not 5001"},
		{"prune_deployments", "no cutoff", func(c *relv1.Command) { c.GetPruneDeployments().CutoffUnixNano = 0 }, "no cutoff"},
		{"audit_archived", "record 0", func(c *relv1.Command) { c.GetAuditArchived().Seq = 0 }, "names record 0"},
		{"audit_archived", "no hash", func(c *relv1.Command) { c.GetAuditArchived().Hash = nil }, "hash is 0 bytes"},
		{"audit_archived", "short hash", func(c *relv1.Command) { c.GetAuditArchived().Hash = []byte("abc") }, "hash is 3 bytes"},
		{"trim_audit", "none", func(c *relv1.Command) { c.GetTrimAudit().MaxRecords = 0 }, "removes 1 to 5000 records, not 0"},
		{"trim_audit", "too many", func(c *relv1.Command) { c.GetTrimAudit().MaxRecords = 5001 }, "removes 1 to 5000 records, not 5001"},
		{"trim_audit", "no cutoff", func(c *relv1.Command) { c.GetTrimAudit().CutoffUnixNano = 0 }, "cutoff is not stamped"},
		{"create_release", "long changelog", func(c *relv1.Command) { c.GetCreateRelease().Release.Changelog = strings.Repeat("x", 64<<10+1) }, "changelog is 65537 bytes long"},
		{"create_release", "ftp build URL", func(c *relv1.Command) { c.GetCreateRelease().Release.BuildUrl = "ftp://ci/1" }, "absolute http:// or https:// URL"},
		{"create_release", "relative build URL", func(c *relv1.Command) { c.GetCreateRelease().Release.BuildUrl = "/builds/1" }, "absolute http:// or https:// URL"},
		{"create_release", "commit after creation", func(c *relv1.Command) {
			r := c.GetCreateRelease().Release
			r.CommitUnixNano = r.CreatedUnixNano + 1
		}, "commit time is after the release's creation"},
		{"remove_agents", "none", func(c *relv1.Command) { c.GetRemoveAgents().AgentIds = nil }, "removes 1 to 1000 agents, not 0"},
		{"remove_agents", "too many", func(c *relv1.Command) { c.GetRemoveAgents().AgentIds = make([]string, 1001) }, "removes 1 to 1000 agents, not 1001"},
		{"remove_agents", "bad id", func(c *relv1.Command) { c.GetRemoveAgents().AgentIds = []string{"web 1"} }, "agent id"},
		{"remove_agents", "no time", func(c *relv1.Command) { c.GetRemoveAgents().AtUnixNano = 0 }, "needs its cutoff and its time"},
		{"remove_agents", "cutoff after time", func(c *relv1.Command) { c.GetRemoveAgents().CutoffUnixNano = 30 }, "cutoff is after its time"},
		{"delete_release", "no app", func(c *relv1.Command) { c.GetDeleteRelease().App = "" }, "app name"},
		{"delete_release", "bad version", func(c *relv1.Command) { c.GetDeleteRelease().Version = "1.0 0" }, "version"},

		{"create_release", "no release", func(c *relv1.Command) { c.GetCreateRelease().Release = nil }, "carries no release"},
		{"create_release", "invalid URL", func(c *relv1.Command) { c.GetCreateRelease().Release.ArtifactUrl = "ftp://h/a.tgz" }, `scheme "ftp" is not supported`},
		{"create_release", "URL without host", func(c *relv1.Command) { c.GetCreateRelease().Release.ArtifactUrl = "https:///a.tgz" }, "has no host"},
		{"create_release", "URL with credentials", func(c *relv1.Command) {
			c.GetCreateRelease().Release.ArtifactUrl = "https://u:p@h/a.tgz"
		}, "carries credentials"},
		{"create_release", "empty URL", func(c *relv1.Command) { c.GetCreateRelease().Release.ArtifactUrl = "" }, "artifact URL is empty"},
		{"create_release", "bad store URL", func(c *relv1.Command) { c.GetCreateRelease().Release.ArtifactUrl = "rel://sha256/abc" }, "rel://sha256/<64 hex digits>"},
		{"create_release", "empty sha256", func(c *relv1.Command) { c.GetCreateRelease().Release.Sha256 = "" }, "sha256 is empty"},
		{"create_release", "upper-case sha256", func(c *relv1.Command) {
			c.GetCreateRelease().Release.Sha256 = strings.ToUpper(testSHA)
		}, "is not lower-case"},
		{"create_release", "negative size", func(c *relv1.Command) { c.GetCreateRelease().Release.Size = -1 }, "size -1 is negative"},
		{"create_release", "bad app", func(c *relv1.Command) { c.GetCreateRelease().Release.App = "" }, "app name is empty"},
		{"create_release", "bad version", func(c *relv1.Command) { c.GetCreateRelease().Release.Version = "1.0 beta" }, `version "1.0 beta"`},
		{"create_release", "long notes", func(c *relv1.Command) { c.GetCreateRelease().Release.Notes = long(MaxNotesLen + 1) }, "notes are"},
		{"create_release", "bad commit", func(c *relv1.Command) { c.GetCreateRelease().Release.Commit = "zz" }, `commit "zz"`},
		{"create_release", "bad label", func(c *relv1.Command) { c.GetCreateRelease().Release.Labels = map[string]string{"k": "a b"} }, "values may hold"},

		{"register_server", "no server", func(c *relv1.Command) { c.GetRegisterServer().Server = nil }, "carries no server"},
		{"register_server", "bad id", func(c *relv1.Command) { c.GetRegisterServer().Server.Id = "-s1" }, `server id "-s1"`},
		{"register_server", "no raft address", func(c *relv1.Command) { c.GetRegisterServer().Server.RaftAddr = "" }, "raft address"},
		{"register_server", "raft address without port", func(c *relv1.Command) { c.GetRegisterServer().Server.RaftAddr = "10.0.0.1" }, "is not HOST:PORT"},
		{"register_server", "gRPC port 0", func(c *relv1.Command) { c.GetRegisterServer().Server.GrpcAddr = "10.0.0.1:0" }, "port must be 1-65535"},
		{"register_server", "bad HTTP address", func(c *relv1.Command) { c.GetRegisterServer().Server.HttpAddr = ":80" }, "HTTP address"},

		{"deregister_server", "bad id", func(c *relv1.Command) { c.GetDeregisterServer().Id = "" }, "server id"},

		{"agent_up", "no agent", func(c *relv1.Command) { c.GetAgentUp().Agent = nil }, "carries no agent"},
		{"agent_up", "bad id", func(c *relv1.Command) { c.GetAgentUp().Agent.Id = "a b" }, `agent id "a b"`},
		{"agent_up", "bad label", func(c *relv1.Command) { c.GetAgentUp().Agent.Labels = map[string]string{"": "x"} }, "empty key"},
		{"agent_up", "long version", func(c *relv1.Command) { c.GetAgentUp().Agent.AgentVersion = long(MaxFactLen + 1) }, "agent version"},
		{"agent_up", "bad session", func(c *relv1.Command) { c.GetAgentUp().Agent.SessionId = "" }, "session id"},
		{"agent_up", "negative cert time", func(c *relv1.Command) { c.GetAgentUp().CertNotBeforeUnixNano = -1 }, "certificate time -1 is negative"},
		{"agent_up", "bad server id", func(c *relv1.Command) { c.GetAgentUp().Agent.ServerId = "" }, "server id"},
		{"agent_up", "long fact", func(c *relv1.Command) { c.GetAgentUp().Agent.Facts.Kernel = long(MaxFactLen + 1) }, "host fact"},
		{"agent_up", "bad installed report", func(c *relv1.Command) { c.GetAgentUp().Installed[0].Phase = "exploded" }, `report phase "exploded"`},
		{"agent_up", "nil installed report", func(c *relv1.Command) { c.GetAgentUp().Installed = []*relv1.AppReport{nil} }, "empty app report"},
		{"agent_up", "too many installed", func(c *relv1.Command) {
			for i := 0; i < 1001; i++ {
				c.GetAgentUp().Installed = append(c.GetAgentUp().Installed, testReport())
			}
		}, "the limit is 1000"},

		{"agent_down", "bad agent", func(c *relv1.Command) { c.GetAgentDown().AgentId = "" }, "agent id"},
		{"agent_down", "bad session", func(c *relv1.Command) { c.GetAgentDown().SessionId = "a/b" }, "session id"},
		{"agent_down", "long reason", func(c *relv1.Command) { c.GetAgentDown().Reason = long(MaxReasonLen + 1) }, "reason is"},
		{"agent_down", "no message", func(c *relv1.Command) { c.Kind = &relv1.Command_AgentDown{} }, "agent id"},

		{"agent_sessions", "empty", func(c *relv1.Command) { c.GetAgentSessions().Up, c.GetAgentSessions().Down = nil, nil }, "holds 0 connects and disconnects: want 1-1000"},
		{"agent_sessions", "no message", func(c *relv1.Command) { c.Kind = &relv1.Command_AgentSessions{} }, "holds 0 connects"},
		{"agent_sessions", "too many", func(c *relv1.Command) {
			b := c.GetAgentSessions()
			for len(b.Up)+len(b.Down) <= MaxAgentSessions {
				b.Down = append(b.Down, proto.Clone(b.Down[0]).(*relv1.AgentDown))
			}
		}, "holds 1001 connects and disconnects: want 1-1000"},
		{"agent_sessions", "nil up", func(c *relv1.Command) { c.GetAgentSessions().Up[1] = nil }, "agent_sessions up 1: invalid argument: agent_up carries no agent"},
		{"agent_sessions", "up without agent", func(c *relv1.Command) { c.GetAgentSessions().Up[0].Agent = nil }, "up 0: invalid argument: agent_up carries no agent"},
		{"agent_sessions", "up bad id", func(c *relv1.Command) { c.GetAgentSessions().Up[1].Agent.Id = "a b" }, `up 1: invalid argument: agent id "a b"`},
		{"agent_sessions", "up bad session", func(c *relv1.Command) { c.GetAgentSessions().Up[0].Agent.SessionId = "" }, "up 0: invalid argument: session id"},
		{"agent_sessions", "up bad server", func(c *relv1.Command) { c.GetAgentSessions().Up[0].Agent.ServerId = "" }, "up 0: invalid argument: server id"},
		{"agent_sessions", "up bad report", func(c *relv1.Command) { c.GetAgentSessions().Up[0].Installed[0].Phase = "exploded" }, `up 0: invalid argument: report phase "exploded"`},
		{"agent_sessions", "up negative cert time", func(c *relv1.Command) { c.GetAgentSessions().Up[0].CertNotBeforeUnixNano = -1 }, "certificate time -1 is negative"},
		{"agent_sessions", "nil down", func(c *relv1.Command) { c.GetAgentSessions().Down[0] = nil }, "agent_sessions down 0 is empty"},
		{"agent_sessions", "down bad agent", func(c *relv1.Command) { c.GetAgentSessions().Down[0].AgentId = "" }, "down 0: invalid argument: agent id"},
		{"agent_sessions", "down bad session", func(c *relv1.Command) { c.GetAgentSessions().Down[0].SessionId = "a/b" }, "down 0: invalid argument: session id"},
		{"agent_sessions", "down long reason", func(c *relv1.Command) { c.GetAgentSessions().Down[0].Reason = long(MaxReasonLen + 1) }, "down 0: invalid argument: reason is"},

		{"report_batch", "empty", func(c *relv1.Command) { c.GetReportBatch().Reports = nil }, "holds 0 reports"},
		{"report_batch", "nil entry", func(c *relv1.Command) { c.GetReportBatch().Reports = []*relv1.AgentReport{nil} }, "empty report"},
		{"report_batch", "bad agent", func(c *relv1.Command) { c.GetReportBatch().Reports[0].AgentId = "" }, "agent id"},
		{"report_batch", "bad session", func(c *relv1.Command) { c.GetReportBatch().Reports[0].SessionId = "" }, "session id"},
		{"report_batch", "no app report", func(c *relv1.Command) { c.GetReportBatch().Reports[0].Report = nil }, "empty app report"},
		{"report_batch", "bad app", func(c *relv1.Command) { c.GetReportBatch().Reports[0].Report.App = "" }, "app name is empty"},
		{"report_batch", "bad version", func(c *relv1.Command) { c.GetReportBatch().Reports[0].Report.Version = "a b" }, `version "a b"`},
		{"report_batch", "bad previous version", func(c *relv1.Command) { c.GetReportBatch().Reports[0].Report.PreviousVersion = "-" }, `version "-"`},
		{"report_batch", "bad phase", func(c *relv1.Command) { c.GetReportBatch().Reports[0].Report.Phase = "done" }, `report phase "done"`},
		{"report_batch", "bad rollout id", func(c *relv1.Command) { c.GetReportBatch().Reports[0].Report.RolloutId = "a b" }, "rollout id"},
		{"report_batch", "long reason", func(c *relv1.Command) { c.GetReportBatch().Reports[0].Report.Reason = long(MaxReasonLen + 1) }, "report reason"},
		{"report_batch", "long output", func(c *relv1.Command) { c.GetReportBatch().Reports[0].Report.Output = long(MaxOutputLen + 1) }, "report output"},

		{"create_rollout", "no message", func(c *relv1.Command) { c.Kind = &relv1.Command_CreateRollout{} }, "empty create_rollout"},
		{"create_rollout", "no rollout", func(c *relv1.Command) { c.GetCreateRollout().Rollout = nil }, "carries no rollout"},
		{"create_rollout", "bad id", func(c *relv1.Command) { c.GetCreateRollout().Rollout.Id = "" }, "rollout id"},
		{"create_rollout", "bad app", func(c *relv1.Command) { c.GetCreateRollout().Rollout.App = "A" }, `app name "A"`},
		{"create_rollout", "bad version", func(c *relv1.Command) { c.GetCreateRollout().Rollout.Version = "" }, "version is empty"},
		{"create_rollout", "bad environment", func(c *relv1.Command) { c.GetCreateRollout().Rollout.Environment = "" }, "environment name is empty"},
		{"create_rollout", "long reason", func(c *relv1.Command) { c.GetCreateRollout().Rollout.Reason = long(MaxReasonLen + 1) }, "rollout reason"},
		{"create_rollout", "unknown kind", func(c *relv1.Command) { c.GetCreateRollout().Rollout.Kind = "yolo" }, `rollout kind "yolo"`},
		{"create_rollout", "rollback of nothing", func(c *relv1.Command) { c.GetCreateRollout().Rollout.Kind = "rollback" }, "rolled back rollout id"},
		{"create_rollout", "unknown state", func(c *relv1.Command) { c.GetCreateRollout().Rollout.State = "exploded" }, `rollout state "exploded"`},
		{"create_rollout", "nil host", func(c *relv1.Command) { c.GetCreateRollout().Rollout.Hosts = []*relv1.RolloutHost{nil} }, "empty host"},
		{"create_rollout", "host bad agent", func(c *relv1.Command) { c.GetCreateRollout().Rollout.Hosts[0].AgentId = "" }, "agent id"},
		{"create_rollout", "host bad state", func(c *relv1.Command) { c.GetCreateRollout().Rollout.Hosts[0].State = "" }, `host state ""`},
		{"create_rollout", "host bad target", func(c *relv1.Command) { c.GetCreateRollout().Rollout.Hosts[0].TargetVersion = "a b" }, `version "a b"`},
		{"create_rollout", "host long reason", func(c *relv1.Command) { c.GetCreateRollout().Rollout.Hosts[0].Reason = long(MaxReasonLen + 1) }, "host reason"},
		{"create_rollout", "nil desired", func(c *relv1.Command) { c.GetCreateRollout().Desired = []*relv1.Desired{nil} }, "empty desired row"},
		{"create_rollout", "desired bad URL", func(c *relv1.Command) { c.GetCreateRollout().Desired[0].ArtifactUrl = "gopher://x" }, `scheme "gopher"`},
		{"create_rollout", "desired bad sha", func(c *relv1.Command) { c.GetCreateRollout().Desired[0].Sha256 = "00" }, `sha256 "00"`},
		{"create_rollout", "desired bad rollout", func(c *relv1.Command) { c.GetCreateRollout().Desired[0].RolloutId = "a b" }, "rollout id"},
		{"create_rollout", "desired bad agent", func(c *relv1.Command) { c.GetCreateRollout().Desired[0].AgentId = "" }, "agent id"},
		{"create_rollout", "nil event", func(c *relv1.Command) { c.GetCreateRollout().Events = []*relv1.RolloutEvent{nil} }, "empty rollout event"},
		{"create_rollout", "event bad rollout", func(c *relv1.Command) { c.GetCreateRollout().Events[0].RolloutId = "" }, "event rollout id"},
		{"create_rollout", "event long message", func(c *relv1.Command) { c.GetCreateRollout().Events[0].Message = long(MaxReasonLen + 1) }, "event message"},
		{"create_rollout", "event long type", func(c *relv1.Command) { c.GetCreateRollout().Events[0].Type = long(MaxIDLen + 1) }, "event type"},

		{"rollout_step", "no rollout", func(c *relv1.Command) { c.GetRolloutStep().Rollout = nil }, "carries no rollout"},
		{"rollout_step", "no message", func(c *relv1.Command) { c.Kind = &relv1.Command_RolloutStep{} }, "carries no rollout"},
		{"rollout_step", "bad desired", func(c *relv1.Command) { c.GetRolloutStep().Desired[0].Version = "" }, "version is empty"},
		{"rollout_step", "bad event", func(c *relv1.Command) { c.GetRolloutStep().Events[0].Host = long(MaxIDLen + 1) }, "event host"},
		{"rollout_step", "rollback without rollout", func(c *relv1.Command) {
			c.GetRolloutStep().StartRollback = &relv1.CreateRollout{}
		}, "carries no rollout"},

		{"rollout_step_delta", "no rollout", func(c *relv1.Command) { c.GetRolloutStepDelta().Rollout = nil }, "carries no rollout"},
		{"rollout_step_delta", "no message", func(c *relv1.Command) { c.Kind = &relv1.Command_RolloutStepDelta{} }, "carries no rollout"},
		{"rollout_step_delta", "bad host", func(c *relv1.Command) { c.GetRolloutStepDelta().Rollout.Hosts[0].State = "" }, `host state ""`},
		{"rollout_step_delta", "host twice", func(c *relv1.Command) {
			r := c.GetRolloutStepDelta().Rollout
			r.Hosts = append(r.Hosts, proto.Clone(r.Hosts[0]).(*relv1.RolloutHost))
		}, `names host "web-1" twice`},
		{"rollout_step_delta", "bad desired", func(c *relv1.Command) { c.GetRolloutStepDelta().Desired[0].Version = "" }, "version is empty"},
		{"rollout_step_delta", "rollback without rollout", func(c *relv1.Command) {
			c.GetRolloutStepDelta().StartRollback = &relv1.CreateRollout{}
		}, "carries no rollout"},

		{"rollout_control", "bad action", func(c *relv1.Command) { c.GetRolloutControl().Action = "explode" }, `rollout action "explode"`},
		{"rollout_control", "bad id", func(c *relv1.Command) { c.GetRolloutControl().RolloutId = "" }, "rollout id"},
		{"rollout_control", "no time", func(c *relv1.Command) { c.GetRolloutControl().AtUnixNano = 0 }, "control time is not stamped"},
		{"rollout_control", "long reason", func(c *relv1.Command) { c.GetRolloutControl().Reason = long(MaxDescriptionLen + 1) }, "reason is"},

		{"init_cluster", "empty id", func(c *relv1.Command) { c.GetInitCluster().ClusterId = "" }, "cluster id"},

		{"acl_bootstrap", "no token", func(c *relv1.Command) { c.GetAclBootstrap().Token = nil }, "carries no token"},
		{"acl_bootstrap", "no roles", func(c *relv1.Command) { c.GetAclBootstrap().Token.Roles = nil }, "at least one role"},
		{"acl_bootstrap", "unknown role", func(c *relv1.Command) { c.GetAclBootstrap().Token.Roles = []string{"root"} }, `role "root"`},
		{"acl_bootstrap", "bad accessor", func(c *relv1.Command) { c.GetAclBootstrap().Token.AccessorId = "xyz" }, "token accessor"},
		{"acl_bootstrap", "bad secret hash", func(c *relv1.Command) { c.GetAclBootstrap().Token.SecretHash = "secret" }, "secret hash"},
		{"acl_bootstrap", "no creation time", func(c *relv1.Command) { c.GetAclBootstrap().Token.CreatedUnixNano = 0 }, "token creation time"},

		{"create_acl_token", "no token", func(c *relv1.Command) { c.GetCreateAclToken().Token = nil }, "carries no token"},
		{"create_acl_token", "empty name", func(c *relv1.Command) { c.GetCreateAclToken().Token.Name = "" }, "token name is empty"},
		{"create_acl_token", "bad glob", func(c *relv1.Command) { c.GetCreateAclToken().Token.Apps = []string{"[web"} }, `app glob "[web"`},
		{"create_acl_token", "empty glob", func(c *relv1.Command) { c.GetCreateAclToken().Token.Environments = []string{""} }, `environment glob ""`},
		{"create_acl_token", "too many globs", func(c *relv1.Command) {
			c.GetCreateAclToken().Token.Apps = make([]string, MaxGlobs+1)
		}, "at most 32"},
		{"create_acl_token", "negative expiry", func(c *relv1.Command) { c.GetCreateAclToken().Token.ExpiresUnixNano = -1 }, "expiry is negative"},
		{"create_acl_token", "long created by", func(c *relv1.Command) { c.GetCreateAclToken().Token.CreatedBy = long(MaxFactLen + 1) }, "created by"},

		{"delete_acl_token", "bad accessor", func(c *relv1.Command) { c.GetDeleteAclToken().AccessorId = "ABCDEF0123456789" }, "token accessor"},

		{"create_join_token", "no token", func(c *relv1.Command) { c.GetCreateJoinToken().Token = nil }, "carries no join token"},
		{"create_join_token", "no uses", func(c *relv1.Command) { c.GetCreateJoinToken().Token.Uses = 0 }, "uses 0"},
		{"create_join_token", "too many uses", func(c *relv1.Command) { c.GetCreateJoinToken().Token.Uses = MaxTokenUses + 1 }, "uses 100001"},
		{"create_join_token", "expires before created", func(c *relv1.Command) { c.GetCreateJoinToken().Token.ExpiresUnixNano = 1 }, "expires before it is created"},
		{"create_join_token", "already used", func(c *relv1.Command) { c.GetCreateJoinToken().Token.UsedBy = []string{"web-1"} }, "has not been used"},
		{"create_join_token", "bad accessor", func(c *relv1.Command) { c.GetCreateJoinToken().Token.AccessorId = "" }, "token accessor"},
		{"create_join_token", "bad secret hash", func(c *relv1.Command) { c.GetCreateJoinToken().Token.SecretHash = "" }, "secret hash"},
		{"create_join_token", "bad label", func(c *relv1.Command) { c.GetCreateJoinToken().Token.Labels = map[string]string{"env": "a b"} }, "values may hold"},
		{"create_join_token", "long description", func(c *relv1.Command) {
			c.GetCreateJoinToken().Token.Description = long(MaxDescriptionLen + 1)
		}, "description is"},

		{"use_join_token", "bad hash", func(c *relv1.Command) { c.GetUseJoinToken().SecretHash = strings.ToUpper(testHash) }, "secret hash"},
		{"use_join_token", "bad agent", func(c *relv1.Command) { c.GetUseJoinToken().AgentId = "" }, "agent id"},
		{"use_join_token", "no time", func(c *relv1.Command) { c.GetUseJoinToken().AtUnixNano = 0 }, "enrolment time is not stamped"},

		{"delete_join_token", "bad accessor", func(c *relv1.Command) { c.GetDeleteJoinToken().AccessorId = "0123" }, "token accessor"},

		{"revoke_agent", "no revocation", func(c *relv1.Command) { c.GetRevokeAgent().Revocation = nil }, "carries no revocation"},
		{"revoke_agent", "bad agent", func(c *relv1.Command) { c.GetRevokeAgent().Revocation.AgentId = "" }, "agent id"},
		{"revoke_agent", "no time", func(c *relv1.Command) { c.GetRevokeAgent().Revocation.RevokedUnixNano = 0 }, "revocation time is not stamped"},
		{"revoke_agent", "long reason", func(c *relv1.Command) { c.GetRevokeAgent().Revocation.Reason = long(MaxDescriptionLen + 1) }, "reason is"},
		{"revoke_agent", "long revoked by", func(c *relv1.Command) { c.GetRevokeAgent().Revocation.RevokedBy = long(MaxFactLen + 1) }, "revoked by"},
		{"audit_refusals", "empty", func(c *relv1.Command) { c.GetAuditRefusals().Refusals, c.GetAuditRefusals().Dropped = nil, 0 }, "no refusal"},
		{"audit_refusals", "no server", func(c *relv1.Command) { c.GetAuditRefusals().Server = "" }, "server id"},
		{"audit_refusals", "nil refusal", func(c *relv1.Command) { c.GetAuditRefusals().Refusals[0] = nil }, "empty refusal"},
		{"audit_refusals", "no time", func(c *relv1.Command) { c.GetAuditRefusals().Refusals[0].TimeUnixNano = 0 }, "refusal time"},
		{"audit_refusals", "long message", func(c *relv1.Command) { c.GetAuditRefusals().Refusals[0].Message = long(MaxReasonLen + 1) }, "message is"},
		{"audit_refusals", "long actor", func(c *relv1.Command) { c.GetAuditRefusals().Refusals[0].Actor.Id = long(MaxFactLen + 1) }, "actor id"},
		{"audit_refusals", "too many", func(c *relv1.Command) {
			r := c.GetAuditRefusals().Refusals[0]
			for len(c.GetAuditRefusals().Refusals) <= MaxAuditRefusals {
				c.GetAuditRefusals().Refusals = append(c.GetAuditRefusals().Refusals, r)
			}
		}, "at most"},
	}
}

// TestCommandInvalid changes one field of a valid command at a time: each
// change is refused with ErrInvalid and a message naming what is wrong, so
// the FSM never sees it.
func TestCommandInvalid(t *testing.T) {
	for _, tc := range invalidCommandCases() {
		t.Run(tc.kind+"/"+tc.name, func(t *testing.T) {
			cmd := proto.Clone(validCommands()[tc.kind]).(*relv1.Command)
			tc.mutate(cmd)
			err := Command(cmd)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestCommandEnvelope: what every command needs whatever its kind.
func TestCommandEnvelope(t *testing.T) {
	unknownField := protowire.AppendTag(nil, 99, protowire.BytesType)
	unknownField = protowire.AppendBytes(unknownField, []byte("from a newer build"))
	unknownField = protowire.AppendTag(unknownField, 1, protowire.VarintType)
	unknownField = protowire.AppendVarint(unknownField, 5)
	var unknown relv1.Command
	if err := proto.Unmarshal(unknownField, &unknown); err != nil {
		t.Fatal(err)
	}
	noStamp := validCommands()["create_app"]
	noStamp.StampedUnixNano = 0
	negStamp := validCommands()["create_app"]
	negStamp.StampedUnixNano = -5
	withID := func(id string) *relv1.Command {
		c := validCommands()["create_app"]
		c.RequestId = id
		return c
	}
	tests := []struct {
		name string
		cmd  *relv1.Command
		want string
	}{
		{"nil", nil, "empty command"},
		{"no stamp", noStamp, "not time-stamped"},
		{"negative stamp", negStamp, "not time-stamped"},
		{"no kind", &relv1.Command{StampedUnixNano: 1}, "command has no kind"},
		// A kind this build does not know decodes as an unknown field and
		// no kind: refused here, where the FSM would have to panic.
		{"unknown kind", &unknown, "command has no kind"},
		{"long request id", withID(strings.Repeat("r", 65)), "65 bytes long: want 1-64"},
		{"request id with a space", withID("rq 1"), "without spaces, found byte 0x20 at 2"},
		{"request id not ASCII", withID("rq-é"), "found byte 0xc3 at 3"},
		{"request id with a control", withID("rq-\n"), "found byte 0xa at 3"},
	}
	for _, id := range []string{"", "x", strings.Repeat("r", 64), "rq-0123456789abcdef0123456789abcdef", "!~"} {
		if err := Command(withID(id)); err != nil {
			t.Errorf("request id %q refused: %v", id, err)
		}
	}
	for _, tt := range tests {
		err := Command(tt.cmd)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrInvalid containing %q", tt.name, err, tt.want)
		}
	}
}

func testLifecycle() *relv1.Lifecycle {
	return &relv1.Lifecycle{Name: "std", Phases: []*relv1.Phase{
		{Name: "dev", Environments: []string{"dev"}, Progress: "all"},
		{Name: "prod", Environments: []string{"prod-eu", "prod-us"}, Progress: "all", AutoDeploy: []string{"prod-eu"}},
	}}
}

func testFreeze() *relv1.FreezeWindow {
	return &relv1.FreezeWindow{Name: "weekend", Apps: []string{"web*"}, Environments: []string{"prod"},
		CronStart: "0 18 * * FRI", CronEnd: "0 8 * * MON", TimeZone: "Europe/Berlin", Reason: "weekend freeze", CreatedUnixNano: 1}
}
