package server

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (s *Server) setupGRPC() {
	opts := append(s.sec.GRPCServerOptions(),
		// Agents ping every 10 s to notice half-open streams; the default
		// policy (5 min) would answer that with GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(s.metrics.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.metrics.streamInterceptor),
	)
	s.grpcSrv = grpc.NewServer(opts...)
	relv1.RegisterControlServiceServer(s.grpcSrv, &controlService{s: s})
	relv1.RegisterClusterServiceServer(s.grpcSrv, &clusterService{s: s})
	relv1.RegisterAgentServiceServer(s.grpcSrv, &agentService{s: s})
	relv1.RegisterArtifactServiceServer(s.grpcSrv, &artifactService{s: s})
}

// healthResponse is the body of GET /v1/health. Field names are part of the
// HTTP API: keep them stable.
type healthResponse struct {
	NodeID       string `json:"node_id"`
	Role         string `json:"role"`
	LeaderID     string `json:"leader_id"`
	HasLeader    bool   `json:"has_leader"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	LastIndex    uint64 `json:"last_index"`
	Term         uint64 `json:"term"`
	Version      string `json:"version"`
}

func (s *Server) setupHTTP() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", s.handleHealth)
	mux.Handle("GET /v1/artifacts/sha256/{digest}", s.artifacts.Handler(s.fetchFromPeers))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// handleHealth answers 200 when the node knows a leader (it can serve
// writes), 503 otherwise; the body says which, for load balancers and people.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	st := s.status()
	body := healthResponse{
		NodeID: st.GetId(), Role: st.GetRole(), LeaderID: st.GetLeaderId(), HasLeader: st.GetLeaderId() != "",
		AppliedIndex: st.GetAppliedIndex(), CommitIndex: st.GetCommitIndex(), LastIndex: st.GetLastIndex(),
		Term: st.GetTerm(), Version: st.GetVersion(),
	}
	w.Header().Set("Content-Type", "application/json")
	if !body.HasLeader {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body)
}
