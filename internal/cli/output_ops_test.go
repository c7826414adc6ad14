package cli

import (
	"bytes"
	"testing"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

const sec = int64(time.Second)

var (
	// nowOps is the printers' clock in these tests: ten minutes after t0.
	nowOps = time.Unix(0, t0).Add(10 * time.Minute)

	// rolloutWeb is a rolling rollout in its second and last wave.
	rolloutWeb = &relv1.Rollout{Id: "r-1", Kind: "deploy", App: "web", Version: "1.2.3", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Count: 2}, {Percent: 100}},
			MaxParallel: 1, MaxFailures: &relv1.Quantity{Count: 1}, ProgressDeadlineMs: 600_000},
		State: "running",
		Hosts: []*relv1.RolloutHost{
			{AgentId: "web-1", PreviousVersion: "1.2.2", TargetVersion: "1.2.3", Wave: 0, State: "healthy", Phase: "healthy",
				DispatchedUnixNano: t0 + 1*sec, FinishedUnixNano: t0 + 5*sec},
			{AgentId: "web-2", PreviousVersion: "1.2.2", TargetVersion: "1.2.3", Wave: 0, State: "healthy", Phase: "healthy",
				DispatchedUnixNano: t0 + 2*sec, FinishedUnixNano: t0 + 6*sec},
			{AgentId: "web-3", TargetVersion: "1.2.3", Wave: 1, State: "dispatched", Phase: "installing",
				DispatchedUnixNano: t0 + 7*sec},
		},
		CurrentWave: 1, WaveCount: 2, WaveStartedUnixNano: t0 + 7*sec, LastProgressUnixNano: t0 + 7*sec, EventSeq: 9,
		CreatedUnixNano: t0, CreateIndex: 40, ModifyIndex: 44}

	rolloutWebDone = &relv1.Rollout{Id: "r-0", App: "web", Version: "1.2.2", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "all-at-once"}, State: "failed", Reason: "web-3: verify hook exited 1",
		CreatedUnixNano: t0 - 3600*sec, FinishedUnixNano: t0 - 3000*sec, CreateIndex: 30, ModifyIndex: 35}

	statusWeb = &relv1.RolloutStatus{
		Rollout: rolloutWeb,
		Hosts: []*relv1.RolloutHostStatus{
			{AgentId: "web-1", PreviousVersion: "1.2.2", Phase: "healthy", Version: "1.2.3", CurrentVersion: "1.2.3", UpdatedUnixNano: t0 + 5*sec, Connected: true},
			{AgentId: "web-2", PreviousVersion: "1.2.2", Phase: "healthy", Version: "1.2.3", CurrentVersion: "1.2.3", UpdatedUnixNano: t0 + 6*sec, Connected: true},
			{AgentId: "web-3", Phase: "installing", UpdatedUnixNano: t0 + 3*sec, Reason: "waiting for\nlock"},
		},
		Totals: map[string]uint32{"installing": 1, "healthy": 2},
	}

	// statusWebDone has no totals: relctl counts the hosts itself.
	statusWebDone = &relv1.RolloutStatus{
		Rollout: rolloutWebDone,
		Hosts: []*relv1.RolloutHostStatus{
			{AgentId: "web-3", PreviousVersion: "1.2.1", Phase: "failed", Version: "1.2.2", CurrentVersion: "1.2.1", Reason: "verify hook exited 1", Connected: true},
		},
	}

	agentWeb1 = &relv1.AgentStatus{
		Agent: &relv1.Agent{Id: "web-1", Labels: map[string]string{"tier": "web", "env": "prod"}, AgentVersion: "v0.2.0",
			Facts: &relv1.HostFacts{Hostname: "web-1.example.com", Os: "linux", Platform: "debian", PlatformVersion: "12.5",
				Kernel: "6.1.0-18-amd64", Arch: "amd64", Cpus: 4, MemoryBytes: 8 << 30},
			Connected: true, SessionId: "s-7", ServerId: "n1", ConnectedUnixNano: t0, CreateIndex: 20, ModifyIndex: 31},
		Apps: []*relv1.AppReport{
			{App: "web", Version: "1.2.3", PreviousVersion: "1.2.2", Phase: "healthy", AtUnixNano: t0 + 5*sec,
				RolloutId: "r-1", Generation: 44},
			{App: "api", Version: "0.1.0", Phase: "failed", Reason: "start hook exited 1",
				Output: "panic: boom\n\n\tgoroutine 1\n", AtUnixNano: t0 + 7*sec, Generation: 40},
		},
		Load:                  &relv1.Load{CpuPercent: 12.345, MemoryPercent: 40, DiskFreeBytes: 12<<30 + 512<<20, DiskTotalBytes: 50 << 30},
		LastHeartbeatUnixNano: nowOps.Add(-3 * time.Second).UnixNano(),
		Environments:          []string{"prod", "web"},
	}

	agentDB1 = &relv1.AgentStatus{
		Agent: &relv1.Agent{Id: "db-1", Connected: false, ConnectedUnixNano: t0 - 7200*sec,
			DisconnectedUnixNano: nowOps.Add(-2 * time.Hour).UnixNano(), DisconnectReason: "stream closed"},
	}

	historyWeb = []*relv1.HistoryEntry{
		{App: "web", AgentId: "web-1", Version: "1.2.2", FromUnixNano: t0 - 3*86400*sec - 3600*sec, ToUnixNano: t0 + 5*sec,
			RolloutId: "r-0", CreateIndex: 31, ModifyIndex: 41},
		{App: "web", AgentId: "web-1", Version: "1.2.3", FromUnixNano: t0 + 5*sec, RolloutId: "r-1", RolloutKind: "deploy",
			Outcome: "running", CreateIndex: 41, ModifyIndex: 41},
		{App: "web", AgentId: "web-3", Version: "1.2.2", FromUnixNano: t0 - 3600*sec, ToUnixNano: t0 - 3000*sec,
			RolloutId: "r-0", RolloutKind: "deploy", Outcome: "failed", Reason: "verify hook exited 1", FailedUnixNano: t0 - 3590*sec,
			ReplacedByRolloutId: "r-0b", ReplacedByKind: "rollback", CreateIndex: 33, ModifyIndex: 36},
		{App: "web", AgentId: "web-3", Version: "1.2.1", FromUnixNano: t0 - 3000*sec, RolloutId: "r-0b", RolloutKind: "rollback",
			Outcome: "running", CreateIndex: 36, ModifyIndex: 36},
	}
)

