package server

import (
	"context"
	"sort"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/report"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// reportService implements relv1.ReportService: release notes (what a
// candidate changes compared with what runs) and the management report's
// records. Both are reads of the local replica (or the leader's, with
// --consistent); nothing is stored for them but the deployment records the
// FSM keeps (internal/state/deployments.go).
type reportService struct {
	relv1.UnimplementedReportServiceServer
	s *Server
}

// MaxReportPeriod bounds a report's period: the period before it must fit
// in the default deployment retention.
const MaxReportPeriod = 200 * 24 * time.Hour

func (rs *reportService) ReleaseNotes(ctx context.Context, req *relv1.ReleaseNotesRequest) (*relv1.ReleaseNotesResponse, error) {
	if err := firstErr(validate.Name("app name", req.GetApp()), validate.Version(req.GetVersion())); err != nil {
		return nil, toStatus(err)
	}
	if req.GetSince() != "" && req.GetEnvironment() != "" {
		return nil, status.Error(codes.InvalidArgument, "give --since VERSION or --env ENV, not both: --since compares with a version, --env with what the environment runs")
	}
	if req.GetSince() != "" {
		if err := validate.Version(req.GetSince()); err != nil {
			return nil, toStatus(err)
		}
	}
	if req.GetEnvironment() != "" {
		if err := validate.Name("environment name", req.GetEnvironment()); err != nil {
			return nil, toStatus(err)
		}
	}
	if conn, err := rs.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewReportServiceClient(conn).ReleaseNotes(forwardCtx(ctx), req)
	}
	if _, err := rs.s.store.App(nil, req.GetApp()); err != nil {
		return nil, status.Errorf(codes.NotFound, "app %q not found: 'relctl app list' shows them", req.GetApp())
	}
	cand, _, err := rs.s.store.Release(nil, req.GetApp(), req.GetVersion())
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "release %s@%s not found: 'relctl release list %s' shows its releases", req.GetApp(), req.GetVersion(), req.GetApp())
	}
	rels, idx, err := rs.s.store.Releases(memdb.NewWatchSet(), req.GetApp())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.ReleaseNotesResponse{Candidate: cand, Index: idx}
	base := ""
	switch {
	case req.GetSince() != "":
		if _, _, err := rs.s.store.Release(nil, req.GetApp(), req.GetSince()); err != nil {
			return nil, status.Errorf(codes.NotFound, "--since %s: release %s@%s not found: 'relctl release list %s' shows its releases", req.GetSince(), req.GetApp(), req.GetSince(), req.GetApp())
		}
		base = req.GetSince()
	case req.GetEnvironment() != "":
		v, err := rs.s.readWhere()
		if err != nil {
			return nil, toStatus(err)
		}
		env := v.env(req.GetEnvironment())
		if env == nil {
			return nil, status.Errorf(codes.NotFound, "environment %q not found: 'relctl env list' shows them", req.GetEnvironment())
		}
		resp.Running = runningVersions(v, req.GetApp(), env)
		if len(resp.Running) > 0 {
			base = resp.Running[0].GetVersion()
		} else {
			// Nothing healthy there now: what the environment last
			// deployed, if anything.
			base = v.envStatus(req.GetApp(), env).GetCurrentVersion()
		}
	}
	resp.BaseVersion = base
	resp.Releases, resp.NothingNew = notesBetween(rels, base, cand)
	return resp, nil
}

// notesBetween picks, from an app's releases, those created after base
// (exclusive; "" for none, or a version that no longer exists) up to and
// including cand, oldest first. nothingNew is true when cand is base or
// was created before it.
func notesBetween(rels []*relv1.Release, base string, cand *relv1.Release) (out []*relv1.Release, nothingNew bool) {
	var after uint64
	for _, r := range rels {
		if r.GetVersion() == base {
			after = r.GetCreateIndex()
		}
	}
	if base != "" && after >= cand.GetCreateIndex() && after != 0 {
		return nil, true
	}
	for _, r := range rels {
		if r.GetCreateIndex() > after && r.GetCreateIndex() <= cand.GetCreateIndex() {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetCreateIndex() < out[j].GetCreateIndex() })
	return out, false
}

