package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// cluster is three rel-server processes on loopback plus helpers.
type cluster struct {
	work    string
	servers []*server
	procs   []*exec.Cmd
	conns   []*grpc.ClientConn
}

func startCluster(work string, extra ...string) (*cluster, error) {
	c := &cluster{work: work}
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
		if err := waitHealthy(s, 20*time.Second); err != nil {
			return c, err
		}
	}
	return c, nil
}

func (c *cluster) start(s *server, extra ...string) error {
	args := append([]string{"--node-id", s.id, "--data-dir", s.dir, "--grpc-addr", s.grpc, "--raft-addr", s.raft, "--http-addr", s.http, "--log-level", "warn"}, extra...)
	s.cmd = exec.Command(filepath.Join(*binDir, "rel-server"), args...)
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

func (c *cluster) addrs() string {
	var out []string
	for _, s := range c.servers {
		out = append(out, s.grpc)
	}
	return strings.Join(out, ",")
}

// client dials one server (the first that is up).
func (c *cluster) client(except *server) (relv1.ControlServiceClient, error) {
	for _, s := range c.servers {
		if s == except {
			continue
		}
		conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		c.conns = append(c.conns, conn)
		return relv1.NewControlServiceClient(conn), nil
	}
	return nil, fmt.Errorf("no server")
}

func (c *cluster) leader() *server {
	for _, s := range c.servers {
		resp, err := http.Get("http://" + s.http + "/v1/health")
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
		resp, err := ctl.ListAgents(ctx, &relv1.ListAgentsRequest{Environment: env})
		got := 0
		if err == nil {
			for _, a := range resp.GetAgents() {
				if a.GetAgent().GetConnected() {
					got++
				}
			}
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents connected after %s", got, n, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