func TestOpsOutput(t *testing.T) {
	tests := []struct {
		name   string
		format string
		print  func(p printer) error
		want   string
	}{
		{
			name: "rollout started table", format: formatTable,
			print: func(p printer) error { return p.rolloutStarted(rolloutWeb, 40) },
			want: "" +
				"started rollout r-1: web@1.2.3 to prod, 3 hosts in 2 waves (index 40)\n" +
				"HOST   WAVE  PREVIOUS\n" +
				"web-1  1     1.2.2\n" +
				"web-2  1     1.2.2\n" +
				"web-3  2\n",
		},
		{
			name: "rollout queued table", format: formatTable,
			print: func(p printer) error {
				q := &relv1.Rollout{Id: "r-2", App: "web", Version: "1.2.4", Environment: "prod-eu", State: "queued", Reason: "queued behind r-1",
					WaveCount: 1, Hosts: []*relv1.RolloutHost{{AgentId: "web-1", PreviousVersion: "1.2.2"}}}
				return p.rolloutStarted(q, 41)
			},
			want: "" +
				"queued rollout r-2: web@1.2.4 to prod-eu, 1 host (index 41); queued behind r-1: it starts when that rollout ends\n" +
				"HOST   WAVE  PREVIOUS\n" +
				"web-1  1     1.2.2\n",
		},
		{
			name: "rollout started json", format: formatJSON,
			print: func(p printer) error { return p.rolloutStarted(rolloutWebDone, 40) },
			want: `{
  "id": "r-0",
  "kind": "",
  "app": "web",
  "version": "1.2.2",
  "environment": "prod",
  "strategy": "all-at-once",
  "spec": {
    "strategy": "all-at-once",
    "canary": "",
    "waves": [],
    "wave_by": "",
    "max_parallel": 0,
    "bake_ms": 0,
    "approve_waves": false,
    "max_failures": "0",
    "progress_deadline_ms": 0,
    "auto_rollback": false
  },
  "state": "failed",
  "reason": "web-3: verify hook exited 1",
  "rollback_of": "",
  "rolled_back_by": "",
  "current_wave": 0,
  "wave_count": 0,
  "approved_wave": 0,
  "paused_from": "",
  "wave_started_at": "",
  "wave_done_at": "",
  "last_progress_at": "",
  "event_seq": 0,
  "hosts": [],
  "started_at": "2025-03-04T03:06:07.89Z",
  "finished_at": "2025-03-04T03:16:07.89Z",
  "create_index": 30,
  "modify_index": 35
}
`,
		},
		{
			name: "rollout status table", format: formatTable,
			print: func(p printer) error { return p.rolloutStatus(statusWeb) },
			want: `Rollout:     r-1
Kind:        deploy
Release:     web@1.2.3
Environment: prod
Strategy:    rolling, waves 2,100%, max-parallel 1, max-failures 1, deadline 10m
State:       running
Wave:        2 of 2, running for 9m53s
Started:     2025-03-04T04:06:07Z
Finished:
Reason:

HOST   WAVE  STATE       PHASE       PREVIOUS  TARGET  NOW    CONNECTED  UPDATED               REASON
web-1  1     healthy     healthy     1.2.2     1.2.3   1.2.3  yes        2025-03-04T04:06:12Z
web-2  1     healthy     healthy     1.2.2     1.2.3   1.2.3  yes        2025-03-04T04:06:13Z
web-3  2     dispatched  installing            1.2.3          no         2025-03-04T04:06:10Z  waiting for lock
3 hosts: 2 healthy, 1 installing
`,
		},
		{
			name: "rollout status table finished, totals counted from hosts", format: formatTable,
			print: func(p printer) error { return p.rolloutStatus(statusWebDone) },
			want: `Rollout:     r-0
Kind:
Release:     web@1.2.2
Environment: prod
Strategy:    all-at-once, max-failures 0
State:       failed
Wave:
Started:     2025-03-04T03:06:07Z
Finished:    2025-03-04T03:16:07Z
Reason:      web-3: verify hook exited 1

HOST   WAVE  STATE  PHASE   PREVIOUS  TARGET  NOW    CONNECTED  UPDATED  REASON
web-3               failed  1.2.1     1.2.2   1.2.1  yes                 verify hook exited 1
1 host: 1 failed
`,
		},
		{
			name: "rollout status json", format: formatJSON,
			print: func(p printer) error { return p.rolloutStatus(statusWeb) },
			want: `{
  "rollout": {
    "id": "r-1",
    "kind": "deploy",
    "app": "web",
    "version": "1.2.3",
    "environment": "prod",
    "strategy": "rolling",
    "spec": {
      "strategy": "rolling",
      "canary": "",
      "waves": [
        "2",
        "100%"
      ],
      "wave_by": "",
      "max_parallel": 1,
      "bake_ms": 0,
      "approve_waves": false,
      "max_failures": "1",
      "progress_deadline_ms": 600000,
      "auto_rollback": false
    },
    "state": "running",
    "reason": "",
    "rollback_of": "",
    "rolled_back_by": "",
    "current_wave": 1,
    "wave_count": 2,
    "approved_wave": 0,
    "paused_from": "",
    "wave_started_at": "2025-03-04T04:06:14.89Z",
    "wave_done_at": "",
    "last_progress_at": "2025-03-04T04:06:14.89Z",
    "event_seq": 9,
    "hosts": [
      {
        "agent_id": "web-1",
        "previous_version": "1.2.2",
        "target_version": "1.2.3",
        "wave": 0,
        "state": "healthy",
        "phase": "healthy",
        "reason": "",
        "dispatched_at": "2025-03-04T04:06:08.89Z",
        "finished_at": "2025-03-04T04:06:12.89Z"
      },
      {
        "agent_id": "web-2",
        "previous_version": "1.2.2",
        "target_version": "1.2.3",
        "wave": 0,
        "state": "healthy",
        "phase": "healthy",
        "reason": "",
        "dispatched_at": "2025-03-04T04:06:09.89Z",
        "finished_at": "2025-03-04T04:06:13.89Z"
      },
      {
        "agent_id": "web-3",
        "previous_version": "",
        "target_version": "1.2.3",
        "wave": 1,
        "state": "dispatched",
        "phase": "installing",
        "reason": "",
        "dispatched_at": "2025-03-04T04:06:14.89Z",
        "finished_at": ""
      }
    ],
    "started_at": "2025-03-04T04:06:07.89Z",
    "finished_at": "",
    "create_index": 40,
    "modify_index": 44
  },
  "hosts": [
    {
      "agent_id": "web-1",
      "wave": 0,
      "state": "healthy",
      "phase": "healthy",
      "version": "1.2.3",
      "previous_version": "1.2.2",
      "target_version": "1.2.3",
      "current_version": "1.2.3",
      "connected": true,
      "updated_at": "2025-03-04T04:06:12.89Z",
      "reason": ""
    },
    {
      "agent_id": "web-2",
      "wave": 0,
      "state": "healthy",
      "phase": "healthy",
      "version": "1.2.3",
      "previous_version": "1.2.2",
      "target_version": "1.2.3",
      "current_version": "1.2.3",
      "connected": true,
      "updated_at": "2025-03-04T04:06:13.89Z",
      "reason": ""
    },
    {
      "agent_id": "web-3",
      "wave": 1,
      "state": "dispatched",
      "phase": "installing",
      "version": "",
      "previous_version": "",
      "target_version": "1.2.3",
      "current_version": "",
      "connected": false,
      "updated_at": "2025-03-04T04:06:10.89Z",
      "reason": "waiting for\nlock"
    }
  ],
  "totals": {
    "healthy": 2,
    "installing": 1
  }
}
`,
		},
		{
			name: "rollouts table", format: formatTable,
			print: func(p printer) error {
				rb := &relv1.RolloutStatus{Rollout: &relv1.Rollout{Id: "r-2", Kind: "rollback", RollbackOf: "r-0", App: "web", Version: "1.2.1", Environment: "prod",
					State: "running", CreatedUnixNano: rolloutWeb.GetCreatedUnixNano()}}
				return p.rollouts([]*relv1.RolloutStatus{statusWebDone, statusWeb, rb})
			},
			want: "" +
				"ID   KIND             APP  VERSION  ENV   STATE    HOSTS                        STARTED               FINISHED\n" +
				"r-0  deploy           web  1.2.2    prod  failed   1 (1 failed)                 2025-03-04T03:06:07Z  2025-03-04T03:16:07Z\n" +
				"r-1  deploy           web  1.2.3    prod  running  3 (2 healthy, 1 installing)  2025-03-04T04:06:07Z\n" +
				"r-2  rollback of r-0  web  1.2.1    prod  running  0                            2025-03-04T04:06:07Z\n",
		},
		{
			name: "rollouts json empty", format: formatJSON,
			print: func(p printer) error { return p.rollouts(nil) },
			want:  "{\n  \"rollouts\": []\n}\n",
		},
		{
			name: "rollouts json", format: formatJSON,
			print: func(p printer) error { return p.rollouts([]*relv1.RolloutStatus{statusWebDone}) },
			want: `{
  "rollouts": [
    {
      "rollout": {
        "id": "r-0",
        "kind": "",
        "app": "web",
        "version": "1.2.2",
        "environment": "prod",
        "strategy": "all-at-once",
        "spec": {
          "strategy": "all-at-once",
          "canary": "",
          "waves": [],
          "wave_by": "",
          "max_parallel": 0,
          "bake_ms": 0,
          "approve_waves": false,
          "max_failures": "0",
          "progress_deadline_ms": 0,
          "auto_rollback": false
        },
        "state": "failed",
        "reason": "web-3: verify hook exited 1",
        "rollback_of": "",
        "rolled_back_by": "",
        "current_wave": 0,
        "wave_count": 0,
        "approved_wave": 0,
        "paused_from": "",
        "wave_started_at": "",
        "wave_done_at": "",
        "last_progress_at": "",
        "event_seq": 0,
        "hosts": [],
        "started_at": "2025-03-04T03:06:07.89Z",
        "finished_at": "2025-03-04T03:16:07.89Z",
        "create_index": 30,
        "modify_index": 35
      },
      "hosts": [
        {
          "agent_id": "web-3",
          "wave": 0,
          "state": "",
          "phase": "failed",
          "version": "1.2.2",
          "previous_version": "1.2.1",
          "target_version": "",
          "current_version": "1.2.1",
          "connected": true,
          "updated_at": "",
          "reason": "verify hook exited 1"
        }
      ],
      "totals": {
        "failed": 1
      }
    }
  ]
}
`,
		},
		{
			name: "agents table", format: formatTable,
			print: func(p printer) error { return p.agents([]*relv1.AgentStatus{agentWeb1, agentDB1}) },
			want: "" +
				"ID     CONNECTED  LAST SEEN  LABELS             APPS                                CPU%  MEM%  DISK FREE\n" +
				"web-1  yes        3s ago     env=prod,tier=web  api@0.1.0:failed,web@1.2.3:healthy  12.3  40.0  12.5 GiB\n" +
				"db-1   no         2h ago\n",
		},
		{
			name: "agents json", format: formatJSON,
			print: func(p printer) error { return p.agents([]*relv1.AgentStatus{agentDB1}) },
			want: `{
  "agents": [
    {
      "id": "db-1",
      "labels": {},
      "agent_version": "",
      "facts": {
        "hostname": "",
        "os": "",
        "platform": "",
        "platform_version": "",
        "kernel": "",
        "arch": "",
        "cpus": 0,
        "memory_bytes": 0
      },
      "connected": false,
      "session_id": "",
      "server_id": "",
      "connected_at": "2025-03-04T02:06:07.89Z",
      "disconnected_at": "2025-03-04T02:16:07.89Z",
      "disconnect_reason": "stream closed",
      "last_heartbeat_at": "",
      "environments": [],
      "load": null,
      "apps": [],
      "create_index": 0,
      "modify_index": 0
    }
  ]
}
`,
		},
		{
			name: "agent show table", format: formatTable,
			print: func(p printer) error { return p.agent(agentWeb1) },
			want: "" +
				"ID:                web-1\n" +
				"Labels:            env=prod,tier=web\n" +
				"Agent version:     v0.2.0\n" +
				"Hostname:          web-1.example.com\n" +
				"OS:                linux\n" +
				"Platform:          debian 12.5\n" +
				"Kernel:            6.1.0-18-amd64\n" +
				"Arch:              amd64\n" +
				"CPUs:              4\n" +
				"Memory:            8.0 GiB\n" +
				"Connected:         yes\n" +
				"Session:           s-7\n" +
				"Server:            n1\n" +
				"Connected at:      2025-03-04T04:06:07Z\n" +
				"Disconnected at:\n" +
				"Disconnect reason:\n" +
				"Last heartbeat:    2025-03-04T04:16:04Z (3s ago)\n" +
				"Environments:      prod,web\n" +
				"Load:              cpu 12.3%, memory 40.0%, disk 12.5 GiB free of 50.0 GiB\n" +
				"Apps:\n" +
				"  APP  VERSION  PREVIOUS  PHASE    REPORTED              ROLLOUT  REASON\n" +
				"  api  0.1.0              failed   2025-03-04T04:06:14Z           start hook exited 1\n" +
				"  web  1.2.3    1.2.2     healthy  2025-03-04T04:06:12Z  r-1\n" +
				"Output of api:\n" +
				"  panic: boom\n" +
				"\n" +
				"  \tgoroutine 1\n",
		},
		{
			name: "agent show table, disconnected and bare", format: formatTable,
			print: func(p printer) error { return p.agent(agentDB1) },
			want: "" +
				"ID:                db-1\n" +
				"Labels:\n" +
				"Agent version:\n" +
				"Hostname:\n" +
				"OS:\n" +
				"Platform:\n" +
				"Kernel:\n" +
				"Arch:\n" +
				"CPUs:\n" +
				"Memory:\n" +
				"Connected:         no\n" +
				"Session:\n" +
				"Server:\n" +
				"Connected at:      2025-03-04T02:06:07Z\n" +
				"Disconnected at:   2025-03-04T02:16:07Z\n" +
				"Disconnect reason: stream closed\n" +
				"Last heartbeat:\n" +
				"Environments:\n" +
				"Load:\n" +
				"Apps:              (none)\n",
		},
		{
			name: "agent show json", format: formatJSON,
			print: func(p printer) error { return p.agent(agentWeb1) },
			want: `{
  "id": "web-1",
  "labels": {
    "env": "prod",
    "tier": "web"
  },
  "agent_version": "v0.2.0",
  "facts": {
    "hostname": "web-1.example.com",
    "os": "linux",
    "platform": "debian",
    "platform_version": "12.5",
    "kernel": "6.1.0-18-amd64",
    "arch": "amd64",
    "cpus": 4,
    "memory_bytes": 8589934592
  },
  "connected": true,
  "session_id": "s-7",
  "server_id": "n1",
  "connected_at": "2025-03-04T04:06:07.89Z",
  "disconnected_at": "",
  "disconnect_reason": "",
  "last_heartbeat_at": "2025-03-04T04:16:04.89Z",
  "environments": [
    "prod",
    "web"
  ],
  "load": {
    "cpu_percent": 12.345,
    "memory_percent": 40,
    "disk_free_bytes": 13421772800,
    "disk_total_bytes": 53687091200
  },
  "apps": [
    {
      "app": "web",
      "version": "1.2.3",
      "previous_version": "1.2.2",
      "phase": "healthy",
      "reason": "",
      "output": "",
      "reported_at": "2025-03-04T04:06:12.89Z",
      "rollout_id": "r-1",
      "generation": 44
    },
    {
      "app": "api",
      "version": "0.1.0",
      "previous_version": "",
      "phase": "failed",
      "reason": "start hook exited 1",
      "output": "panic: boom\n\n\tgoroutine 1\n",
      "reported_at": "2025-03-04T04:06:14.89Z",
      "rollout_id": "",
      "generation": 40
    }
  ],
  "create_index": 20,
  "modify_index": 31
}
`,
		},
		{
			name: "history table", format: formatTable,
			print: func(p printer) error { return p.history(nil, historyWeb) },
			want: `HOST   VERSION  FROM                  TO                    DURATION  OUTCOME              ROLLOUT          REASON
web-1  1.2.2    2025-03-01T03:06:07Z  2025-03-04T04:06:12Z  3d1h      replaced             r-0
web-1  1.2.3    2025-03-04T04:06:12Z  now                   9m55s     running              r-1
web-3  1.2.2    2025-03-04T03:06:07Z  2025-03-04T03:16:07Z  10m0s     failed, rolled back  r-0              verify hook exited 1
web-3  1.2.1    2025-03-04T03:16:07Z  now                   1h0m      running              r-0b (rollback)
`,
		},
		{
			name: "history json", format: formatJSON,
			print: func(p printer) error { return p.history(nil, historyWeb[1:]) },
			want: `{
  "entries": [
    {
      "app": "web",
      "agent_id": "web-1",
      "version": "1.2.3",
      "from": "2025-03-04T04:06:12.89Z",
      "to": "",
      "current": true,
      "duration_seconds": 595,
      "outcome": "running",
      "reason": "",
      "failed_at": "",
      "rollout_id": "r-1",
      "rollout_kind": "deploy",
      "replaced_by_rollout_id": "",
      "replaced_by_kind": "",
      "create_index": 41,
      "modify_index": 41
    },
    {
      "app": "web",
      "agent_id": "web-3",
      "version": "1.2.2",
      "from": "2025-03-04T03:06:07.89Z",
      "to": "2025-03-04T03:16:07.89Z",
      "current": false,
      "duration_seconds": 600,
      "outcome": "failed",
      "reason": "verify hook exited 1",
      "failed_at": "2025-03-04T03:06:17.89Z",
      "rollout_id": "r-0",
      "rollout_kind": "deploy",
      "replaced_by_rollout_id": "r-0b",
      "replaced_by_kind": "rollback",
      "create_index": 33,
      "modify_index": 36
    },
    {
      "app": "web",
      "agent_id": "web-3",
      "version": "1.2.1",
      "from": "2025-03-04T03:16:07.89Z",
      "to": "",
      "current": true,
      "duration_seconds": 3600,
      "outcome": "running",
      "reason": "",
      "failed_at": "",
      "rollout_id": "r-0b",
      "rollout_kind": "rollback",
      "replaced_by_rollout_id": "",
      "replaced_by_kind": "",
      "create_index": 36,
      "modify_index": 36
    }
  ]
}
`,
		},
		{
			name: "history json empty", format: formatJSON,
			print: func(p printer) error { return p.history(nil, nil) },
			want:  "{\n  \"entries\": []\n}\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.print(printer{w: &b, format: tt.format, now: nowOps}); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("output mismatch\n got:\n%s\nwant:\n%s\n got %q\nwant %q", got, tt.want, got, tt.want)
			}
		})
	}
}

