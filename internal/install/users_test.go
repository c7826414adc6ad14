package install

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/relhq/rel/internal/textcut"
)

// nobody is the unprivileged user of the tests that switch users.
const (
	nobodyUID = 65534
	nobodyGID = 65534
)

// idScript prints who runs it; the tests look for uid=65534 in the logs.
const idScript = `echo "$0 uid=$(id -u) gid=$(id -g) groups=$(id -G)"`

// asNobodySpec has every hook and the run process print who they run as,
// checks that the release is not writable by them, and an exec health
// check that passes only as nobody.
func asNobodySpec(user string) string {
	s := `hooks:
  before_install: sh -c '` + idScript + `' before_install; if touch probe 2>/dev/null; then echo "staging dir writable"; exit 1; fi
  after_install: sh -c '` + idScript + `' after_install
  stop: sh -c '` + idScript + `' stop
  start: sh -c '` + idScript + `' start
  validate: sh -c '` + idScript + `' validate; if touch probe 2>/dev/null || echo x >> VERSION 2>/dev/null; then echo "release writable"; exit 1; fi
run: ./bin/run
health:
  exec: test "$(id -u)" = 65534 && test "$(id -G)" = 65534 && cat bin/run > /dev/null
  interval: 20ms
  healthy_after: 50ms
  deadline: 10s
stop_timeout: 2s
`
	if user != "" {
		s += "user: " + user + "\n"
	}
	return s
}

// nobodyBundle is a release whose run process prints who it runs as and
// stays up without writing anything (the release is read-only to it).
func nobodyBundle(t *testing.T, version, spec string) []byte {
	return gzipBytes(t, makeTar(t,
		dir("./"), dir("./bin/"),
		exe("./bin/run", "#!/bin/sh\n"+idScript+"\nexec sleep 300\n"),
		withMode(file("./conf/secret", "s3cret"), 0o600),
		file("./VERSION", version+"\n"),
		file("./rel.yaml", spec),
	))
}

// openToOthers lets another user reach the test's directories: t.TempDir
// makes them 0700, which a real install root is not.
func openToOthers(t *testing.T, e *testEnv) {
	base := filepath.Dir(e.cfg.Root)
	must(t, os.Chmod(base, 0o711))
	must(t, os.Chmod(filepath.Dir(base), 0o711))
}

func owner(t *testing.T, p string) (uid, gid int, perm fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid), fi.Mode().Perm()
}

