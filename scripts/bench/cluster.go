package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// cluster is three rel-server processes on loopback plus helpers.
type cluster struct {
	work    string
	fl      flavor
	sec     *clusterSec
	servers []*server
	procs   []*exec.Cmd
	conns   []*grpc.ClientConn
	tokens  int
}

func startCluster(work string, fl flavor, extra ...string) (*cluster, error) {
	c := &cluster{work: work, fl: fl}
	var err error
	if c.sec, err = newClusterSec(fl, work); err != nil {
		return c, err
	}
	for i := 0; i < 3; i++ {
		s := &server{id: fmt.Sprintf("s%d", i+1), grpc: freePort(), raft: freePort(), http: freePort(), dir: filepath.Join(work, fmt.Sprintf("s%d", i+1))}
		c.servers = append(c.servers, s)
		var join []string
		if i == 0 {
			join = []string{"--bootstrap"}
		} else {
			join = []string{"--join", c.servers[0].grpc}
		}
		if err := c.start(s, append(join, extra...)...); err != nil {
			return c, err
		}
		if err := c.waitHealthy(s, 20*time.Second); err != nil {
			return c, err
		}
	}
	// Joiners are non-voters until they have caught up: a leader killed
	// before then leaves no quorum.
	return c, c.waitVoters(3, 20*time.Second)
}

// waitVoters waits until the raft configuration has n voters.
func (c *cluster) waitVoters(n int, timeout time.Duration) error {
	conn, err := c.dial(nil)
	if err != nil {
		return err
	}
	cc := relv1.NewClusterServiceClient(conn)
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := cc.Members(ctx, &relv1.MembersRequest{})
		cancel()
		voters := 0
		for _, m := range resp.GetMembers() {
			if m.GetSuffrage() == "Voter" {
				voters++
			}
		}
		if err == nil && voters == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d voters after %s, want %d (last error: %v)", voters, timeout, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *cluster) start(s *server, extra ...string) error {
	tlsArgs, err := c.sec.serverArgs(s)
	if err != nil {
		return err
	}
	args := append([]string{"--node-id", s.id, "--data-dir", s.dir, "--grpc-addr", s.grpc, "--raft-addr", s.raft, "--http-addr", s.http, "--log-level", "warn"}, tlsArgs...)
	args = append(args, extra...)
	s.cmd = exec.Command(filepath.Join(c.fl.bin, "rel-server"), args...)
	logf, err := os.OpenFile(filepath.Join(c.work, s.id+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return err
	}
	c.procs = append(c.procs, s.cmd)
	return nil
}

// startAgent starts a rel-agent process (a real agent, or the simulator)
// with args; with TLS, args must hold the flags with which it enrols
// (agentArgs).
func (c *cluster) startAgent(logName string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(filepath.Join(c.fl.bin, "rel-agent"), args...)
	logf, err := os.Create(filepath.Join(c.work, logName))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c.procs = append(c.procs, cmd)
	return cmd, nil
}

func (c *cluster) addrs() string {
	var out []string
	for _, s := range c.servers {
		out = append(out, s.grpc)
	}
	return strings.Join(out, ",")
}

// dial connects to one server (the first that is not except).
func (c *cluster) dial(except *server) (*grpc.ClientConn, error) {
	for _, s := range c.servers {
		if s == except {
			continue
		}
		conn, err := grpc.NewClient(s.grpc, c.sec.dialOptions()...)
		if err != nil {
			return nil, err
		}
		c.conns = append(c.conns, conn)
		return conn, nil
	}
	return nil, fmt.Errorf("no server")
}

// client dials one server (the first that is not except).
func (c *cluster) client(except *server) (relv1.ControlServiceClient, error) {
	conn, err := c.dial(except)
	if err != nil {
		return nil, err
	}
	return relv1.NewControlServiceClient(conn), nil
}

func (c *cluster) healthURL(s *server) string { return c.sec.scheme + "://" + s.http + "/v1/health" }

func (c *cluster) waitHealthy(s *server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := c.sec.health.Get(c.healthURL(s))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("HTTP %s", resp.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not healthy after %s (%s; last: %v; log %s)", s.id, timeout, c.healthURL(s), last, filepath.Join(c.work, s.id+".log"))
}

func (c *cluster) leader() *server {
	for _, s := range c.servers {
		if s.cmd == nil || s.cmd.ProcessState != nil {
			continue
		}
		resp, err := c.sec.health.Get(c.healthURL(s))
		if err != nil {
			continue
		}
		var body struct {
			Role string `json:"role"`
		}
		decodeJSON(resp, &body)
		if body.Role == "leader" {
			return s
		}
	}
	return nil
}

func (c *cluster) stop() {
	for _, conn := range c.conns {
		conn.Close()
	}
	for _, p := range c.procs {
		if p.ProcessState == nil {
			p.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range c.procs {
		if p.ProcessState != nil {
			continue
		}
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
}

// waitRollout long-polls a rollout until it leaves the active states.
func waitRollout(ctx context.Context, ctl relv1.ControlServiceClient, id string) (*relv1.RolloutStatus, error) {
	var idx uint64
	for {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		g, err := ctl.GetRollout(wctx, &relv1.GetRolloutRequest{Id: id, WaitIndex: idx})
		cancel()
		if err != nil {
			return nil, err
		}
		st := g.GetStatus()
		switch st.GetRollout().GetState() {
		case "running", "waiting_approval", "paused", "rolling_back":
			idx = g.GetIndex()
			continue
		}
		return st, nil
	}
}

func waitConnected(ctx context.Context, ctl relv1.ControlServiceClient, env string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var err error
		got := 0
		for tok := ""; ; {
			var resp *relv1.ListAgentsResponse
			resp, err = ctl.ListAgents(ctx, &relv1.ListAgentsRequest{Environment: env, PageSize: 1000, PageToken: tok})
			if err != nil {
				break
			}
			for _, a := range resp.GetAgents() {
				if a.GetAgent().GetConnected() {
					got++
				}
			}
			if tok = resp.GetNextPageToken(); tok == "" {
				break
			}
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("%d of %d agents connected after %s (last error: %v)", got, n, timeout, err)
			}
			return fmt.Errorf("%d of %d agents connected after %s", got, n, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
