package server

import (
	"context"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/artifact"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// controlService implements relv1.ControlService. Every call validates its
// input before anything is proposed, so a bad request never reaches the log,
// and the FSM re-checks existence so that concurrent requests cannot race.
type controlService struct {
	relv1.UnimplementedControlServiceServer
	s *Server
}

func (c *controlService) CreateApp(ctx context.Context, req *relv1.CreateAppRequest) (*relv1.CreateAppResponse, error) {
	if err := validate.Name("app name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Description(req.GetDescription()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetLifecycle() != "" {
		if err := validate.Name("lifecycle name", req.GetLifecycle()); err != nil {
			return nil, toStatus(err)
		}
	}
	app := &relv1.App{Name: req.GetName(), Description: req.GetDescription(), Lifecycle: req.GetLifecycle(), CreatedUnixNano: time.Now().UnixNano()}
	a, err := c.s.applyCommand(ctx, &relv1.Command{StampedUnixNano: app.CreatedUnixNano, Kind: &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: app}}})
	if err != nil {
		return nil, toStatus(err)
	}
	if a.Duplicate {
		// An earlier attempt of this request created the app.
		if first, err := c.s.store.App(nil, app.GetName()); err == nil {
			return &relv1.CreateAppResponse{App: first, Index: a.Index}, nil
		}
	}
	app.CreateIndex, app.ModifyIndex = a.Index, a.Index
	return &relv1.CreateAppResponse{App: app, Index: a.Index}, nil
}

func (c *controlService) ListApps(ctx context.Context, req *relv1.ListAppsRequest) (*relv1.ListAppsResponse, error) {
	if conn, err := c.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).ListApps(forwardCtx(ctx), req)
	}
	apps, idx, err := c.s.store.Apps(memdb.NewWatchSet())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.ListAppsResponse{Apps: apps, Index: idx}, nil
}

func (c *controlService) CreateEnvironment(ctx context.Context, req *relv1.CreateEnvironmentRequest) (*relv1.CreateEnvironmentResponse, error) {
	if err := validate.Name("environment name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Description(req.GetDescription()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Labels("selector", req.GetSelector(), true); err != nil {
		return nil, toStatus(err)
	}
	if req.GetCatchUpParallel() > maxCatchUpParallel {
		return nil, status.Errorf(codes.InvalidArgument, "--catch-up-parallel %d: at most %d hosts at a time", req.GetCatchUpParallel(), maxCatchUpParallel)
	}
	if req.GetDefaultSpec() != nil {
		if _, err := rollout.Normalize(req.GetDefaultSpec()); err != nil {
			return nil, specStatus(err)
		}
	}
	env := &relv1.Environment{Name: req.GetName(), Description: req.GetDescription(), Selector: req.GetSelector(), CreatedUnixNano: time.Now().UnixNano(),
		CatchUpManual: req.GetCatchUpManual(), CatchUpParallel: req.GetCatchUpParallel(), DefaultSpec: req.GetDefaultSpec()}
	a, err := c.s.applyCommand(ctx, &relv1.Command{StampedUnixNano: env.CreatedUnixNano, Kind: &relv1.Command_CreateEnvironment{CreateEnvironment: &relv1.CreateEnvironment{Environment: env}}})
	if err != nil {
		return nil, toStatus(err)
	}
	if a.Duplicate {
		envs, _, _ := c.s.store.Environments(nil)
		for _, e := range envs {
			if e.GetName() == env.GetName() {
				return &relv1.CreateEnvironmentResponse{Environment: e, Index: a.Index}, nil
			}
		}
	}
	env.CreateIndex, env.ModifyIndex = a.Index, a.Index
	return &relv1.CreateEnvironmentResponse{Environment: env, Index: a.Index}, nil
}

func (c *controlService) ListEnvironments(ctx context.Context, req *relv1.ListEnvironmentsRequest) (*relv1.ListEnvironmentsResponse, error) {
	if conn, err := c.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).ListEnvironments(forwardCtx(ctx), req)
	}
	envs, idx, err := c.s.store.Environments(memdb.NewWatchSet())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.ListEnvironmentsResponse{Environments: envs, Index: idx}, nil
}