// TestRunAsNobody: hooks (before_install, after_install, start, validate,
// and the old release's stop on an upgrade), the supervised run process
// and the exec health check run as nobody, whether Config.RunAs or
// rel.yaml's user says so. The release tree is the agent's, readable by
// nobody's group and writable by no one else; .rel/ stays the agent's.
func TestRunAsNobody(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		user string // rel.yaml's user
	}{
		{"RunAs", func(c *Config) { c.RunAs = "nobody" }, ""},
		{"rel.yaml user", func(c *Config) { c.AllowedUsers = []string{"nobody"} }, "nobody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnvWith(t, tc.mod)
			openToOthers(t, e)
			lay := e.lay("web")
			for _, v := range []string{"1.0.0", "2.0.0"} {
				if err := e.apply(e.publish("web", v, nobodyBundle(t, v, asNobodySpec(tc.user)))); err != nil {
					t.Fatalf("Apply %s: %v", v, err)
				}
			}
			checkPhases(t, e.rec.take(),
				PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying, PhaseHealthy,
				PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying, PhaseHealthy)

			who := "uid=65534 gid=65534 groups=65534"
			logs := map[string]string{
				filepath.Join(lay.releaseDir("2.0.0"), ".rel", "hook-before_install.log"): "before_install " + who,
				filepath.Join(lay.releaseDir("2.0.0"), ".rel", "hook-after_install.log"):  "after_install " + who,
				filepath.Join(lay.releaseDir("2.0.0"), ".rel", "hook-start.log"):          "start " + who,
				filepath.Join(lay.releaseDir("2.0.0"), ".rel", "hook-validate.log"):       "validate " + who,
				filepath.Join(lay.releaseDir("1.0.0"), ".rel", "hook-stop.log"):           "stop " + who,
			}
			for p, want := range logs {
				if got := readFile(t, p); !strings.Contains(got, want) {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
			runLog := filepath.Join(lay.releaseDir("2.0.0"), ".rel", runLogName)
			waitFor(t, "the run process to say who it is", 5*time.Second, func() bool {
				return strings.Contains(readFile(t, runLog), "./bin/run "+who)
			})
			e.host.mu.Lock()
			sup := e.host.apps["web"].proc
			e.host.mu.Unlock()
			status := readFile(t, "/proc/"+strconv.Itoa(sup.Pid())+"/status")
			if !strings.Contains(status, "\nUid:\t65534\t65534\t65534\t65534\n") || !strings.Contains(status, "\nGroups:\t65534 \n") {
				t.Errorf("run process status:\n%s", status)
			}

			// The tree: the agent's, shared read-only with nobody's group.
			rel := lay.releaseDir("2.0.0")
			for p, want := range map[string]fs.FileMode{
				rel:                                0o750,
				filepath.Join(rel, "bin"):          0o750,
				filepath.Join(rel, "bin/run"):      0o750,
				filepath.Join(rel, "VERSION"):      0o640,
				filepath.Join(rel, "conf/secret"):  0o640, // the service reads its own secrets
				filepath.Join(rel, specFileName):   0o640,
				filepath.Join(rel, "conf"):         0o750,
				filepath.Join(rel, relDirName):     0o750,
				filepath.Join(rel, ".rel/run.log"): 0o640,
			} {
				uid, gid, perm := owner(t, p)
				wantGID := nobodyGID
				if strings.Contains(p, relDirName) {
					wantGID = 0
				}
				if uid != 0 || gid != wantGID || perm != want {
					t.Errorf("%s: %d:%d %v, want 0:%d %v", p, uid, gid, perm, wantGID, want)
				}
			}
			for _, p := range []string{e.cfg.Root, lay.appDir(), lay.releasesDir()} {
				if _, _, perm := owner(t, p); perm != traverseMode {
					t.Errorf("%s: %v, want %v (others search, not list)", p, perm, fs.FileMode(traverseMode))
				}
			}

			// The agent restarts without nobody among its users: the kept
			// release is checked again at its next start. rel.yaml's user is
			// refused before anything runs; a release that ran as RunAs
			// is taken back from nobody's group (its validate hook, which
			// checks that it cannot write the release, then fails: it runs
			// as the agent).
			e.close()
			e.cfg.RunAs, e.cfg.AllowedUsers = "", nil
			e.open()
			err := e.apply(e.publish("web", "1.0.0", nobodyBundle(t, "1.0.0", asNobodySpec(tc.user))))
			ev := e.rec.take()
			want := "hook validate exited 1"
			if tc.user != "" {
				want = `rel.yaml: user: "nobody" is not allowed on this agent`
			}
			if err == nil || !strings.Contains(ev[len(ev)-1].Reason, want) {
				t.Fatalf("Apply of the kept 1.0.0 as the agent: %v, want %q", err, want)
			}
			if _, gid, _ := owner(t, lay.releaseDir("1.0.0")); tc.user == "" && gid != os.Getegid() {
				t.Errorf("1.0.0 still belongs to group %d", gid)
			}
		})
	}
}

