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
}

// supervisor keeps a release's `run` command running: started with
// /bin/sh -c in its own process group, restarted with exponential backoff
// and jitter whenever it exits, stopped with SIGTERM to the group and
// SIGKILL after the stop timeout.
//
// Processes get Pdeathsig SIGKILL: they die with the agent (should it be
// killed, even with SIGKILL), and an agent that starts again starts them
// again (Host.Resume). A service that must outlive its agent belongs to the
// init system, started by a hook. (Linux sends the signal when the thread
// that forked exits, not the process; the Go runtime does not end threads
// unless a goroutine exits while locked to one, which this package never
// does.)
type supervisor struct {
	cfg  superviseConfig
	done chan struct{} // closed when the loop has returned
	stop chan struct{} // closed by Stop

	mu       sync.Mutex
	cmd      *exec.Cmd // the current or last process
	running  bool
	stopping bool
	starts   int
	lastExit error
}

// startSupervised starts the first process before returning, so that a
// command that cannot start at all is reported at once.
func startSupervised(cfg superviseConfig) (*supervisor, error) {
	if cfg.backoff <= 0 {
		cfg.backoff = defaultRestartBackoff
	}
	s := &supervisor{cfg: cfg, done: make(chan struct{}), stop: make(chan struct{})}
	killLeftovers(cfg.dir, pgidFile(cfg.logPath), cfg.logger)
	cmd, err := s.spawn()
	if err != nil {
		return nil, err
	}
	go s.loop(cmd)
	return s, nil
}

// spawn starts one process unless the supervisor is stopping (checked under
// the lock Stop takes, so Stop never misses a process).
func (s *supervisor) spawn() (*exec.Cmd, error) {
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
	cmd := exec.Command("/bin/sh", "-c", shellCommand(s.cfg.command))
	cmd.Dir = s.cfg.dir
	cmd.Env = s.cfg.env
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Go sets Pdeathsig after switching credentials (a switch clears it),
	// so a process running as another user still dies with the agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: s.cfg.cred}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil, errors.New("stopping")
	}
	if err := cmd.Start(); err != nil {
		s.lastExit = err
		return nil, fmt.Errorf("run: %w", err)
	}
	s.cmd, s.running = cmd, true
	s.starts++
	// Remember the process group: if the agent dies with SIGKILL, a child
	// the shell forked outlives it, and the next start must end it first.
	_ = os.WriteFile(pgidFile(s.cfg.logPath), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), fileMode)
	fmt.Fprintf(logf, "rel-agent %s: started %s (pid %d)\n", time.Now().Format(time.RFC3339), s.cfg.name, cmd.Process.Pid)
	return cmd, nil
}

func (s *supervisor) loop(cmd *exec.Cmd) {
	defer close(s.done)
	backoff := s.cfg.backoff
	for {
		started := time.Now()
		err := cmd.Wait()
		if err == nil {
			err = errors.New("exit status 0")
		}
		s.mu.Lock()
		s.running = false
		s.lastExit = err
		stopping := s.stopping
		s.mu.Unlock()
		if stopping {
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
			case <-t.C:
			}
			if cmd, err = s.spawn(); err == nil {
				break
			}
			s.mu.Lock()
			stopping = s.stopping
			s.mu.Unlock()
			if stopping {
				return
			}
		}
	}
}

// note writes an agent line into run.log (next to the process's own
// output, where whoever reads why it is down looks) and the agent's log.
func (s *supervisor) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.cfg.logger.Warn(msg)
	if f, err := os.OpenFile(s.cfg.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode); err == nil {
		fmt.Fprintf(f, "rel-agent %s: %s\n", time.Now().Format(time.RFC3339), msg)
		f.Close()
	}
}

// Running reports whether a process is up now (not between restarts).
func (s *supervisor) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running && !s.stopping
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
	return s.cmd.Process.Pid
}

// Stop ends supervision: SIGTERM to the process group, SIGKILL to it after
// the stop timeout, and SIGKILL to whatever of the group outlived its
// leader. It returns once the process has been reaped.
func (s *supervisor) Stop() {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		<-s.done
		return
	}
	s.stopping = true
	close(s.stop)
	pgid, running := s.cmd.Process.Pid, s.running
	s.mu.Unlock()

	if running {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(s.cfg.stopTimeout)
		select {
		case <-s.done:
			t.Stop()
		case <-t.C:
			s.note("%s did not stop within %s of SIGTERM: SIGKILL", s.cfg.name, s.cfg.stopTimeout)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
		}
		// Children that ignored SIGTERM after their parent left.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	<-s.done
}

// shellCommand runs a simple command of a program given by path (no shell
// syntax, no builtin) through exec, so that the service itself, not a shell
// around it, is the process the agent started: it then gets the agent's
// death signal and the stop signals directly. Anything else runs as written;
// killLeftovers covers what a dead agent's shell left behind.
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

// killLeftovers ends what is left of a process group this release's run
// command had before the agent died: the processes in the recorded group
// whose working directory is inside the release dir (so a reused process
// group id of someone else's is left alone).
func killLeftovers(dir, file string, logger *slog.Logger) {
	b, err := os.ReadFile(file)
	if err != nil {
		return
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pgid <= 1 {
		return
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		realDir = dir
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may
		// hold spaces: state, ppid, pgrp, ...
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 3 || fields[2] != strconv.Itoa(pgid) {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue
		}
		cwd = strings.TrimSuffix(cwd, " (deleted)")
		if cwd != realDir && !strings.HasPrefix(cwd, realDir+string(filepath.Separator)) && cwd != dir && !strings.HasPrefix(cwd, dir+string(filepath.Separator)) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil && logger != nil {
			logger.Warn("killed a process left by an earlier agent", "pid", pid, "pgid", pgid, "dir", dir)
		}
	}
}
