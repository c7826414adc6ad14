// Package engine drives rollouts on the leader: it reads the state store,
// asks the pure planner (internal/rollout) for the next move and commits
// it through raft.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/relhq/rel/internal/freeze"
	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// ApplyFunc commits a command through raft (on the leader).
type ApplyFunc func(ctx context.Context, cmd *relv1.Command) (uint64, error)

// Engine drives every active rollout. It runs on the leader only: started
// when leadership is gained, cancelled when it is lost. It holds no
// progress of its own: each pass reads the rollouts and their hosts from the
// state store, asks Step what to do, and commits the decision; then it
// waits for the state to change or for the earliest timer (bake end,
// progress deadline).
type Engine struct {
	Store  *state.Store
	Apply  ApplyFunc
	Logger *slog.Logger
	// Now stamps decisions; time.Now in production.
	Now func() time.Time
	// NewID names automatic rollbacks.
	NewID func() string
	// NeedsApproval says whether a frozen rollout released now must wait
	// for approvals (awaiting_approval) instead of being queued; nil: no
	// rollout needs any.
	NeedsApproval func(*relv1.Rollout) bool
}

// Run drives rollouts until ctx ends.
func (e *Engine) Run(ctx context.Context) {
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		ws.Add(e.Store.AbandonCh())
		active, err := e.Store.ActiveRollouts(ws)
		if err != nil {
			e.Logger.Error("rollout engine: read rollouts", "err", err)
			return
		}
		// Any agent or report change may move a rollout on. One watch on
		// each table's index row is enough for this single loop, and far
		// cheaper than a channel per host.
		e.Store.WatchTables(ws, state.TableAgents, state.TableAgentApps)
		// A freeze window created or deleted holds or releases rollouts.
		windows, _, err := e.Store.Freezes(ws)
		if err != nil {
			e.Logger.Error("rollout engine: read freezes", "err", err)
			return
		}
		var wake time.Time
		for _, ro := range active {
			v := rollout.View{Rollout: ro, Hosts: Observe(e.Store, ro), Now: e.Now()}
			e.freezeView(&v, windows)
			if ro.GetState() == rollout.StateQueued {
				if b, _, err := e.Store.Blocker(ro); err == nil && b != nil {
					v.Blocker = b.GetId()
				}
			}
			d := rollout.Step(v)
			if d.Rollout != nil {
				if err := e.Commit(ctx, ro, d); err != nil {
					if ctx.Err() != nil {
						return
					}
					if !errors.Is(err, state.ErrConflict) {
						e.Logger.Warn("rollout engine: commit failed; retrying", "rollout", ro.GetId(), "err", err)
						retry.Sleep(ctx, time.Duration(100+rand.IntN(200))*time.Millisecond)
					}
					continue // the state changed: the next pass re-reads it
				}
			}
			if !d.Wake.IsZero() && (wake.IsZero() || d.Wake.Before(wake)) {
				wake = d.Wake
			}
		}
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if !wake.IsZero() {
			wctx, cancel = context.WithDeadline(ctx, wake)
		}
		_ = ws.WatchCtx(wctx)
		cancel()
	}
}

// freezeView fills in the freeze verdict of v's rollout at v.Now, and
// whether it would wait for approvals if released.
func (e *Engine) freezeView(v *rollout.View, windows []*relv1.FreezeWindow) {
	ro := v.Rollout
	if !rollout.FreezeApplies(ro) {
		return
	}
	if fv := freeze.ForRollout(windows, ro, v.Now); fv.Frozen {
		v.FrozenUntil, v.FreezeWindow, v.FreezeHold = fv.Until, fv.Window.GetName(), freeze.Hold(fv)
	}
	if ro.GetState() == rollout.StateFrozen && e.NeedsApproval != nil {
		v.NeedsApproval = e.NeedsApproval(ro)
	}
}

