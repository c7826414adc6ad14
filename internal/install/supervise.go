package install

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Restart backoff of a run process: doubled after every exit, capped, and
// reset once a process has stayed up for stableRun.
const (
	defaultRestartBackoff = 500 * time.Millisecond
	maxRestartBackoff     = 30 * time.Second
	stableRun             = 30 * time.Second
)

type superviseConfig struct {
	name        string // app@version, for logs
	command     string
	dir         string
	env         []string
	cred        *syscall.Credential // the release's user; nil: the agent's
	logPath     string
	stopTimeout time.Duration
	backoff     time.Duration
	logger      *slog.Logger
	// record is told of every process started, before the process is let
	// run the command: the Host writes it down (state.json) so that the
	// next agent finds it. A failure is logged; the process runs anyway.
	record func(processID) error
}

// supervisor keeps a release's `run` command running: started with
// /bin/sh -c in a session and process group of its own, restarted with
// exponential backoff and jitter whenever it exits, stopped with SIGTERM to
// the group and SIGKILL after the stop timeout.
//
// Processes outlive the agent: they are not its children in any way that
// matters (no Pdeathsig, no shared session or process group, no terminal),
// so an agent that crashes, is killed or upgraded leaves them serving. The
// next agent adopts them (adoptSupervised) from their record: it watches a
// process it did not start through a pidfd, and restarts it like a child
// of its own when it exits. Detach stops supervising without touching the
// process; Stop ends it.
type supervisor struct {
	cfg    superviseConfig
	done   chan struct{} // closed when the loop has returned
	stop   chan struct{} // closed by Stop: no more restarts
	detach chan struct{} // closed by Detach: stop watching, leave the process be

	mu       sync.Mutex
	cur      *process // the current or last process
	running  bool
	stopping bool
	detached bool
	starts   int
	lastExit error
}

// process is one run process: a child this agent started, or one an
// earlier agent started and this one adopted.
type process struct {
	id    processID
	cmd   *exec.Cmd // nil when adopted: not a child, so no exit status
	watch *exitWatch
}

// wait blocks until the process ends and returns why, or until cancel is
// closed (exited false).
func (p *process) wait(cancel <-chan struct{}) (exited bool, why error) {
	if !p.watch.wait(cancel) {
		return false, nil
	}
	p.watch.close()
	if p.cmd == nil {
		return true, errors.New("no exit status: not a child of this agent")
	}
	if err := p.cmd.Wait(); err != nil {
		return true, err
	}
	return true, errors.New("exit status 0")
}

// release lets go of a process that keeps running: a child is never waited
// for by this agent again.
func (p *process) release() {
	p.watch.close()
	if p.cmd != nil {
		_ = p.cmd.Process.Release()
	}
}

// startSupervised starts the first process before returning, so that a
// command that cannot start at all is reported at once.
func startSupervised(cfg superviseConfig) (*supervisor, error) {
	s := newSupervisor(cfg)
	killLeftovers(cfg.dir, pgidFile(cfg.logPath), cfg.logger)
	p, err := s.spawn()
	if err != nil {
		return nil, err
	}
	go s.loop(p)
	return s, nil
}

// adoptSupervised supervises a process an earlier agent started, which
// must still be running: the same pid, forked at the same tick of the same
// boot. From then on it is supervised as if it had been started here; when
// it exits it is started again from cfg.
func adoptSupervised(cfg superviseConfig, id processID) (*supervisor, error) {
	w, err := watchExit(id)
	if err != nil {
		return nil, err
	}
	s := newSupervisor(cfg)
	s.cur, s.running = &process{id: id, watch: w}, true
	go s.loop(s.cur)
	return s, nil
}

func newSupervisor(cfg superviseConfig) *supervisor {
	if cfg.backoff <= 0 {
		cfg.backoff = defaultRestartBackoff
	}
	return &supervisor{cfg: cfg, done: make(chan struct{}), stop: make(chan struct{}), detach: make(chan struct{})}
}

// gateScript holds the command back until the agent has recorded its
// process and says "go" on descriptor 3. If the agent dies in between, the
// read meets the end of the pipe and the process ends instead of running
// unknown to the next agent, which would start a second one.
const gateScript = "read -r _ <&3 || exit 111\nexec 3<&-\n"

