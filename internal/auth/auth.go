// Package auth decides who may do what. A request's principal comes from
// the TLS certificate it arrived with (servers, agents, people holding a
// client certificate with a role) or from an operator token it carries,
// never from a request field. People's rights are roles, each optionally
// limited to apps and environments by globs; servers and agents have no
// roles but the calls their kind is for.
//
// The decision table (which method needs what) lives with the gRPC
// services in internal/server; this package holds the vocabulary, the
// role-to-permission table and the token secrets.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Principal kinds.
const (
	KindServer    = "server"
	KindAgent     = "agent"
	KindClient    = "client" // a client certificate with a role
	KindToken     = "token"
	KindAnonymous = "anonymous"
)

// Role is a person's or pipeline's role.
type Role string

// The roles, from least to most.
const (
	// Viewer reads everything but hook output.
	Viewer Role = "viewer"
	// ReleaseCreator registers releases and uploads artifacts.
	ReleaseCreator Role = "release-creator"
	// Deployer starts, steers and rolls back rollouts, and reads hook output.
	Deployer Role = "deployer"
	// Approver approves or rejects rollouts that an environment's approval
	// policy holds (change control), and reads everything but hook output.
	Approver Role = "approver"
	// Operator runs the cluster: membership, apps and environments, tokens,
	// agent enrolment and revocation.
	Operator Role = "operator"
	// Admin may do everything.
	Admin Role = "admin"
)

// Roles lists every role in order.
var Roles = []Role{Viewer, ReleaseCreator, Deployer, Approver, Operator, Admin}

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("role %q: want one of %s", s, RoleNames())
}