// Observe reads what the cluster knows of a rollout's hosts from a store.
func Observe(st *state.Store, ro *relv1.Rollout) map[string]rollout.Obs {
	obs := make(map[string]rollout.Obs, len(ro.GetHosts()))
	for _, h := range ro.GetHosts() {
		var o rollout.Obs
		if a, err := st.Agent(nil, h.GetAgentId()); err == nil {
			o.Connected, o.DisconnectReason = a.GetConnected(), a.GetDisconnectReason()
		}
		if aa, _ := st.AgentApp(nil, h.GetAgentId(), ro.GetApp()); aa != nil {
			if rep := aa.GetReport(); rep.GetRolloutId() == ro.GetId() {
				o.Phase, o.Reason = rep.GetPhase(), rep.GetReason()
				o.At = time.Unix(0, rep.GetAtUnixNano())
			}
			if aa.GetReport().GetPhase() == "healthy" {
				o.Running = aa.GetReport().GetVersion()
			}
		}
		obs[h.GetAgentId()] = o
	}
	return obs
}

// Commit commits Step's decision d for ro, the rollout as read from the
// store: as a delta (the rollout's header and the hosts that changed), so
// that a step's size does not grow with the fleet. It returns the
// application error the FSM decided on (ErrConflict when ro changed
// meanwhile).
func (e *Engine) Commit(ctx context.Context, ro *relv1.Rollout, d rollout.Decision) error {
	desired, err := DesiredRows(e.Store, d.Rollout, d.Dispatch)
	if err != nil {
		return err
	}
	step := &relv1.RolloutStep{Rollout: d.Rollout, ExpectModifyIndex: ro.GetModifyIndex(), Desired: desired, Events: d.Events}
	cmd := &relv1.Command{StampedUnixNano: e.Now().UnixNano(), Kind: &relv1.Command_RolloutStep{RolloutStep: step}}
	if delta, ok := rollout.Delta(ro, d.Rollout); ok {
		step.Rollout = delta
		cmd.Kind = &relv1.Command_RolloutStepDelta{RolloutStepDelta: step}
	} else {
		e.Logger.Warn("rollout engine: the new row does not hold the stored row's hosts; committing it whole", "rollout", ro.GetId())
	}
	if d.Rollback {
		// The rollback starts in the same raft entry as the failure.
		rb, err := rollout.RollbackCommand(d.Rollout, e.NewID(), false, e.Now())
		if err != nil {
			e.Logger.Warn("automatic rollback not possible; the rollout stays failed", "rollout", ro.GetId(), "err", err)
		} else {
			step.StartRollback = rb.GetCreateRollout()
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = e.Apply(cctx, cmd)
	if err == nil {
		for _, ev := range d.Events {
			e.Logger.Info("rollout", "rollout", ro.GetId(), "event", ev.GetType(), "host", ev.GetHost(), "msg", ev.GetMessage())
		}
		if rb := step.GetStartRollback(); rb != nil {
			e.Logger.Info("automatic rollback started", "rollout", ro.GetId(), "rollback", rb.GetRollout().GetId())
		}
	}
	return err
}

// DesiredRows turns dispatched hosts into desired-state rows, each with
// the release of its own target version.
func DesiredRows(st *state.Store, ro *relv1.Rollout, hosts []*relv1.RolloutHost) ([]*relv1.Desired, error) {
	out := make([]*relv1.Desired, 0, len(hosts))
	rels := map[string]*relv1.Release{}
	for _, h := range hosts {
		rel := rels[h.GetTargetVersion()]
		if rel == nil {
			r, _, err := st.Release(nil, ro.GetApp(), h.GetTargetVersion())
			if err != nil {
				return nil, fmt.Errorf("dispatch %s: %w", h.GetAgentId(), err)
			}
			rel, rels[h.GetTargetVersion()] = r, r
		}
		out = append(out, &relv1.Desired{
			AgentId: h.GetAgentId(), App: ro.GetApp(), Version: rel.GetVersion(), Sha256: rel.GetSha256(),
			Size: rel.GetSize(), ArtifactUrl: rel.GetArtifactUrl(), RolloutId: ro.GetId(),
		})
	}
	return out, nil
}