// runningVersions counts the versions of app that env's connected hosts
// run healthy, most hosts first (then by version, so the answer is the
// same every time).
func runningVersions(v *whereView, app string, env *relv1.Environment) []*relv1.VersionCount {
	n := map[string]uint32{}
	for _, ag := range v.agents {
		if !ag.GetConnected() || !state.Matches(env.GetSelector(), ag.GetLabels()) {
			continue
		}
		if r := v.reports[ag.GetId()][app]; r != nil && r.GetPhase() == "healthy" && r.GetVersion() != "" {
			n[r.GetVersion()]++
		}
	}
	out := make([]*relv1.VersionCount, 0, len(n))
	for ver, c := range n {
		out = append(out, &relv1.VersionCount{Version: ver, Hosts: c})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].GetHosts() != out[j].GetHosts() {
			return out[i].GetHosts() > out[j].GetHosts()
		}
		return out[i].GetVersion() < out[j].GetVersion()
	})
	return out
}

func (rs *reportService) Report(ctx context.Context, req *relv1.ReportRequest) (*relv1.ReportResponse, error) {
	period := time.Duration(req.GetPeriodNanos())
	if period == 0 {
		period = report.DefaultPeriod
	}
	if period < time.Hour || period > MaxReportPeriod {
		return nil, status.Errorf(codes.InvalidArgument, "report period %s: give 1h to %dd (e.g. --since 30d); the period before it is compared too", period, int(MaxReportPeriod.Hours()/24))
	}
	if req.GetApp() != "" {
		if err := validate.Name("app name", req.GetApp()); err != nil {
			return nil, toStatus(err)
		}
	}
	if req.GetEnvironment() != "" {
		if err := validate.Name("environment name", req.GetEnvironment()); err != nil {
			return nil, toStatus(err)
		}
	}
	if conn, err := rs.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewReportServiceClient(conn).Report(forwardCtx(ctx), req)
	}
	resp, err := rs.s.reportInput(req.GetApp(), req.GetEnvironment(), time.Now(), period)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// reportInput reads what the report of the period ending at now needs:
// the deployment records of the period and the one before, and what runs
// where. The web dashboard builds its page from the same answer
// (report.FromResponse).
func (s *Server) reportInput(app, env string, now time.Time, period time.Duration) (*relv1.ReportResponse, error) {
	v, err := s.readWhere()
	if err != nil {
		return nil, toStatus(err)
	}
	if app != "" {
		if _, err := s.store.App(nil, app); err != nil {
			return nil, status.Errorf(codes.NotFound, "app %q not found: 'relctl app list' shows them", app)
		}
	}
	if env != "" && v.env(env) == nil {
		return nil, status.Errorf(codes.NotFound, "environment %q not found: 'relctl env list' shows them", env)
	}
	ds, idx, err := s.store.Deployments(nil, app, env, now.Add(-2*period).UnixNano(), now.UnixNano()+1)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.ReportResponse{NowUnixNano: now.UnixNano(), PeriodNanos: int64(period), Deployments: ds, Index: max(idx, v.index)}
	for _, a := range v.apps {
		if app != "" && a.GetName() != app {
			continue
		}
		for _, e := range v.envs {
			if env != "" && e.GetName() != env {
				continue
			}
			st := v.envStatus(a.GetName(), e)
			cell := &relv1.RunningCell{App: a.GetName(), Environment: e.GetName(), CurrentVersion: st.GetCurrentVersion(), Hosts: st.GetHosts(),
				Running: runningVersions(v, a.GetName(), e)}
			if len(cell.Running) > 0 || cell.CurrentVersion != "" {
				resp.Running = append(resp.Running, cell)
			}
		}
	}
	// The records travel in one answer (about 150 bytes each: some 20,000
	// of them fit); past gRPC's limit, say what to do instead of failing
	// in the transport.
	if n := proto.Size(resp); n > maxPageBytes {
		return nil, status.Errorf(codes.ResourceExhausted, "the report of %s covers %d deployment records (%d bytes), more than one answer carries: narrow it with --app, --env or a shorter --since",
			report.FormatDuration(period), len(ds), n)
	}
	return resp, nil
}

// firstErr is the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