// RoleNames is the list of roles for messages.
func RoleNames() string {
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// Permission is one kind of thing a person may do.
type Permission string

// The permissions.
const (
	// Read: list and show apps, environments, releases, rollouts, agents,
	// history, members; plan rollouts.
	Read Permission = "read"
	// ReadOutput: see hooks' output in agents' reports (it may hold
	// anything a hook printed).
	ReadOutput Permission = "read-output"
	// CreateRelease: register releases, upload artifacts.
	CreateRelease Permission = "create-release"
	// Deploy: start, pause, resume, approve, abort and roll back rollouts.
	Deploy Permission = "deploy"
	// ManageApps: create apps and environments.
	ManageApps Permission = "manage-apps"
	// ManageCluster: remove members.
	ManageCluster Permission = "manage-cluster"
	// ManageTokens: operator tokens, join tokens, agent revocation.
	ManageTokens Permission = "manage-tokens"
	// ReadMetrics: GET /metrics.
	ReadMetrics Permission = "read-metrics"
	// Debug: /debug/pprof/ when the server runs with --enable-debug.
	Debug Permission = "debug"
	// Approve: approve or reject a rollout an approval policy holds.
	Approve Permission = "approve"
	// Emergency: start an emergency change (past a freeze, with shortened
	// approvals), which stays open for review.
	Emergency Permission = "emergency"
)

// rolePerms is what each role may do. Admin may do everything.
var rolePerms = map[Role][]Permission{
	Viewer:         {Read, ReadMetrics},
	ReleaseCreator: {Read, ReadMetrics, CreateRelease},
	Deployer:       {Read, ReadMetrics, ReadOutput, Deploy},
	Approver:       {Read, ReadMetrics, Approve},
	Operator:       {Read, ReadMetrics, ReadOutput, ManageApps, ManageCluster, ManageTokens, Debug, Emergency},
}

// Permissions lists what r may do.
func (r Role) Permissions() []Permission {
	if r == Admin {
		return []Permission{Read, ReadOutput, CreateRelease, Deploy, ManageApps, ManageCluster, ManageTokens, ReadMetrics, Debug, Approve, Emergency}
	}
	return rolePerms[r]
}

// Has reports whether r grants p.
func (r Role) Has(p Permission) bool { return slices.Contains(r.Permissions(), p) }

// MayGrant reports whether a holder of r may create a token with role g:
// nobody hands out more than they have, and only an admin makes admins.
// An operator may create tokens of any other role: running the cluster
// includes deciding who deploys.
func (r Role) MayGrant(g Role) bool {
	switch r {
	case Admin:
		return true
	case Operator:
		return g != Admin
	default:
		return false
	}
}

// Resource is what a request acts on; an empty field does not apply.
type Resource struct {
	App, Env string
}

// Grant is a role limited to apps and environments (globs; empty: all).
type Grant struct {
	Role Role
	Apps []string
	Envs []string
}

func globsMatch(globs []string, name string) bool {
	if len(globs) == 0 || name == "" {
		return true
	}
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// Allows reports whether g permits p on res.
func (g Grant) Allows(p Permission, res Resource) bool {
	return g.Role.Has(p) && globsMatch(g.Apps, res.App) && globsMatch(g.Envs, res.Env)
}

// CheckGlobs checks app or environment globs (path.Match syntax).
func CheckGlobs(kind string, globs []string) error {
	for _, g := range globs {
		if g == "" || len(g) > 128 {
			return fmt.Errorf("%s glob %q: give 1-128 characters", kind, g)
		}
		if _, err := path.Match(g, ""); err != nil {
			return fmt.Errorf("%s glob %q: %v", kind, g, err)
		}
	}
	return nil
}

// Principal is the caller of a request.
type Principal struct {
	Kind string
	// ID is a node id, a client certificate's name or a token's accessor.
	ID string
	// Name is a token's name.
	Name    string
	Grants  []Grant
	Expires time.Time
	Cluster string
	// Via is the server that forwarded the request, if any.
	Via string
	// Labels are an agent certificate's fixed labels.
	Labels map[string]string
}

// Anonymous is a caller with no credentials.
var Anonymous = Principal{Kind: KindAnonymous}

// Allows reports whether any of the principal's grants permits p on res.
func (p Principal) Allows(perm Permission, res Resource) bool {
	for _, g := range p.Grants {
		if g.Allows(perm, res) {
			return true
		}
	}
	return false
}

// HasPermission reports whether some grant permits perm on some resource.
func (p Principal) HasPermission(perm Permission) bool {
	for _, g := range p.Grants {
		if g.Role.Has(perm) {
			return true
		}
	}
	return false
}

// IsPerson reports whether the principal is a person or pipeline (a token or
// a client certificate), as opposed to a server, an agent or nobody.
func (p Principal) IsPerson() bool { return p.Kind == KindToken || p.Kind == KindClient }

// String describes the principal for logs, errors and created_by fields.
func (p Principal) String() string {
	s := p.Kind
	switch {
	case p.Kind == KindToken && p.Name != "":
		s += " " + p.ID + " (" + p.Name + ")"
	case p.ID != "":
		s += " " + p.ID
	}
	return s
}

// Proto is the principal as forwarded between servers.
func (p Principal) Proto() *relv1.Principal {
	out := &relv1.Principal{Kind: p.Kind, Id: p.ID, Name: p.Name, Cluster: p.Cluster, Labels: p.Labels}
	if !p.Expires.IsZero() {
		out.ExpiresUnixNano = p.Expires.UnixNano()
	}
	for _, g := range p.Grants {
		out.Grants = append(out.Grants, &relv1.Grant{Role: string(g.Role), Apps: g.Apps, Environments: g.Envs})
	}
	return out
}

// FromProto reads a forwarded principal.
func FromProto(pp *relv1.Principal) (Principal, error) {
	p := Principal{Kind: pp.GetKind(), ID: pp.GetId(), Name: pp.GetName(), Cluster: pp.GetCluster(), Labels: pp.GetLabels()}
	switch p.Kind {
	case KindServer, KindAgent, KindClient, KindToken, KindAnonymous:
	default:
		return Principal{}, fmt.Errorf("forwarded principal of unknown kind %q", p.Kind)
	}
	if pp.GetExpiresUnixNano() != 0 {
		p.Expires = time.Unix(0, pp.GetExpiresUnixNano())
	}
	for _, g := range pp.GetGrants() {
		r, err := ParseRole(g.GetRole())
		if err != nil {
			return Principal{}, err
		}
		p.Grants = append(p.Grants, Grant{Role: r, Apps: g.GetApps(), Envs: g.GetEnvironments()})
	}
	return p, nil
}

// TokenGrants turns a stored token's roles and scope into grants.
func TokenGrants(t *relv1.ACLToken) ([]Grant, error) {
	var out []Grant
	for _, name := range t.GetRoles() {
		r, err := ParseRole(name)
		if err != nil {
			return nil, err
		}
		out = append(out, Grant{Role: r, Apps: t.GetApps(), Envs: t.GetEnvironments()})
	}
	return out, nil
}

type ctxKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext is the principal the interceptors attached, or Anonymous.
func FromContext(ctx context.Context) Principal {
	if p, ok := ctx.Value(ctxKey{}).(Principal); ok {
		return p
	}
	return Anonymous
}

// Secret prefixes tell the kinds of secrets apart, and let secret scanners
// find them.
const (
	TokenPrefix = "relt_"
	JoinPrefix  = "relj_"
)

// NewSecret makes a secret: prefix plus 192 random bits.
func NewSecret(prefix string) (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// HashSecret is what the cluster stores of a secret. Secrets carry 192
// random bits, so a plain sha256 cannot be brute-forced and lets the
// servers look a token up by its hash without comparing secrets.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// NewAccessor makes a token's public id.
func NewAccessor() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