// spawn starts one process unless the supervisor is stopping or detached
// (checked under the lock Stop and Detach take, so they never miss a
// process).
func (s *supervisor) spawn() (*process, error) {
	// The agent opens the log and hands it over: the release's user needs
	// no write access to .rel/.
	logf, err := os.OpenFile(s.cfg.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	// A log an older agent made 0644 is no longer world-readable.
	if err := logf.Chmod(fileMode); err != nil {
		return nil, err
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer gateR.Close()
	defer gateW.Close()
	cmd := exec.Command("/bin/sh", "-c", gateScript+shellCommand(s.cfg.command))
	cmd.Dir = s.cfg.dir
	cmd.Env = s.cfg.env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{gateR}
	// A session of its own (which makes it the leader of a process group
	// of its own, pgid = pid): no signal meant for the agent's group or
	// terminal reaches it, and the agent's death sends it nothing.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: s.cfg.cred}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || s.detached {
		return nil, errors.New("stopping")
	}
	if err := cmd.Start(); err != nil {
		s.lastExit = err
		return nil, fmt.Errorf("run: %w", err)
	}
	p, err := s.identify(cmd)
	if err != nil {
		gateW.Close() // it ends without running the command
		_ = cmd.Wait()
		s.lastExit = err
		return nil, fmt.Errorf("run: %w", err)
	}
	if s.cfg.record != nil {
		if err := s.cfg.record(p.id); err != nil {
			s.cfg.logger.Error("cannot record the run process: the next agent will not find it", "pid", p.id.pid, "err", err)
		}
	}
	// Also next to the release, for the leftovers of an agent that lost
	// state.json (killLeftovers).
	_ = writePgidFile(pgidFile(s.cfg.logPath), p.id)
	// A process that died already makes this fail: its exit is seen below.
	_, _ = gateW.Write([]byte("go\n"))
	s.cur, s.running = p, true
	s.starts++
	fmt.Fprintf(logf, "rel-agent %s: started %s (pid %d)\n", time.Now().Format(time.RFC3339), s.cfg.name, p.id.pid)
	return p, nil
}

// identify reads what tells a just started child from any later holder of
// its pid. The child cannot be gone yet: it waits at the gate, and it is
// not reaped before Wait.
func (s *supervisor) identify(cmd *exec.Cmd) (*process, error) {
	st, err := readProcStat(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	id := processID{pid: cmd.Process.Pid, start: st.start, boot: bootID()}
	w, err := watchExit(id)
	if err != nil {
		return nil, err
	}
	return &process{id: id, cmd: cmd, watch: w}, nil
}

func (s *supervisor) loop(p *process) {
	defer close(s.done)
	backoff := s.cfg.backoff
	for {
		started := time.Now()
		exited, err := p.wait(s.detach)
		if !exited {
			p.release()
			s.mu.Lock()
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		s.running = false
		s.lastExit = err
		quit := s.stopping || s.detached
		s.mu.Unlock()
		if quit {
			return
		}
		if time.Since(started) >= stableRun {
			backoff = s.cfg.backoff
		}
		for {
			wait := backoff/2 + rand.N(backoff/2+1)
			backoff = min(backoff*2, maxRestartBackoff)
			s.note("%s exited (%v), restarting in %s", s.cfg.name, err, wait.Round(time.Millisecond))
			t := time.NewTimer(wait)
			select {
			case <-s.stop:
				t.Stop()
				return
			case <-s.detach:
				t.Stop()
				return
			case <-t.C:
			}
			if p, err = s.spawn(); err == nil {
				break
			}
			s.mu.Lock()
			quit = s.stopping || s.detached
			s.mu.Unlock()
			if quit {
				return
			}
		}
	}
}

// note writes an agent line into run.log (next to the process's own
// output, where whoever reads why it is down looks) and the agent's log.
func (s *supervisor) note(format string, args ...any) {
	noteRun(s.cfg.logPath, s.cfg.logger, format, args...)
}

func noteRun(logPath string, logger *slog.Logger, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	logger.Warn(msg)
	if f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode); err == nil {
		fmt.Fprintf(f, "rel-agent %s: %s\n", time.Now().Format(time.RFC3339), msg)
		f.Close()
	}
}

// Running reports whether a process is up now (not between restarts) and
// supervised.
func (s *supervisor) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running && !s.stopping && !s.detached
}

// LastExit is why the last process ended (nil if none has).
func (s *supervisor) LastExit() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastExit
}

// Pid of the current or last process.
func (s *supervisor) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.id.pid
}

// Stop ends supervision and the process: SIGTERM to the process group,
// SIGKILL to it after the stop timeout, and SIGKILL to whatever of the
// group outlived its leader. It returns once the process has ended (and,
// for a child, been reaped).
func (s *supervisor) Stop() {
	s.mu.Lock()
	if s.stopping || s.detached {
		s.mu.Unlock()
		<-s.done
		return
	}
	s.stopping = true
	close(s.stop)
	pgid, running := s.cur.id.pid, s.running
	s.mu.Unlock()

	if running {
		terminate(pgid, s.cfg.stopTimeout, s.done, s.note, s.cfg.name)
	}
	<-s.done
}

