// Package health runs the health checks of a release's rel.yaml: an HTTP GET,
// a TCP connect or a shell command, repeated until the check has passed
// continuously for a while or a deadline passes.
package health

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Defaults for the zero values of Check's durations (HealthyAfter's zero is
// meaningful: healthy on the first pass).
const (
	DefaultInterval = time.Second
	DefaultTimeout  = 2 * time.Second
	DefaultDeadline = 60 * time.Second
)

// Check is one health check. Exactly one of HTTP, TCP and Exec is set.
type Check struct {
	HTTP string // URL to GET; a 2xx or 3xx answer passes (redirects are not followed)
	TCP  string // host:port to connect to
	Exec string // shell command run with /bin/sh -c; exit status 0 passes

	Dir string   // working directory of Exec
	Env []string // environment of Exec, "KEY=value"
	// Credential is the user Exec runs as (uid, gid, supplementary groups):
	// the release's, so that a check cannot do more than the service it
	// checks. nil runs it as the caller.
	Credential *syscall.Credential

	Interval     time.Duration // between the starts of two attempts
	Timeout      time.Duration // of one attempt
	HealthyAfter time.Duration // how long the check must keep passing; a failure resets the clock
	Deadline     time.Duration // from the start of Wait: not healthy by then is a failure
}

// Validate reports a check that names no probe or more than one, or has a
// negative duration.
func (c Check) Validate() error {
	n := 0
	for _, s := range []string{c.HTTP, c.TCP, c.Exec} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("health check needs exactly one of http, tcp and exec, got %d", n)
	}
	if c.Interval < 0 || c.Timeout < 0 || c.HealthyAfter < 0 || c.Deadline < 0 {
		return errors.New("health check durations must not be negative")
	}
	return nil
}

func (c Check) withDefaults() Check {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Deadline <= 0 {
		c.Deadline = DefaultDeadline
	}
	return c
}

// Probe runs one attempt, bounded by the check's timeout, and returns why it
// failed (nil when it passed).
func (c Check) Probe(ctx context.Context) error {
	if err := c.Validate(); err != nil {
		return err
	}
	c = c.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	switch {
	case c.HTTP != "":
		return probeHTTP(ctx, c.HTTP)
	case c.TCP != "":
		return probeTCP(ctx, c.TCP)
	default:
		return probeExec(ctx, c.Exec, c.Dir, c.Env, c.Credential)
	}
}

// maxStartupRetry caps the retries before a check first passes.
const maxStartupRetry = 50 * time.Millisecond

// Wait probes until the check has passed continuously for HealthyAfter and
// returns nil, or returns an error naming the last failure once Deadline has
// passed since the call, or ctx's error. The first attempt runs at once; the
// next ones Interval after the start of the previous one (at once if an
// attempt took longer). While the check passes, the attempt that completes
// HealthyAfter is scheduled for exactly that moment, so a healthy service is
// declared healthy HealthyAfter after its first pass plus one attempt's
// duration, not rounded up to the next interval. onAttempt, if not nil, sees
// every attempt's result.
func Wait(ctx context.Context, check Check, onAttempt func(err error)) error {
	if err := check.Validate(); err != nil {
		return err
	}
	c := check.withDefaults()
	start := time.Now()
	deadline := start.Add(c.Deadline)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	var (
		lastErr      error
		passSince    time.Time // zero while failing
		passedOnce   bool
		startupRetry = 10 * time.Millisecond
		timer        *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		attemptStart := time.Now()
		err := c.Probe(dctx)
		if dctx.Err() != nil && ctx.Err() == nil && err != nil {
			// The attempt was cut short by the deadline, not by its own
			// failure: keep the failure seen before, if any, as the reason.
			if lastErr == nil {
				lastErr = err
			}
			return deadlineError(c, lastErr, passSince)
		}
		if onAttempt != nil {
			onAttempt(err)
		}
		now := time.Now()
		if err != nil {
			lastErr = err
			passSince = time.Time{}
		} else {
			if passSince.IsZero() {
				passSince = attemptStart
			}
			passedOnce = true
			if now.Sub(passSince) >= c.HealthyAfter {
				return nil
			}
		}

		next := attemptStart.Add(c.Interval)
		if passSince.IsZero() && !passedOnce {
			// Until the check has passed once, the service is most likely
			// still starting: retry sooner (10 ms, doubling to at most 50 ms,
			// never beyond the interval) so that a service that is up in
			// 30 ms is not held back by a 1 s interval. Once it has passed,
			// the interval rules.
			next = attemptStart.Add(min(startupRetry, c.Interval))
			startupRetry = min(startupRetry*2, maxStartupRetry)
		}
		if !passSince.IsZero() {
			if done := passSince.Add(c.HealthyAfter); done.Before(next) {
				next = done
			}
		}
		if timer == nil {
			timer = time.NewTimer(time.Until(next))
		} else {
			timer.Reset(time.Until(next))
		}
		select {
		case <-timer.C:
		case <-dctx.Done():
			if err := ctx.Err(); err != nil {
				return err
			}
			return deadlineError(c, lastErr, passSince)
		}
	}
}

func deadlineError(c Check, lastErr error, passSince time.Time) error {
	if !passSince.IsZero() {
		return fmt.Errorf("not healthy within %s: passing for %s only, %s required",
			c.Deadline, time.Since(passSince).Round(time.Millisecond), c.HealthyAfter)
	}
	if lastErr == nil {
		return fmt.Errorf("not healthy within %s: no attempt completed", c.Deadline)
	}
	return fmt.Errorf("not healthy within %s: %w", c.Deadline, lastErr)
}
