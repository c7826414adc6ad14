package install

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// geteuid is the agent's effective uid; tests replace it to play an agent
// that is not root.
var geteuid = os.Geteuid

// userNameRE is what rel.yaml's user may be: a login name as useradd
// takes it (letters, digits, _ . -, not starting with -), at most 32.
var userNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$`)

// runUser is the user a release's hooks, run process and exec health
// check run as.
type runUser struct {
	name     string
	uid, gid int
	// cred switches to the user (uid, gid, supplementary groups); nil when
	// it is the agent's own user and nothing needs switching.
	cred *syscall.Credential
}

// credential is what to start processes with: nil for the agent's own
// user (or no user at all).
func (u *runUser) credential() *syscall.Credential {
	if u == nil {
		return nil
	}
	return u.cred
}

// other reports whether the release runs as another user than the agent:
// its tree is then shared with the user's group, read-only.
func (u *runUser) other() bool { return u != nil && u.cred != nil }

// ownUserName is the name of the user the agent runs as, or its uid when
// the user database does not know it (a container started with --user).
func ownUserName() string {
	if u, err := user.LookupId(strconv.Itoa(geteuid())); err == nil {
		return u.Username
	}
	return strconv.Itoa(geteuid())
}

// lookupUser resolves a user name into the credential to start processes
// with. The user database is read on every call: group memberships
// changed on the host apply at the next start, as with a login.
func lookupUser(name string) (*runUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("%q does not exist on this host", name)
		}
		return nil, fmt.Errorf("%q: %w", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("%q has uid %q and gid %q: not numbers", name, u.Uid, u.Gid)
	}
	ru := &runUser{name: u.Username, uid: uid, gid: gid}
	euid := geteuid()
	if uid == euid {
		return ru, nil
	}
	if euid != 0 {
		return nil, fmt.Errorf("%q: running as another user needs rel-agent to run as root (it runs as uid %d)", name, euid)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("%q: supplementary groups: %w", name, err)
	}
	// Always set (an empty list too): a child must not keep root's
	// supplementary groups.
	groups := make([]uint32, 0, len(gids))
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q: group id %q is not a number", name, g)
		}
		groups = append(groups, uint32(n))
	}
	ru.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}
	return ru, nil
}

// releaseUser decides who a release runs as: rel.yaml's user when it names
// one, which must be the agent's default user (RunAs, or the agent's own)
// or one of AllowedUsers, else the default user.
func (h *Host) releaseUser(sp *spec) (*runUser, error) {
	name := sp.User
	if name == "" {
		if h.cfg.RunAs == "" {
			return &runUser{name: h.ownName, uid: geteuid(), gid: os.Getegid()}, nil
		}
		u, err := lookupUser(h.cfg.RunAs)
		if err != nil {
			return nil, fmt.Errorf("run-as user %v", err)
		}
		return u, nil
	}
	if !slices.Contains(h.allowedUsers(), name) {
		return nil, errAt("user", "%q is not allowed on this agent (allowed: %s; see rel-agent --allowed-users)",
			name, strings.Join(h.allowedUsers(), ", "))
	}
	if name == h.ownName {
		return &runUser{name: h.ownName, uid: geteuid(), gid: os.Getegid()}, nil
	}
	u, err := lookupUser(name)
	if err != nil {
		return nil, errAt("user", "%v", err)
	}
	return u, nil
}

// allowedUsers is what rel.yaml's user may name: the default user first.
func (h *Host) allowedUsers() []string {
	def := h.cfg.RunAs
	if def == "" {
		def = h.ownName
	}
	out := []string{def}
	for _, u := range h.cfg.AllowedUsers {
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// checkUsers validates RunAs and AllowedUsers when a Host opens: RunAs must
// exist and, being another user, needs root. It reports whether releases
// may run as users other than the agent's own (their directories must then
// be reachable by them).
func checkUsers(cfg Config, own string) (others bool, err error) {
	for _, name := range cfg.AllowedUsers {
		if !userNameRE.MatchString(name) {
			return false, fmt.Errorf("install: allowed user %q is not a user name", name)
		}
		if name != own {
			others = true
		}
	}
	if cfg.RunAs != "" {
		u, err := lookupUser(cfg.RunAs)
		if err != nil {
			return false, fmt.Errorf("install: run-as user %v", err)
		}
		if u.other() {
			others = true
		}
	}
	return others, nil
}
