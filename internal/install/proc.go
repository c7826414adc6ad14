package install

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// procPollInterval is how often a process is looked for in /proc where
// pidfds are not available (Linux before 5.3, or a seccomp filter that
// refuses pidfd_open).
const procPollInterval = 50 * time.Millisecond

// procStat is what the agent reads of a process from /proc/<pid>/stat.
type procStat struct {
	state   byte   // R, S, D, Z, X, ...
	pgrp    int    // process group
	session int    // session id
	start   uint64 // starttime: clock ticks after boot when the process was forked
}

// readProcStat reads /proc/<pid>/stat. The fields are counted after the
// command name, which is in parentheses and may hold spaces and
// parentheses itself: state is field 3, pgrp 5, session 6, starttime 22.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(string(b))
}

func parseProcStat(s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, errors.New("stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.New("stat: too few fields")
	}
	var st procStat
	var err1, err2, err3 error
	st.state = f[0][0]
	st.pgrp, err1 = strconv.Atoi(f[2])
	st.session, err2 = strconv.Atoi(f[3])
	st.start, err3 = strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("stat: %w", err)
	}
	return st, nil
}

// ended reports whether a process in this state has exited: a zombie
// waits only for its parent (init, for a service whose agent died, which
// may never reap it) to be removed.
func (st procStat) ended() bool { return st.state == 'Z' || st.state == 'X' || st.state == 'x' }

// bootID identifies this boot of the machine: start times count from the
// boot, so a record of another boot never names a live process.
var bootID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})

// processID is what tells one process from any other that ever had its
// pid: the boot, the pid and the clock tick it was forked at.
type processID struct {
	pid   int
	start uint64
	boot  string
}

// alive reports whether the run process is still running: the pid is held
// by a process forked at the same tick of the same boot, not a zombie, and
// leading its session and process group as every run process does (it
// cannot leave either).
func (id processID) alive() bool {
	if id.pid <= 1 || id.boot == "" || id.boot != bootID() {
		return false
	}
	st, err := readProcStat(id.pid)
	return err == nil && st.start == id.start && !st.ended() && st.pgrp == id.pid && st.session == id.pid
}

// exitWatch tells when one process ends. It holds a pidfd, which names the
// process itself rather than its pid (so a pid reused later is never taken
// for it) and which the runtime's poller watches without a thread; where
// pidfds are not available it polls /proc.
type exitWatch struct {
	id processID
	f  *os.File // the pidfd; nil: polling
}

// watchExit starts watching the process id names. It fails when that
// process is not running now, so a watch is only ever made for the very
// process that was recorded: the pidfd is opened first and the start time
// checked afterwards, and a process that matches then is the one the pidfd
// names (a process forked after the pidfd was opened has a later start).
func watchExit(id processID) (*exitWatch, error) {
	w := &exitWatch{id: id}
	if fd, err := unix.PidfdOpen(id.pid, unix.PIDFD_NONBLOCK); err == nil {
		w.f = os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(id.pid))
		// A file the poller cannot watch takes no deadline: poll instead.
		if w.f.SetReadDeadline(time.Time{}) != nil {
			w.f.Close()
			w.f = nil
		}
	}
	if !id.alive() {
		w.close()
		return nil, fmt.Errorf("process %d is not running", id.pid)
	}
	return w, nil
}

// wait blocks until the process has ended (true) or cancel is closed
// (false).
func (w *exitWatch) wait(cancel <-chan struct{}) bool {
	if w.f == nil {
		return w.poll(cancel)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-cancel:
			// Wakes the Read below with a timeout.
			_ = w.f.SetReadDeadline(time.Unix(1, 0))
		case <-done:
		}
	}()
	rc, err := w.f.SyscallConn()
	if err != nil {
		return w.poll(cancel)
	}
	var pollErr error
	err = rc.Read(func(fd uintptr) bool {
		// A pidfd is readable once its process has exited.
		var ready bool
		ready, pollErr = pidfdReady(fd)
		return ready || pollErr != nil
	})
	if err == nil && pollErr == nil {
		return true
	}
	select {
	case <-cancel:
		return false
	default:
		// Not the cancellation: the poller failed. /proc still answers.
		return w.poll(cancel)
	}
}

// pidfdReady polls a pidfd without blocking: readable means exited.
func pidfdReady(fd uintptr) (bool, error) {
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		if err == unix.EINTR {
			continue
		}
		return n > 0, err
	}
}

func (w *exitWatch) poll(cancel <-chan struct{}) bool {
	t := time.NewTicker(procPollInterval)
	defer t.Stop()
	for w.id.alive() {
		select {
		case <-cancel:
			return false
		case <-t.C:
		}
	}
	return true
}

func (w *exitWatch) close() {
	if w != nil && w.f != nil {
		w.f.Close()
	}
}
