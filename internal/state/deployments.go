package state

import (
	"fmt"
	"sort"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Deployment records are what the management report (internal/report)
// counts. Rollouts are pruned after days (retention.go), but DORA figures
// look back 30 or 90 days and compare with the period before, so every
// rollout leaves one compact record, written in the very transaction that
// makes it terminal and kept for --deployment-retention.

// trackDeployment records ro's deployment when ro is terminal. Every write
// of a rollout row calls it (like trackPromotion), so no path to a
// terminal state (a step, a control, a rollback's end, an approval refused
// or expired) is missed. A record is written once, when the rollout first
// ends; a succeeded deploy that a rollback later reverts ends again
// (rolled_back), and only its outcome and finish change.
func trackDeployment(txn *memdb.Txn, index uint64, ro *relv1.Rollout) error {
	if !rollout.Terminal(ro.GetState()) {
		return nil
	}
	if raw, err := txn.First(TableDeployments, "id", ro.GetId()); err != nil {
		return fmt.Errorf("state: lookup deployment: %w", err)
	} else if raw != nil {
		old := raw.(*relv1.Deployment)
		if old.GetOutcome() == ro.GetState() {
			return nil
		}
		d := proto.Clone(old).(*relv1.Deployment)
		d.Outcome, d.ModifyIndex = ro.GetState(), index
		if f := ro.GetFinishedUnixNano(); f > d.GetFinishedUnixNano() {
			d.FinishedUnixNano = f
		}
		if err := txn.Insert(TableDeployments, d); err != nil {
			return fmt.Errorf("state: update deployment: %w", err)
		}
		return setIndex(txn, TableDeployments, index)
	}
	d := &relv1.Deployment{
		RolloutId: ro.GetId(), App: ro.GetApp(), Environment: ro.GetEnvironment(), Version: ro.GetVersion(),
		Kind: ro.GetKind(), Strategy: ro.GetSpec().GetStrategy(), Outcome: ro.GetState(),
		RequestedUnixNano: ro.GetCreatedUnixNano(), FinishedUnixNano: ro.GetFinishedUnixNano(),
		ChangeType: ro.GetChangeType(), RollbackOf: ro.GetRollbackOf(),
		Hosts:       uint32(len(ro.GetHosts())),
		CreateIndex: index, ModifyIndex: index,
	}
	if d.Kind == "" {
		d.Kind = rollout.KindDeploy
	}
	if d.FinishedUnixNano == 0 {
		// Rows written before finished times were kept: the entry's
		// rollout stamp is the best the log holds.
		d.FinishedUnixNano = ro.GetLastProgressUnixNano()
	}
	if d.FinishedUnixNano == 0 {
		d.FinishedUnixNano = ro.GetCreatedUnixNano()
	}
	if d.Outcome == rollout.StateSucceeded {
		d.SucceededUnixNano = d.FinishedUnixNano
	}
	for _, h := range ro.GetHosts() {
		if t := h.GetDispatchedUnixNano(); t != 0 && (d.StartedUnixNano == 0 || t < d.StartedUnixNano) {
			d.StartedUnixNano = t
		}
		switch h.GetState() {
		case rollout.HostHealthy:
			d.HostsHealthy++
		case rollout.HostFailed:
			d.HostsFailed++
		}
	}
	if raw, err := txn.First(TableReleases, "id", ro.GetApp(), ro.GetVersion()); err != nil {
		return fmt.Errorf("state: lookup release: %w", err)
	} else if raw != nil {
		rel := raw.(*relv1.Release)
		d.Sha256, d.ReleaseCreatedUnixNano, d.CommitUnixNano = rel.GetSha256(), rel.GetCreatedUnixNano(), rel.GetCommitUnixNano()
	}
	wait, awaited, err := approvalWait(txn, ro.GetId())
	if err != nil {
		return err
	}
	d.ApprovalWaitNanos, d.AwaitedApproval = wait, awaited
	if err := txn.Insert(TableDeployments, d); err != nil {
		return fmt.Errorf("state: insert deployment: %w", err)
	}
	return setIndex(txn, TableDeployments, index)
}

// approvalWait reads a rollout's events for its start gate: from the
// first awaiting_approval to the approved that follows it. awaited says
// whether it waited at all; the wait is 0 when it was never approved.
func approvalWait(txn *memdb.Txn, id string) (wait int64, awaited bool, err error) {
	it, err := txn.Get(TableEvents, "id_prefix", id)
	if err != nil {
		return 0, false, fmt.Errorf("state: rollout events: %w", err)
	}
	var evs []*relv1.RolloutEvent
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if e := raw.(*relv1.RolloutEvent); e.GetRolloutId() == id {
			evs = append(evs, e)
		}
	}
	// Uvarint keys do not sort numerically (see RolloutEvents).
	sort.Slice(evs, func(i, j int) bool { return evs[i].GetSeq() < evs[j].GetSeq() })
	var since int64
	for _, e := range evs {
		switch e.GetType() {
		case rollout.EventAwaitingApproval:
			if !awaited {
				awaited, since = true, e.GetAtUnixNano()
			}
		case rollout.EventApproved:
			if awaited {
				return max(0, e.GetAtUnixNano()-since), true, nil
			}
		}
	}
	return 0, awaited, nil
}