// Detach ends supervision and leaves the process running: the agent is
// stopping, not the service. It returns once the loop has returned.
func (s *supervisor) Detach() {
	s.mu.Lock()
	if s.stopping || s.detached {
		s.mu.Unlock()
		<-s.done
		return
	}
	s.detached = true
	close(s.detach)
	s.mu.Unlock()
	<-s.done
}

// terminate ends the process group pgid, whose leader is watched by ended:
// SIGTERM, SIGKILL after timeout, then SIGKILL to members that outlived
// the leader. The group is the one recorded for the leader, which is the
// leader of its session too; a process group id is not reused while any
// member of the group is left.
func terminate(pgid int, timeout time.Duration, ended <-chan struct{}, note func(string, ...any), name string) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(timeout)
	select {
	case <-ended:
		t.Stop()
	case <-t.C:
		note("%s did not stop within %s of SIGTERM: SIGKILL", name, timeout)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-ended
	}
	// Children that ignored SIGTERM after their parent left.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// stopRecorded ends a run process an earlier agent started and this one
// does not supervise (one of a release that is no longer current, or whose
// user changed), if it is still running, the same way Stop does. It
// returns once the process has ended.
func stopRecorded(id processID, name, logPath string, timeout time.Duration, logger *slog.Logger) bool {
	w, err := watchExit(id)
	if err != nil {
		return false // gone already
	}
	defer w.close()
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		w.wait(nil)
	}()
	logger.Info("stopping a run process an earlier agent started", "pid", id.pid)
	terminate(id.pid, timeout, ended, func(format string, args ...any) { noteRun(logPath, logger, format, args...) }, name)
	return true
}

// shellCommand runs a simple command of a program given by path (no shell
// syntax, no builtin) through exec, so that the service itself, not a shell
// around it, is the process the agent started, records and adopts: it gets
// the stop signals directly. Anything else runs as written, with the shell
// as the leader of its process group; signals go to the whole group.
func shellCommand(command string) string {
	fields := strings.Fields(command)
	if len(fields) == 0 || !strings.Contains(fields[0], "/") || strings.Contains(fields[0], "=") || strings.ContainsAny(command, ";&|<>()$`\\\"'*?[]{}~#\n") {
		return command
	}
	return "exec " + command
}

func pgidFile(logPath string) string {
	return filepath.Join(filepath.Dir(logPath), "run.pgid")
}

// writePgidFile records a run process next to its release, in
// .rel/run.pgid: "<pgid> <start ticks> <boot id>". state.json holds the
// same; this copy is for killLeftovers, which must work for an agent that
// lost state.json. Older agents wrote the pgid alone.
func writePgidFile(path string, id processID) error {
	return os.WriteFile(path, []byte(fmt.Sprintf("%d %d %s\n", id.pid, id.start, id.boot)), fileMode)
}

// killLeftovers ends what is left of a process group this release's run
// command had before an agent lost track of it (state.json lost, an agent
// that died before recording its start in state.json, or an older agent
// whose processes died with it but not their children), as recorded in
// .rel/run.pgid. A run process the agent recorded and found running was
// adopted or stopped before this is called; this is for what is left.
//
// Each run process leads a session and a process group of its own (pgid =
// its pid), and a process group id is not handed out again while any
// member of the group is left. So: when the group's leader still runs (the
// same start time), the whole group is ours; when its pid is held by a
// process of another start time, the group ended and the id is someone
// else's: nothing is killed. Otherwise (the leader is gone, or the file
// comes from an older agent) only the members working inside the release
// dir are killed, so that a reused group id of someone else's is left
// alone.
func killLeftovers(dir, file string, logger *slog.Logger) {
	b, err := os.ReadFile(file)
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return
	}
	pgid, err := strconv.Atoi(f[0])
	if err != nil || pgid <= 1 {
		return
	}
	leaderOurs := false
	if len(f) >= 3 {
		start, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || f[2] != bootID() {
			return // another boot: nothing of it runs
		}
		if st, err := readProcStat(pgid); err == nil && !st.ended() {
			if st.start != start {
				return
			}
			leaderOurs = true
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		realDir = dir
	}
	inside := func(p string) bool {
		for _, d := range []string{realDir, dir} {
			if p == d || strings.HasPrefix(p, d+string(filepath.Separator)) {
				return true
			}
		}
		return false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.pgrp != pgid || st.ended() {
			continue
		}
		if !leaderOurs {
			cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
			if err != nil || !inside(strings.TrimSuffix(cwd, " (deleted)")) {
				continue
			}
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil && logger != nil {
			logger.Warn("killed a process left by an earlier agent", "pid", pid, "pgid", pgid, "dir", dir)
		}
	}
}