func (c *controlService) CreateRelease(ctx context.Context, req *relv1.CreateReleaseRequest) (*relv1.CreateReleaseResponse, error) {
	if err := validate.Name("app name", req.GetApp()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Version(req.GetVersion()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.ArtifactURL(req.GetArtifactUrl()); err != nil {
		return nil, toStatus(err)
	}
	var (
		sum  string
		size int64
		err  error
	)
	var checked uint64
	digest, stored := artifact.DigestFromURL(req.GetArtifactUrl())
	if stored && req.GetSha256() == "" {
		sum = digest
	} else if sum, err = validate.SHA256(req.GetSha256()); err != nil {
		return nil, toStatus(err)
	}
	if stored {
		if sum != digest {
			return nil, status.Errorf(codes.InvalidArgument, "sha256 %s does not match the uploaded artifact %s", sum, req.GetArtifactUrl())
		}
		// Read before looking at the store: a blob here now was stored
		// after every removal through checked was deleted, and the FSM
		// refuses the release if a newer removal took it.
		checked = c.s.removals.processed()
		// The upload made a majority of servers hold the blob; this one may
		// be in the minority, so it fetches from a peer if need be.
		n, ok := c.s.artifacts.Has(digest)
		if !ok {
			if ferr := c.s.fetchFromPeers(ctx, digest); ferr != nil {
				return nil, status.Errorf(codes.FailedPrecondition, "artifact %s is not in the cluster's store: upload it first (relctl release create --artifact PATH)", req.GetArtifactUrl())
			}
			n, _ = c.s.artifacts.Has(digest)
		}
		size = n
	}
	if err := validate.Notes(req.GetNotes()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Commit(req.GetCommit()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Labels("label", req.GetLabels(), false); err != nil {
		return nil, toStatus(err)
	}
	now := time.Now().UnixNano()
	if err := firstErr(validate.Changelog(req.GetChangelog()), validate.BuildURL(req.GetBuildUrl()),
		validate.CommitTime(req.GetCommitUnixNano(), now)); err != nil {
		return nil, toStatus(err)
	}
	rel := &relv1.Release{
		App: req.GetApp(), Version: req.GetVersion(), ArtifactUrl: req.GetArtifactUrl(), Sha256: sum,
		Notes: req.GetNotes(), Commit: req.GetCommit(), Labels: req.GetLabels(), CreatedUnixNano: now,
		Size: size, Changelog: req.GetChangelog(), BuildUrl: req.GetBuildUrl(), CommitUnixNano: req.GetCommitUnixNano(),
	}
	a, err := c.s.applyCommand(ctx, &relv1.Command{StampedUnixNano: rel.CreatedUnixNano, Kind: &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: rel, ArtifactCheckedIndex: checked}}})
	if err != nil {
		return nil, toStatus(err)
	}
	if a.Duplicate {
		if first, _, err := c.s.store.Release(nil, rel.GetApp(), rel.GetVersion()); err == nil {
			return &relv1.CreateReleaseResponse{Release: first, Index: a.Index}, nil
		}
	}
	rel.CreateIndex, rel.ModifyIndex = a.Index, a.Index
	return &relv1.CreateReleaseResponse{Release: rel, Index: a.Index}, nil
}

func (c *controlService) ListReleases(ctx context.Context, req *relv1.ListReleasesRequest) (*relv1.ListReleasesResponse, error) {
	if req.GetApp() != "" {
		if err := validate.Name("app name", req.GetApp()); err != nil {
			return nil, toStatus(err)
		}
	}
	if conn, err := c.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).ListReleases(forwardCtx(ctx), req)
	}
	if req.GetApp() != "" {
		if _, err := c.s.store.App(nil, req.GetApp()); err != nil {
			return nil, toStatus(err)
		}
	}
	rels, idx, err := c.s.store.Releases(memdb.NewWatchSet(), req.GetApp())
	if err != nil {
		return nil, toStatus(err)
	}
	key := &relv1.Release{}
	if ok, err := parsePageToken("releases", req.GetPageToken(), key); err != nil {
		return nil, err
	} else if ok {
		rels = after(rels, key, state.ReleaseLess)
	}
	resp := &relv1.ListReleasesResponse{Index: idx}
	page, more := fillPage(newPageBudget(req.GetPageSize()), rels, func(r *relv1.Release) *relv1.Release { return r })
	resp.Releases = page
	if more {
		last := page[len(page)-1]
		resp.NextPageToken = pageToken("releases", &relv1.Release{App: last.GetApp(), Version: last.GetVersion(), CreateIndex: last.GetCreateIndex()})
	}
	return resp, nil
}

func (c *controlService) GetRelease(ctx context.Context, req *relv1.GetReleaseRequest) (*relv1.GetReleaseResponse, error) {
	if err := validate.Name("app name", req.GetApp()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Version(req.GetVersion()); err != nil {
		return nil, toStatus(err)
	}
	if conn, err := c.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).GetRelease(forwardCtx(ctx), req)
	}
	if _, err := c.s.store.App(nil, req.GetApp()); err != nil {
		return nil, toStatus(err)
	}
	rel, idx, err := c.s.store.Release(memdb.NewWatchSet(), req.GetApp(), req.GetVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.GetReleaseResponse{Release: rel, Index: idx}, nil
}

// readTarget decides where a read is served: nil means here, from the local
// replica (after a leader check when the read is consistent); a connection
// means forward the read to the leader.
func (s *Server) readTarget(ctx context.Context, opts *relv1.ReadOptions) (*grpc.ClientConn, error) {
	if !opts.GetConsistent() {
		return nil, nil
	}
	return s.consistentRead(ctx)
}

// DeleteRelease deletes a release nothing needs. This server refuses
// early (nothing proposed, nothing stored) what the FSM would refuse on
// its replica; the FSM decides again with the same rule
// (state.Store.DeleteRelease), in raft order. The artifact stays: an
// artifact GC removes it once no release refers to it
// (state.Store.ReferencedArtifacts).
func (c *controlService) DeleteRelease(ctx context.Context, req *relv1.DeleteReleaseRequest) (*relv1.DeleteReleaseResponse, error) {
	s := c.s
	if err := validate.Name("app name", req.GetApp()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Version(req.GetVersion()); err != nil {
		return nil, toStatus(err)
	}
	cmd := &relv1.Command{Kind: &relv1.Command_DeleteRelease{DeleteRelease: &relv1.DeleteRelease{App: req.GetApp(), Version: req.GetVersion()}}}
	// A repeat of a delete that was applied gets its first answer, not
	// the NotFound the check below would now give.
	if index, _, ok, err := s.repeatedAnswer(ctx, cmd); ok {
		if err != nil {
			return nil, err
		}
		return &relv1.DeleteReleaseResponse{Index: index}, nil
	}
	if err := s.store.CheckReleaseDeletable(req.GetApp(), req.GetVersion()); err != nil {
		return nil, toStatus(err)
	}
	a, err := s.applyCommand(ctx, cmd)
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.DeleteReleaseResponse{Index: a.Index}, nil
}