// Deployments lists the deployment records that finished in [from, to),
// oldest finish first; app and env filter when not empty.
func (s *Store) Deployments(ws memdb.WatchSet, app, env string, from, to int64) ([]*relv1.Deployment, uint64, error) {
	txn := s.readTxn()
	it, err := txn.LowerBound(TableDeployments, "finished", from)
	if err != nil {
		return nil, 0, fmt.Errorf("state: deployments: %w", err)
	}
	var out []*relv1.Deployment
	for raw := it.Next(); raw != nil; raw = it.Next() {
		d := raw.(*relv1.Deployment)
		if d.GetFinishedUnixNano() >= to {
			break
		}
		if (app == "" || d.GetApp() == app) && (env == "" || d.GetEnvironment() == env) {
			out = append(out, d)
		}
	}
	return out, tableIndexOf(txn, ws, TableDeployments), nil
}

// PrunableDeployments counts the records a PruneDeployments at cutoff would
// remove (at most limit), so the leader proposes a pass only with work.
func (s *Store) PrunableDeployments(cutoff int64, limit int) (int, error) {
	ds, err := prunable(s.readTxn(), cutoff, limit)
	return len(ds), err
}

// PruneDeployments removes the deployment records that finished at or
// before cutoff, oldest first, at most limit; it returns how many. A
// repeat finds none left.
func (s *Store) PruneDeployments(index uint64, cutoff int64, limit int) (int, error) {
	txn := s.writeTxn()
	defer txn.Abort()
	ds, err := prunable(txn, cutoff, limit)
	if err != nil {
		return 0, err
	}
	for _, d := range ds {
		if err := txn.Delete(TableDeployments, d); err != nil {
			return 0, fmt.Errorf("state: prune deployment: %w", err)
		}
	}
	if len(ds) > 0 {
		if err := setIndex(txn, TableDeployments, index); err != nil {
			return 0, err
		}
	}
	txn.Commit()
	return len(ds), nil
}

func prunable(txn *memdb.Txn, cutoff int64, limit int) ([]*relv1.Deployment, error) {
	it, err := txn.Get(TableDeployments, "finished")
	if err != nil {
		return nil, fmt.Errorf("state: deployments: %w", err)
	}
	var out []*relv1.Deployment
	for raw := it.Next(); raw != nil && len(out) < limit; raw = it.Next() {
		d := raw.(*relv1.Deployment)
		if d.GetFinishedUnixNano() > cutoff {
			break
		}
		out = append(out, d)
	}
	return out, nil
}
