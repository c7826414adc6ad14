package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/relhq/rel/internal/textcut"
)

// outputTailBytes is how much of a failing hook's output an Event carries.
// Events are stored in the cluster's replicated state and shown to its
// users: enough to see why a hook failed, not a channel to copy files out
// of a host. The whole output stays in the release's .rel/ on the host.
const outputTailBytes = 1 << 10

// defaultPath is the PATH of hooks when the agent itself has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// hookError is a hook that failed; output is the tail of what it printed.
type hookError struct {
	reason string
	output string
	cause  error
}

func (e *hookError) Error() string { return e.reason }
func (e *hookError) Unwrap() error { return e.cause }

// hookEnv is the environment of hooks and of the run process: the agent's
// PATH, then rel.yaml's env (which may replace PATH), then the REL_
// variables. Values travel only as environment variables, never spliced
// into the command string, so a version or an env value cannot inject
// shell syntax.
func (h *Host) hookEnv(app, version, previous, dir string, sp *spec) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	env := []string{"PATH=" + path}
	keys := make([]string, 0, len(sp.Env))
	for k := range sp.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, k+"="+sp.Env[k])
	}
	return append(env,
		"REL_APP="+app,
		"REL_VERSION="+version,
		"REL_PREVIOUS_VERSION="+previous,
		"REL_RELEASE_DIR="+dir,
		"REL_NODE_ID="+h.cfg.NodeID,
	)
}

// runHook runs one rel.yaml hook, if the spec has it, with /bin/sh -c in
// dir, as the release's user u. Its combined output goes to
// dir/.rel/hook-<name>.log (a file rather than a pipe, so a hook that
// leaves a daemon behind holding its stdout does not keep the agent
// waiting); the agent opens it and hands the descriptor over, so u needs
// no write access to .rel/. The last 1 KiB of it is kept for the Event when
// the hook fails. On timeout the hook's whole process group is killed.
func (h *Host) runHook(ctx context.Context, name string, sp *spec, u *runUser, dir string, env []string) error {
	hk, ok := sp.Hooks[name]
	if !ok {
		return nil
	}
	timeout := hk.Timeout
	if timeout <= 0 {
		timeout = h.cfg.HookTimeout
	}
	if err := os.MkdirAll(filepath.Join(dir, relDirName), dirMode); err != nil {
		return err
	}
	logPath := filepath.Join(dir, relDirName, "hook-"+name+".log")
	out, err := os.OpenFile(logPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return err
	}
	defer out.Close()
	// A log an older agent made 0644 is no longer world-readable.
	if err := out.Chmod(fileMode); err != nil {
		return err
	}

	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, "/bin/sh", "-c", hk.Command)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = out
	cmd.Stderr = out
	// Unlike the run process, a hook dies with the agent: it is a step of
	// an install that the next agent redoes or reports failed, and must
	// not race with that (two migrations at once). Go sets Pdeathsig after
	// switching credentials (a switch clears it), so a hook running as
	// another user still dies with the agent. What a hook starts in the
	// background does not inherit it. (Linux sends it when the thread that
	// forked exits; the Go runtime ends no thread unless a goroutine exits
	// locked to one, which this package never does.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: u.credential()}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	runErr := cmd.Run()
	h.cfg.Logger.Debug("hook ran", "hook", name, "dir", dir, "took", time.Since(start), "err", runErr)
	if runErr == nil {
		return nil
	}
	tail := fileTail(out, outputTailBytes)
	var reason string
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case hctx.Err() != nil:
		reason = fmt.Sprintf("hook %s timed out after %s", name, timeout)
	case errors.As(runErr, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			reason = fmt.Sprintf("hook %s killed by signal %s", name, ws.Signal())
		} else {
			reason = fmt.Sprintf("hook %s exited %d", name, exitErr.ExitCode())
		}
	default:
		reason = fmt.Sprintf("hook %s: %v", name, runErr)
	}
	return &hookError{reason: reason, output: tail, cause: runErr}
}

// fileTail returns at most the last n bytes of f as valid UTF-8 (an event
// travels in protobuf strings), starting on a character boundary.
func fileTail(f *os.File, n int64) string {
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	m, _ := f.ReadAt(b, off)
	return textcut.Tail(string(b[:m]), int(n))
}

// readSpec reads rel.yaml from a release directory through an *os.Root, so
// that a rel.yaml that is a symlink cannot make the agent read a file
// outside the release.
func readSpec(dir string) (*spec, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(specFileName)
	if errors.Is(err, os.ErrNotExist) {
		return parseSpec(nil)
	}
	if err != nil {
		return nil, fmt.Errorf("rel.yaml: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSpecBytes+1))
	if err != nil {
		return nil, fmt.Errorf("rel.yaml: %w", err)
	}
	return parseSpec(data)
}
