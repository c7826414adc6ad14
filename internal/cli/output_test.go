package cli

import (
	"bytes"
	"testing"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var (
	t0 = time.Date(2025, 3, 4, 5, 6, 7, 890_000_000, time.FixedZone("CET", 3600)).UnixNano()

	appWeb = &relv1.App{Name: "web", Description: "Public website", CreatedUnixNano: t0, CreateIndex: 12, ModifyIndex: 12}
	appAPI = &relv1.App{Name: "api", CreatedUnixNano: t0, CreateIndex: 13, ModifyIndex: 15}

	envProd = &relv1.Environment{Name: "prod", Description: "Production",
		Selector: map[string]string{"tier": "prod", "region": "eu"}, CreatedUnixNano: t0, CreateIndex: 16, ModifyIndex: 16}

	releaseWeb = &relv1.Release{App: "web", Version: "1.2.3",
		ArtifactUrl: "https://ci.example.com/web-1.2.3.tar.gz?a=1&b=<2>",
		Sha256:      "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Notes:       "Fixes the login loop.\n\nFaster start.\n", Commit: "4f2a9c1", Size: 1572864,
		Labels:          map[string]string{"team": "web", "channel": "stable"},
		CreatedUnixNano: t0, CreateIndex: 14, ModifyIndex: 14}
	releaseBare = &relv1.Release{App: "api", Version: "0.1.0", ArtifactUrl: "file:///srv/api.tgz", Sha256: "ab",
		CreatedUnixNano: t0, CreateIndex: 17, ModifyIndex: 17}

	memberN1 = &relv1.Member{Id: "n1", Role: "leader", Leader: true, Suffrage: "Voter",
		RaftAddr: "10.0.0.1:7401", GrpcAddr: "10.0.0.1:7400", HttpAddr: "10.0.0.1:7402",
		AppliedIndex: 42, CommitIndex: 42, LastIndex: 43}
	memberN2 = &relv1.Member{Id: "n2", Role: "follower", Suffrage: "Voter",
		RaftAddr: "10.0.0.2:7401", GrpcAddr: "10.0.0.2:7400", HttpAddr: "10.0.0.2:7402",
		AppliedIndex: 41, CommitIndex: 42, LastIndex: 42}
	memberN3 = &relv1.Member{Id: "n3", Role: "unreachable", Suffrage: "Voter",
		RaftAddr: "10.0.0.3:7401", GrpcAddr: "10.0.0.3:7400", HttpAddr: "10.0.0.3:7402",
		Error: "dial tcp 10.0.0.3:7400: connect: connection refused"}
)

func TestOutput(t *testing.T) {
	tests := []struct {
		name   string
		format string
		print  func(p printer) error
		want   string
	}{
		{
			name: "apps table", format: formatTable,
			print: func(p printer) error { return p.apps([]*relv1.App{appWeb, appAPI}) },
			want: "" +
				"NAME  DESCRIPTION     CREATED\n" +
				"web   Public website  2025-03-04T04:06:07Z\n" +
				"api                   2025-03-04T04:06:07Z\n",
		},
		{
			name: "apps table empty", format: formatTable,
			print: func(p printer) error { return p.apps(nil) },
			want:  "NAME  DESCRIPTION  CREATED\n",
		},
		{
			name: "apps json", format: formatJSON,
			print: func(p printer) error { return p.apps([]*relv1.App{appWeb, appAPI}) },
			want: `{
  "apps": [
    {
      "name": "web",
      "description": "Public website",
      "created_at": "2025-03-04T04:06:07.89Z",
      "create_index": 12,
      "modify_index": 12
    },
    {
      "name": "api",
      "description": "",
      "created_at": "2025-03-04T04:06:07.89Z",
      "create_index": 13,
      "modify_index": 15
    }
  ]
}
`,
		},
		{
			name: "apps json empty", format: formatJSON,
			print: func(p printer) error { return p.apps(nil) },
			want:  "{\n  \"apps\": []\n}\n",
		},
		{
			name: "app created table", format: formatTable,
			print: func(p printer) error { return p.created("app", "web", 12, toAppJSON(appWeb)) },
			want:  "created app web (index 12)\n",
		},
		{
			name: "app created json", format: formatJSON,
			print: func(p printer) error { return p.created("app", "web", 12, toAppJSON(appWeb)) },
			want: `{
  "name": "web",
  "description": "Public website",
  "created_at": "2025-03-04T04:06:07.89Z",
  "create_index": 12,
  "modify_index": 12
}
`,
		},
		{
			name: "environments table", format: formatTable,
			print: func(p printer) error {
				staging := &relv1.Environment{Name: "staging", Selector: map[string]string{"tier": "staging"}, CreatedUnixNano: envProd.GetCreatedUnixNano(),
					DefaultSpec: &relv1.RolloutSpec{Strategy: "rolling", MaxParallel: 2}}
				return p.environments([]*relv1.Environment{envProd, staging})
			},
			want: "" +
				"NAME     SELECTOR             DESCRIPTION  PROMOTE WITH                             CREATED\n" +
				"prod     region=eu,tier=prod  Production   defaults                                 2025-03-04T04:06:07Z\n" +
				"staging  tier=staging                      rolling, max-parallel 2, max-failures 0  2025-03-04T04:06:07Z\n",
		},
		{
			name: "environments json", format: formatJSON,
			print: func(p printer) error { return p.environments([]*relv1.Environment{envProd}) },
			want: `{
  "environments": [
    {
      "name": "prod",
      "description": "Production",
      "selector": {
        "region": "eu",
        "tier": "prod"
      },
      "created_at": "2025-03-04T04:06:07.89Z",
      "create_index": 16,
      "modify_index": 16
    }
  ]
}
`,
		},
		{
			name: "environment created table", format: formatTable,
			print: func(p printer) error { return p.created("environment", "prod", 16, toEnvironmentJSON(envProd)) },
			want:  "created environment prod (index 16)\n",
		},
		{
			name: "environment created json", format: formatJSON,
			print: func(p printer) error {
				return p.created("environment", "dev", 18, toEnvironmentJSON(&relv1.Environment{Name: "dev"}))
			},
			// No selector and no time: {} and "", never null or 1970.
			want: `{
  "name": "dev",
  "description": "",
  "selector": {},
  "created_at": "",
  "create_index": 0,
  "modify_index": 0
}
`,
		},
		{
			name: "releases table", format: formatTable,
			print: func(p printer) error { return p.releases([]*relv1.Release{releaseWeb, releaseBare}) },
			want: "" +
				"APP  VERSION  COMMIT   LABELS                   CREATED\n" +
				"web  1.2.3    4f2a9c1  channel=stable,team=web  2025-03-04T04:06:07Z\n" +
				"api  0.1.0                                      2025-03-04T04:06:07Z\n",
		},
		{
			name: "releases json", format: formatJSON,
			print: func(p printer) error { return p.releases([]*relv1.Release{releaseBare}) },
			want: `{
  "releases": [
    {
      "app": "api",
      "version": "0.1.0",
      "artifact_url": "file:///srv/api.tgz",
      "sha256": "ab",
      "size": 0,
      "notes": "",
      "commit": "",
      "labels": {},
      "created_at": "2025-03-04T04:06:07.89Z",
      "create_index": 17,
      "modify_index": 17
    }
  ]
}
`,
		},
		{
			name: "release created table", format: formatTable,
			print: func(p printer) error { return p.created("release", "web@1.2.3", 14, toReleaseJSON(releaseWeb)) },
			want:  "created release web@1.2.3 (index 14)\n",
		},
		{
			name: "release show table", format: formatTable,
			print: func(p printer) error { return p.release(releaseWeb) },
			want: "" +
				"App:          web\n" +
				"Version:      1.2.3\n" +
				"Artifact URL: https://ci.example.com/web-1.2.3.tar.gz?a=1&b=<2>\n" +
				"SHA256:       9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n" +
				"Size:         1.5 MiB (1572864 bytes)\n" +
				"Commit:       4f2a9c1\n" +
				"Labels:       channel=stable,team=web\n" +
				"Created:      2025-03-04T04:06:07Z\n" +
				"Create index: 14\n" +
				"Modify index: 14\n" +
				"Notes:\n" +
				"  Fixes the login loop.\n" +
				"\n" +
				"  Faster start.\n",
		},
		{
			name: "release show table without notes", format: formatTable,
			print: func(p printer) error { return p.release(releaseBare) },
			want: "" +
				"App:          api\n" +
				"Version:      0.1.0\n" +
				"Artifact URL: file:///srv/api.tgz\n" +
				"SHA256:       ab\n" +
				"Size:\n" +
				"Commit:\n" +
				"Labels:\n" +
				"Created:      2025-03-04T04:06:07Z\n" +
				"Create index: 17\n" +
				"Modify index: 17\n" +
				"Notes:        (none)\n",
		},
		{
			name: "release show json", format: formatJSON,
			print: func(p printer) error { return p.release(releaseWeb) },
			want: `{
  "app": "web",
  "version": "1.2.3",
  "artifact_url": "https://ci.example.com/web-1.2.3.tar.gz?a=1&b=<2>",
  "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
  "size": 1572864,
  "notes": "Fixes the login loop.\n\nFaster start.\n",
  "commit": "4f2a9c1",
  "labels": {
    "channel": "stable",
    "team": "web"
  },
  "created_at": "2025-03-04T04:06:07.89Z",
  "create_index": 14,
  "modify_index": 14
}
`,
		},
		{
			name: "members table", format: formatTable,
			print: func(p printer) error { return p.members([]*relv1.Member{memberN1, memberN2}) },
			want: "" +
				"ID  ROLE      LEADER  SUFFRAGE  RAFT ADDR      GRPC ADDR      HTTP ADDR      APPLIED INDEX\n" +
				"n1  leader    *       Voter     10.0.0.1:7401  10.0.0.1:7400  10.0.0.1:7402  42\n" +
				"n2  follower          Voter     10.0.0.2:7401  10.0.0.2:7400  10.0.0.2:7402  41\n",
		},
		{
			name: "members table with error column", format: formatTable,
			print: func(p printer) error { return p.members([]*relv1.Member{memberN1, memberN3}) },
			want: "" +
				"ID  ROLE         LEADER  SUFFRAGE  RAFT ADDR      GRPC ADDR      HTTP ADDR      APPLIED INDEX  ERROR\n" +
				"n1  leader       *       Voter     10.0.0.1:7401  10.0.0.1:7400  10.0.0.1:7402  42\n" +
				"n3  unreachable          Voter     10.0.0.3:7401  10.0.0.3:7400  10.0.0.3:7402  0              dial tcp 10.0.0.3:7400: connect: connection refused\n",
		},
		{
			name: "members json", format: formatJSON,
			print: func(p printer) error { return p.members([]*relv1.Member{memberN1, memberN3}) },
			want: `{
  "members": [
    {
      "id": "n1",
      "role": "leader",
      "leader": true,
      "suffrage": "Voter",
      "raft_addr": "10.0.0.1:7401",
      "grpc_addr": "10.0.0.1:7400",
      "http_addr": "10.0.0.1:7402",
      "applied_index": 42,
      "commit_index": 42,
      "last_index": 43,
      "error": ""
    },
    {
      "id": "n3",
      "role": "unreachable",
      "leader": false,
      "suffrage": "Voter",
      "raft_addr": "10.0.0.3:7401",
      "grpc_addr": "10.0.0.3:7400",
      "http_addr": "10.0.0.3:7402",
      "applied_index": 0,
      "commit_index": 0,
      "last_index": 0,
      "error": "dial tcp 10.0.0.3:7400: connect: connection refused"
    }
  ]
}
`,
		},
		{
			name: "removed table", format: formatTable,
			print: func(p printer) error { return p.removed("n3", 57) },
			want:  "removed node n3 (index 57)\n",
		},
		{
			name: "removed json", format: formatJSON,
			print: func(p printer) error { return p.removed("n3", 57) },
			want:  "{\n  \"id\": \"n3\",\n  \"index\": 57\n}\n",
		},
		{
			name: "version table", format: formatTable,
			print: func(p printer) error {
				return p.version(versionJSON{ClientVersion: "v1.0.0",
					Server: &serverVersionJSON{ID: "n1", Version: "v1.0.1", Address: "10.0.0.1:7400"}})
			},
			want: "" +
				"Client version: v1.0.0\n" +
				"Server:         n1 at 10.0.0.1:7400\n" +
				"Server version: v1.0.1\n",
		},
		{
			name: "version table unreachable", format: formatTable,
			print: func(p printer) error {
				return p.version(versionJSON{ClientVersion: "v1.0.0", ServerError: "unreachable: no rel server reachable"})
			},
			want: "" +
				"Client version: v1.0.0\n" +
				"Server:         unreachable: no rel server reachable\n",
		},
		{
			name: "version json", format: formatJSON,
			print: func(p printer) error {
				return p.version(versionJSON{ClientVersion: "v1.0.0",
					Server: &serverVersionJSON{ID: "n1", Version: "v1.0.1", Address: "10.0.0.1:7400"}})
			},
			want: `{
  "client_version": "v1.0.0",
  "server": {
    "id": "n1",
    "version": "v1.0.1",
    "address": "10.0.0.1:7400"
  }
}
`,
		},
		{
			name: "version json unreachable", format: formatJSON,
			print: func(p printer) error {
				return p.version(versionJSON{ClientVersion: "v1.0.0", ServerError: "unreachable: x"})
			},
			want: "{\n  \"client_version\": \"v1.0.0\",\n  \"server\": null,\n  \"server_error\": \"unreachable: x\"\n}\n",
		},
		{
			name: "table cells cannot break columns or drive the terminal", format: formatTable,
			print: func(p printer) error {
				return p.apps([]*relv1.App{{Name: "web", Description: "two\tcells\nand \x1b[31mred"}})
			},
			want: "" +
				"NAME  DESCRIPTION             CREATED\n" +
				"web   two cells and  [31mred\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.print(printer{w: &b, format: tt.format}); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("output mismatch\n got:\n%s\nwant:\n%s\n got %q\nwant %q", got, tt.want, got, tt.want)
			}
		})
	}
}

func TestFormatMap(t *testing.T) {
	tests := []struct {
		in   map[string]string
		want string
	}{
		{in: nil, want: ""},
		{in: map[string]string{"a": "1"}, want: "a=1"},
		{in: map[string]string{"z": "26", "a": "1", "m": ""}, want: "a=1,m=,z=26"},
	}
	for _, tt := range tests {
		if got := formatMap(tt.in); got != tt.want {
			t.Errorf("formatMap(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestEventHosts(t *testing.T) {
	for _, tc := range []struct {
		e    *relv1.RolloutEvent
		want string
	}{
		{&relv1.RolloutEvent{}, ""},
		{&relv1.RolloutEvent{Host: "web-1"}, "web-1"},
		{&relv1.RolloutEvent{Hosts: []string{"web-1", "web-2", "web-3"}}, "web-1,web-2,web-3"},
		{&relv1.RolloutEvent{Hosts: []string{"web-1", "web-2", "web-3", "web-4", "web-5"}}, "web-1,web-2 (+3)"},
	} {
		if got := eventHosts(tc.e); got != tc.want {
			t.Errorf("eventHosts(%v) = %q, want %q", tc.e, got, tc.want)
		}
	}
}