func TestHumanUnits(t *testing.T) {
	bytesTests := []struct {
		in   uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {1<<20 - 1, "1024.0 KiB"},
		{12<<30 + 300<<20, "12.3 GiB"}, {5 << 40, "5.0 TiB"}, {1<<64 - 1, "16.0 EiB"},
	}
	for _, tt := range bytesTests {
		if got := humanBytes(tt.in); got != tt.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
	durTests := []struct {
		in   time.Duration
		want string
	}{
		{-time.Second, "0s"}, {0, "0s"}, {1500 * time.Millisecond, "1s"}, {59 * time.Second, "59s"},
		{4*time.Minute + 10*time.Second, "4m10s"}, {2*time.Hour + 5*time.Minute + 9*time.Second, "2h5m"},
		{76 * time.Hour, "3d4h"},
	}
	for _, tt := range durTests {
		if got := humanDuration(tt.in); got != tt.want {
			t.Errorf("humanDuration(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
	p := printer{now: nowOps}
	agoTests := []struct {
		at   time.Time
		want string
	}{
		{nowOps.Add(time.Minute), "0s ago"}, // clock skew
		{nowOps.Add(-3 * time.Second), "3s ago"},
		{nowOps.Add(-5*time.Minute - 59*time.Second), "5m ago"},
		{nowOps.Add(-47 * time.Hour), "47h ago"},
		{nowOps.Add(-72 * time.Hour), "3d ago"},
	}
	for _, tt := range agoTests {
		if got := p.ago(tt.at.UnixNano()); got != tt.want {
			t.Errorf("ago(now%+v) = %q, want %q", tt.at.Sub(nowOps), got, tt.want)
		}
	}
	if got := p.ago(0); got != "" {
		t.Errorf("ago(0) = %q, want empty", got)
	}
}
