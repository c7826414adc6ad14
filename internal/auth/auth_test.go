package auth

import (
	"context"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestRolePermissions pins the role table: who may do what is the security
// model, so a change to it must change this test too.
func TestRolePermissions(t *testing.T) {
	all := []Permission{Read, ReadOutput, CreateRelease, Deploy, ManageApps, ManageCluster, ManageTokens, ReadMetrics, Debug, Approve, Emergency}
	want := map[Role][]Permission{
		Viewer:         {Read, ReadMetrics},
		ReleaseCreator: {Read, ReadMetrics, CreateRelease},
		Deployer:       {Read, ReadMetrics, ReadOutput, Deploy},
		Approver:       {Read, ReadMetrics, Approve},
		Operator:       {Read, ReadMetrics, ReadOutput, ManageApps, ManageCluster, ManageTokens, Debug, Emergency},
		Admin:          all,
	}
	for _, r := range Roles {
		for _, p := range all {
			exp := false
			for _, q := range want[r] {
				exp = exp || q == p
			}
			if got := r.Has(p); got != exp {
				t.Errorf("%s has %s = %v, want %v", r, p, got, exp)
			}
		}
	}
	if len(Roles) != len(want) {
		t.Errorf("%d roles, the table here knows %d", len(Roles), len(want))
	}
	if Role("root").Has(Read) || len(Role("").Permissions()) != 0 {
		t.Error("an unknown role grants something")
	}
	// Only operators and admins see hook output beside deployers.
	if Viewer.Has(ReadOutput) || ReleaseCreator.Has(ReadOutput) {
		t.Error("viewers or release creators may read hook output")
	}
	// Separation of duties: who deploys does not approve by role, and
	// approvers deploy nothing.
	if Deployer.Has(Approve) || Approver.Has(Deploy) || Deployer.Has(Emergency) {
		t.Error("deployers may approve or approvers deploy")
	}
}

func TestMayGrant(t *testing.T) {
	for _, holder := range Roles {
		for _, g := range Roles {
			want := holder == Admin || (holder == Operator && g != Admin)
			if got := holder.MayGrant(g); got != want {
				t.Errorf("%s may grant %s = %v, want %v", holder, g, got, want)
			}
		}
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range Roles {
		got, err := ParseRole(string(r))
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, bad := range []string{"", "Admin", "root", "admin "} {
		if _, err := ParseRole(bad); err == nil || !strings.Contains(err.Error(), "want one of viewer, release-creator, deployer, approver, operator, admin") {
			t.Errorf("ParseRole(%q): %v, want an error listing the roles", bad, err)
		}
	}
}

func TestGrantScope(t *testing.T) {
	g := Grant{Role: Deployer, Apps: []string{"web*", "api"}, Envs: []string{"staging"}}
	tests := []struct {
		perm Permission
		res  Resource
		want bool
	}{
		{Deploy, Resource{App: "web", Env: "staging"}, true},
		{Deploy, Resource{App: "web-2", Env: "staging"}, true},
		{Deploy, Resource{App: "api", Env: "staging"}, true},
		{Deploy, Resource{App: "api-2", Env: "staging"}, false},
		{Deploy, Resource{App: "web", Env: "prod"}, false},
		{Deploy, Resource{App: "billing"}, false},
		// A request that names no app or environment is not limited by
		// the globs of what it does not name.
		{Deploy, Resource{App: "web"}, true},
		{Deploy, Resource{}, true},
		{ManageApps, Resource{App: "web", Env: "staging"}, false},
		{Read, Resource{App: "billing", Env: "prod"}, false},
	}
	for _, tt := range tests {
		if got := g.Allows(tt.perm, tt.res); got != tt.want {
			t.Errorf("%v allows %s on %+v = %v, want %v", g, tt.perm, tt.res, got, tt.want)
		}
	}
	if !(Grant{Role: Viewer}).Allows(Read, Resource{App: "anything", Env: "anywhere"}) {
		t.Error("an unscoped grant is limited")
	}
	p := Principal{Kind: KindToken, Grants: []Grant{g, {Role: Viewer}}}
	if !p.Allows(Read, Resource{App: "billing"}) || p.Allows(Deploy, Resource{App: "billing"}) {
		t.Error("a principal's grants do not add up")
	}
	if !p.HasPermission(Deploy) || p.HasPermission(ManageTokens) {
		t.Error("HasPermission ignores scope wrongly")
	}
}

func TestCheckGlobs(t *testing.T) {
	if err := CheckGlobs("app", []string{"web*", "api", "b?t", "[a-c]*"}); err != nil {
		t.Errorf("good globs: %v", err)
	}
	for _, bad := range []string{"", "[web", strings.Repeat("a", 129)} {
		if err := CheckGlobs("app", []string{"web", bad}); err == nil || !strings.Contains(err.Error(), "app glob") {
			t.Errorf("glob %q: %v, want an error naming the app glob", bad, err)
		}
	}
}

func TestPrincipalProtoRoundTrip(t *testing.T) {
	ps := []Principal{
		{Kind: KindToken, ID: "0123456789abcdef", Name: "ci-web", Cluster: "prod",
			Grants:  []Grant{{Role: Deployer, Apps: []string{"web*"}, Envs: []string{"prod"}}, {Role: Viewer}},
			Expires: time.Unix(0, 1_900_000_000_123_456_789)},
		{Kind: KindAgent, ID: "web-1", Cluster: "prod", Labels: map[string]string{"env": "prod", "rack": "r1"}, Expires: time.Unix(1_800_000_000, 0)},
		{Kind: KindServer, ID: "s1", Cluster: "prod"},
		{Kind: KindClient, ID: "alice", Cluster: "prod", Grants: []Grant{{Role: Admin}}},
		Anonymous,
	}
	for _, p := range ps {
		got, err := FromProto(p.Proto())
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		// Via is set by the receiving server, never carried.
		if !reflect.DeepEqual(got, p) {
			t.Errorf("round trip of %s:\n got %#v\nwant %#v", p, got, p)
		}
	}
	if _, err := FromProto(&relv1.Principal{Kind: "superuser"}); err == nil || !strings.Contains(err.Error(), `unknown kind "superuser"`) {
		t.Errorf("unknown kind: %v", err)
	}
	if _, err := FromProto(&relv1.Principal{Kind: KindToken, Grants: []*relv1.Grant{{Role: "root"}}}); err == nil {
		t.Error("a forwarded grant of an unknown role was accepted")
	}
}

func TestPrincipalString(t *testing.T) {
	tests := []struct {
		p    Principal
		want string
	}{
		{Principal{Kind: KindToken, ID: "0123456789abcdef", Name: "ci"}, "token 0123456789abcdef (ci)"},
		{Principal{Kind: KindAgent, ID: "web-1"}, "agent web-1"},
		{Anonymous, "anonymous"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.p, got, tt.want)
		}
	}
	for kind, person := range map[string]bool{KindToken: true, KindClient: true, KindAgent: false, KindServer: false, KindAnonymous: false} {
		if got := (Principal{Kind: kind}).IsPerson(); got != person {
			t.Errorf("%s IsPerson = %v", kind, got)
		}
	}
}

func TestContext(t *testing.T) {
	if p := FromContext(context.Background()); p.Kind != KindAnonymous {
		t.Errorf("a context without a principal is %s, want anonymous", p)
	}
	p := Principal{Kind: KindAgent, ID: "web-1"}
	if got := FromContext(NewContext(context.Background(), p)); got.ID != "web-1" || got.Kind != KindAgent {
		t.Errorf("principal from context: %s", got)
	}
}

func TestSecrets(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		s, err := NewSecret(TokenPrefix)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, TokenPrefix) || len(s) != len(TokenPrefix)+32 {
			t.Fatalf("secret %q: want %s and 32 base64url characters (192 bits)", s, TokenPrefix)
		}
		if seen[s] {
			t.Fatalf("secret %q made twice", s)
		}
		seen[s] = true
	}
	j, _ := NewSecret(JoinPrefix)
	if !strings.HasPrefix(j, "relj_") {
		t.Errorf("join secret %q", j)
	}

	h := HashSecret("relt_abc")
	if h != HashSecret("relt_abc") {
		t.Error("HashSecret is not deterministic")
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(h) {
		t.Errorf("hash %q: want 64 lower-case hex digits (what validate accepts)", h)
	}
	if h == HashSecret("relt_abd") || strings.Contains(h, "abc") {
		t.Error("hashes of different secrets collide, or a hash shows the secret")
	}
	// sha256("abc"), so that the stored form stays readable by other
	// builds and tools.
	if got := HashSecret("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("HashSecret(abc) = %s", got)
	}
	for i := 0; i < 20; i++ {
		if a := NewAccessor(); !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(a) {
			t.Fatalf("accessor %q: want 16 hex digits", a)
		}
	}
}

func TestTokenGrants(t *testing.T) {
	gs, err := TokenGrants(&relv1.ACLToken{Roles: []string{"deployer", "viewer"}, Apps: []string{"web*"}, Environments: []string{"prod"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []Grant{{Role: Deployer, Apps: []string{"web*"}, Envs: []string{"prod"}}, {Role: Viewer, Apps: []string{"web*"}, Envs: []string{"prod"}}}
	if !reflect.DeepEqual(gs, want) {
		t.Errorf("grants %v, want %v", gs, want)
	}
	if _, err := TokenGrants(&relv1.ACLToken{Roles: []string{"root"}}); err == nil {
		t.Error("a stored token of an unknown role gave grants")
	}
}