// TestRelYAMLUserRefused: a rel.yaml user the agent may not use fails the
// install with the field named and the way to allow it, before any hook
// runs; nothing is installed and the current release is untouched.
func TestRelYAMLUserRefused(t *testing.T) {
	own := ownUserName()
	other := "nobody" // a user that exists and is not the agent's
	if own == other {
		other = "root"
	}
	allowOther := func(c *Config) { c.AllowedUsers = []string{other} }
	tests := []struct {
		name    string
		mod     func(*Config)
		user    string
		notRoot bool
		want    string
	}{
		{"not among the allowed users", allowOther, "postgres", false,
			`rel.yaml: user: "postgres" is not allowed on this agent (allowed: ` + own + `, ` + other + `; see rel-agent --allowed-users)`},
		{"no other user allowed", nil, other, false,
			`rel.yaml: user: "` + other + `" is not allowed on this agent (allowed: ` + own + `; see rel-agent --allowed-users)`},
		{"allowed but not on this host", func(c *Config) { c.AllowedUsers = []string{"rel-no-such-user"} }, "rel-no-such-user", false,
			`rel.yaml: user: "rel-no-such-user" does not exist on this host`},
		{"not a user name", allowOther, `"no body"`, false,
			`rel.yaml: user: "no body" is not a user name`},
		{"another user without root", allowOther, other, true,
			`rel.yaml: user: "` + other + `": running as another user needs rel-agent to run as root (it runs as uid 4242)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnvWith(t, tc.mod)
			// 1.0.0 runs as the default user.
			if err := e.apply(e.publish("web", "1.0.0", e.stdBundle("1.0.0"))); err != nil {
				t.Fatal(err)
			}
			e.rec.take()
			hooksBefore := len(e.hookLines())
			if tc.notRoot {
				defer func(f func() int) { geteuid = f }(geteuid)
				geteuid = func() int { return 4242 }
			}
			spec := relYAML(e.hooks, "2.0.0") + "user: " + tc.user + "\n"
			err := e.apply(e.publish("web", "2.0.0", bundle(t, "2.0.0", spec)))
			if err == nil {
				t.Fatal("Apply succeeded")
			}
			ev := e.rec.take()
			checkPhases(t, ev, PhaseDownloading, PhaseInstalling, PhaseFailed)
			if !strings.HasPrefix(ev[2].Reason, tc.want) {
				t.Errorf("reason %q\nwant %q", ev[2].Reason, tc.want)
			}
			if n := len(e.hookLines()); n != hooksBefore {
				t.Errorf("hooks ran: %q", e.hookLines()[hooksBefore:])
			}
			entries, _ := os.ReadDir(e.lay("web").releasesDir())
			if len(entries) != 1 || entries[0].Name() != "1.0.0" {
				t.Errorf("releases/ holds %v", entries)
			}
			if e.current("web") != "1.0.0" {
				t.Errorf("current = %s", e.current("web"))
			}
		})
	}
}

// TestReleaseModes: bundle files lose group and world write (a 0777 file
// ends up 0755) and setuid; what the agent writes has no world access.
func TestReleaseModes(t *testing.T) {
	e := newTestEnv(t)
	spec := relYAML(e.hooks, "1.0.0")
	data := bundle(t, "1.0.0", spec,
		withMode(file("./wide", "w"), 0o777),
		withMode(file("./shared", "s"), 0o666),
		withMode(file("./suid", "x"), 0o4777),
		withMode(dir("./open/"), 0o777),
		file("./open/f", "f"),
	)
	if err := e.apply(e.publish("web", "1.0.0", data)); err != nil {
		t.Fatal(err)
	}
	rel := e.lay("web").releaseDir("1.0.0")
	waitFor(t, "run.pgid", 5*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(rel, relDirName, "run.pgid"))
		return err == nil
	})
	for p, want := range map[string]fs.FileMode{
		filepath.Join(rel, "wide"):                               0o755,
		filepath.Join(rel, "shared"):                             0o644,
		filepath.Join(rel, "suid"):                               0o755,
		filepath.Join(rel, "open"):                               0o755 | fs.ModeDir,
		filepath.Join(rel, "bin/server"):                         0o755,
		rel:                                                      0o750 | fs.ModeDir,
		filepath.Join(rel, relDirName):                           0o750 | fs.ModeDir,
		filepath.Join(rel, relDirName, markerName):               0o640,
		filepath.Join(rel, relDirName, runLogName):               0o640,
		filepath.Join(rel, relDirName, "run.pgid"):               0o640,
		filepath.Join(rel, relDirName, "hook-start.log"):         0o640,
		filepath.Join(rel, relDirName, "hook-validate.log"):      0o640,
		e.lay("web").releasesDir():                               0o750 | fs.ModeDir,
		e.lay("web").appDir():                                    0o750 | fs.ModeDir,
		e.cfg.Root:                                               0o750 | fs.ModeDir,
		e.cfg.DataDir:                                            0o750 | fs.ModeDir,
		filepath.Join(e.cfg.DataDir, "downloads"):                0o700 | fs.ModeDir,
		filepath.Join(e.cfg.DataDir, "state.json"):               0o600,
		filepath.Join(e.cfg.DataDir, "agent.lock"):               0o600,
		filepath.Join(rel, relDirName, "hook-after_install.log"): 0o640,
	} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Error(err)
			continue
		}
		if got := fi.Mode() & (fs.ModePerm | fs.ModeDir | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky); got != want {
			t.Errorf("%s: %v, want %v", p, got, want)
		}
	}
}

// TestHookOutputCap: a failing hook's Event carries at most the last 1 KiB
// of its output, cut on a character boundary; the log keeps all of it.
func TestHookOutputCap(t *testing.T) {
	e := newTestEnv(t)
	// 1 + 2*3000 + 1 bytes: the last 1024 start in the middle of an "é".
	out := "x" + strings.Repeat("é", 3000)
	spec := "hooks:\n  before_install: printf '%s\\n' '" + out + "'; exit 5\n"
	err := e.apply(e.publish("web", "1.0.0", bundle(t, "1.0.0", spec)))
	if err == nil {
		t.Fatal("Apply succeeded")
	}
	ev := e.rec.take()
	got := ev[len(ev)-1].Output
	if len(got) > 1024 || len(got) < 1020 || !utf8.ValidString(got) || !strings.HasSuffix(out+"\n", got) {
		t.Errorf("output is %d bytes (valid UTF-8: %v): %q...", len(got), utf8.ValidString(got), got[:min(len(got), 20)])
	}

	// Invalid bytes are replaced, and the result still fits.
	for _, b := range [][]byte{
		[]byte(strings.Repeat("\xff", 2000)),
		append([]byte{0x80, 0x80}, []byte(strings.Repeat("ab", 600))...),
		[]byte("short é"),
	} {
		s := textcut.Tail(string(b), 1024)
		if len(s) > 1024 || !utf8.ValidString(s) {
			t.Errorf("textcut.Tail of %d bytes: %d bytes, valid %v", len(b), len(s), utf8.ValidString(s))
		}
	}
	if s := textcut.Tail("short é", 1024); s != "short é" {
		t.Errorf("textcut.Tail changed a short string: %q", s)
	}
}
