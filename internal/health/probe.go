package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/relhq/rel/internal/textcut"
)

// probeHTTP GETs url on a connection of its own: a check must see whether a
// new client can connect now, not reuse a connection from before a restart.
// Redirects are not followed (3xx passes).
func probeHTTP(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("http %s: %w", url, err)
	}
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http GET %s: %w", url, unwrapURLError(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("http GET %s: status %s", url, resp.Status)
	}
	return nil
}

func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

func probeTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp %s: %w", addr, err)
	}
	return conn.Close()
}

// outputTail is how much of a failing command's output goes into the error.
const outputTail = 512

// probeExec runs command with /bin/sh -c, as cred's user when it is set, in
// its own process group so that a timeout kills the shell's children too (a
// `sleep` left behind would keep the output pipe open).
func probeExec(ctx context.Context, command, dir string, env []string, cred *syscall.Credential) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Dir = dir
	cmd.Env = env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	var out bytes.Buffer
	cmd.Stdout = &limitedTail{buf: &out}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		// The shell finished but something it started in the background
		// still holds the output open: a check must not leave processes
		// behind, and the group still exists because that member does.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if cmd.ProcessState != nil && cmd.ProcessState.Success() {
			return nil
		}
	}
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(textcut.Tail(out.String(), outputTail))
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out: %w", ctx.Err())
	}
	if msg != "" {
		return fmt.Errorf("exec %q: %w: %s", command, err, msg)
	}
	return fmt.Errorf("exec %q: %w", command, err)
}

// limitedTail keeps the last outputTail bytes written to it.
type limitedTail struct{ buf *bytes.Buffer }

func (l *limitedTail) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > outputTail {
		p = p[len(p)-outputTail:]
	}
	l.buf.Write(p)
	if over := l.buf.Len() - outputTail; over > 0 {
		rest := append([]byte(nil), l.buf.Bytes()[over:]...)
		l.buf.Reset()
		l.buf.Write(rest)
	}
	return n, nil
}
