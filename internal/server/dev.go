package server

import (
	"context"
	"fmt"
	"time"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/retry"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// DevCredentials makes what `rel-server --dev` hands its user, once the
// node leads: the management token (bootstrapping ACLs) and a join token
// for local agents (uses, ttl). It goes through the same ACL service a
// client would, as the node itself.
func (s *Server) DevCredentials(ctx context.Context, uses uint32, ttl time.Duration) (mgmt, join string, err error) {
	for !s.IsLeader() || s.store.ClusterID() == "" {
		if !retry.Sleep(ctx, 20*time.Millisecond) {
			return "", "", fmt.Errorf("no leader: %w", ctx.Err())
		}
	}
	ctx = auth.NewContext(ctx, auth.Principal{Kind: auth.KindServer, ID: s.cfg.NodeID, Cluster: s.cluster(),
		Grants: []auth.Grant{{Role: auth.Admin}}})
	acl := &aclService{s: s}
	boot, err := acl.Bootstrap(ctx, &relv1.ACLBootstrapRequest{})
	if err != nil {
		return "", "", fmt.Errorf("bootstrap ACLs: %w", err)
	}
	jt, err := acl.CreateJoinToken(ctx, &relv1.CreateJoinTokenRequest{
		Description: "rel-server --dev: local agents", Uses: uses, TtlSeconds: int64(ttl / time.Second),
	})
	if err != nil {
		return "", "", fmt.Errorf("create a join token: %w", err)
	}
	return boot.GetSecret(), jt.GetSecret(), nil
}
