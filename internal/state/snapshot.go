package state

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// snapshotFormat is the SnapshotHeader.format this code writes and reads.
const snapshotFormat = 1

// Snapshot is a point-in-time, immutable view of the whole store. Taking one
// is cheap (go-memdb is an immutable radix tree); Persist does the I/O, so raft
// can take it in FSM.Snapshot and write it out concurrently with new applies.
type Snapshot struct {
	txn *memdb.Txn
}

// Snapshot captures the store as it is now.
func (s *Store) Snapshot() *Snapshot {
	return &Snapshot{txn: s.readTxn()}
}

// Persist writes the snapshot as size-delimited SnapshotRecords: a header,
// then every row of every table in index order, then the index table.
func (sn *Snapshot) Persist(w io.Writer) error {
	bw := bufio.NewWriter(w)
	write := func(rec *relv1.SnapshotRecord) error {
		_, err := protodelim.MarshalTo(bw, rec)
		return err
	}
	if err := write(&relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Header{Header: &relv1.SnapshotHeader{Format: snapshotFormat}}}); err != nil {
		return fmt.Errorf("state: write snapshot header: %w", err)
	}
	tables := []struct {
		name string
		wrap func(any) *relv1.SnapshotRecord
	}{
		{TableApps, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_App{App: r.(*relv1.App)}}
		}},
		{TableEnvironments, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Environment{Environment: r.(*relv1.Environment)}}
		}},
		{TableReleases, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Release{Release: r.(*relv1.Release)}}
		}},
		{TableServers, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Server{Server: r.(*relv1.Server)}}
		}},
		{TableAgents, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Agent{Agent: r.(*relv1.Agent)}}
		}},
		{TableAgentApps, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_AgentApp{AgentApp: r.(*relv1.AgentApp)}}
		}},
		{TableDesired, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Desired{Desired: r.(*relv1.Desired)}}
		}},
		{TableRollouts, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Rollout{Rollout: r.(*relv1.Rollout)}}
		}},
		{TableHistory, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_History{History: r.(*relv1.HistoryEntry)}}
		}},
		{TableHistorySummaries, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_HistorySummary{HistorySummary: r.(*relv1.HistorySummary)}}
		}},
		{TableEvents, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_RolloutEvent{RolloutEvent: r.(*relv1.RolloutEvent)}}
		}},
		{TableACLTokens, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_AclToken{AclToken: r.(*relv1.ACLToken)}}
		}},
		{TableJoinTokens, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_JoinToken{JoinToken: r.(*relv1.JoinToken)}}
		}},
		{TableFreezes, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_FreezeWindow{FreezeWindow: r.(*relv1.FreezeWindow)}}
		}},
		{TableDeployments, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Deployment{Deployment: r.(*relv1.Deployment)}}
		}},
		{TableRevocations, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_AgentRevocation{AgentRevocation: r.(*relv1.AgentRevocation)}}
		}},
		{TableArtifactTombstones, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_ArtifactTombstone{ArtifactTombstone: r.(*relv1.ArtifactTombstone)}}
		}},
		{TableLifecycles, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Lifecycle{Lifecycle: r.(*relv1.Lifecycle)}}
		}},
		{TablePromotions, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Promotion{Promotion: r.(*relv1.Promotion)}}
		}},
		{TableRequests, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Request{Request: r.(*relv1.RequestRecord)}}
		}},
		{TableAudit, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Audit{Audit: r.(*relv1.AuditRecord)}}
		}},
		{TableAuditRetention, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_AuditRetention{AuditRetention: r.(*relv1.AuditRetention)}}
		}},
		{TableClusterEvents, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Event{Event: r.(*relv1.Event)}}
		}},
		{TableWebhooks, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Webhook{Webhook: r.(*relv1.Webhook)}}
		}},
		{TableWebhookDeadLetters, func(r any) *relv1.SnapshotRecord {
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_WebhookDeadLetter{WebhookDeadLetter: r.(*relv1.WebhookDeadLetter)}}
		}},
		{tableMeta, func(r any) *relv1.SnapshotRecord {
			e := r.(*metaEntry)
			if e.Key == metaClusterID {
				return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_ClusterId{ClusterId: e.Value}}
			}
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Meta{Meta: &relv1.MetaRecord{Key: e.Key, Value: e.Value}}}
		}},
		{tableIndex, func(r any) *relv1.SnapshotRecord {
			e := r.(*indexEntry)
			return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_TableIndex{TableIndex: &relv1.TableIndex{Table: e.Key, Index: e.Value}}}
		}},
	}
	for _, t := range tables {
		it, err := sn.txn.Get(t.name, "id")
		if err != nil {
			return fmt.Errorf("state: snapshot %s: %w", t.name, err)
		}
		next := it.Next
		if t.name == TableHistory {
			// One record per entry, whatever the buckets: their layout
			// is not part of the format (history.go).
			next = historyNext(it)
		}
		for raw := next(); raw != nil; raw = next() {
			rec := t.wrap(raw)
			if rec == nil {
				continue
			}
			if err := write(rec); err != nil {
				return fmt.Errorf("state: snapshot %s: %w", t.name, err)
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("state: flush snapshot: %w", err)
	}
	return nil
}

// Restore replaces the store's contents with a snapshot written by Persist.
// The new contents are built aside and swapped in only when the whole
// snapshot has been read, so a corrupt snapshot leaves the store as it was.
// Blocking queries on the old contents are woken through AbandonCh.
func (s *Store) Restore(r io.Reader) error {
	db := newDB()
	txn := db.Txn(true)
	defer txn.Abort()
	br := bufio.NewReader(r)
	first := true
	var history []*relv1.HistoryEntry // put in buckets at the end
	for {
		rec := &relv1.SnapshotRecord{}
		err := protodelim.UnmarshalFrom(br, rec)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("state: read snapshot: %w", err)
		}
		if first {
			h := rec.GetHeader()
			if h == nil {
				return errors.New("state: snapshot has no header record")
			}
			if h.GetFormat() != snapshotFormat {
				return fmt.Errorf("state: snapshot format %d, this build reads %d", h.GetFormat(), snapshotFormat)
			}
			first = false
			continue
		}
		var (
			table string
			row   any
		)
		switch k := rec.GetKind().(type) {
		case *relv1.SnapshotRecord_App:
			table, row = TableApps, k.App
		case *relv1.SnapshotRecord_Environment:
			table, row = TableEnvironments, k.Environment
		case *relv1.SnapshotRecord_Release:
			table, row = TableReleases, k.Release
		case *relv1.SnapshotRecord_Server:
			table, row = TableServers, k.Server
		case *relv1.SnapshotRecord_Agent:
			table, row = TableAgents, k.Agent
		case *relv1.SnapshotRecord_AgentApp:
			table, row = TableAgentApps, k.AgentApp
		case *relv1.SnapshotRecord_Desired:
			table, row = TableDesired, k.Desired
		case *relv1.SnapshotRecord_Rollout:
			table, row = TableRollouts, k.Rollout
		case *relv1.SnapshotRecord_History:
			history = append(history, k.History)
			continue
		case *relv1.SnapshotRecord_HistorySummary:
			table, row = TableHistorySummaries, k.HistorySummary
		case *relv1.SnapshotRecord_RolloutEvent:
			table, row = TableEvents, k.RolloutEvent
		case *relv1.SnapshotRecord_AclToken:
			table, row = TableACLTokens, k.AclToken
		case *relv1.SnapshotRecord_JoinToken:
			table, row = TableJoinTokens, k.JoinToken
		case *relv1.SnapshotRecord_FreezeWindow:
			table, row = TableFreezes, k.FreezeWindow
		case *relv1.SnapshotRecord_Deployment:
			table, row = TableDeployments, k.Deployment
		case *relv1.SnapshotRecord_AgentRevocation:
			table, row = TableRevocations, k.AgentRevocation
		case *relv1.SnapshotRecord_ArtifactTombstone:
			table, row = TableArtifactTombstones, k.ArtifactTombstone
		case *relv1.SnapshotRecord_Lifecycle:
			table, row = TableLifecycles, k.Lifecycle
		case *relv1.SnapshotRecord_Promotion:
			table, row = TablePromotions, k.Promotion
		case *relv1.SnapshotRecord_Request:
			table, row = TableRequests, k.Request
		case *relv1.SnapshotRecord_Audit:
			table, row = TableAudit, k.Audit
		case *relv1.SnapshotRecord_AuditRetention:
			table, row = TableAuditRetention, k.AuditRetention
		case *relv1.SnapshotRecord_Event:
			table, row = TableClusterEvents, k.Event
		case *relv1.SnapshotRecord_Webhook:
			table, row = TableWebhooks, k.Webhook
		case *relv1.SnapshotRecord_WebhookDeadLetter:
			table, row = TableWebhookDeadLetters, k.WebhookDeadLetter
		case *relv1.SnapshotRecord_Meta:
			table, row = tableMeta, &metaEntry{Key: k.Meta.GetKey(), Value: k.Meta.GetValue()}
		case *relv1.SnapshotRecord_ClusterId:
			table, row = tableMeta, &metaEntry{Key: metaClusterID, Value: k.ClusterId}
		case *relv1.SnapshotRecord_TableIndex:
			table, row = tableIndex, &indexEntry{Key: k.TableIndex.GetTable(), Value: k.TableIndex.GetIndex()}
		default:
			return fmt.Errorf("state: snapshot record of unknown kind %T", k)
		}
		if err := txn.Insert(table, row); err != nil {
			return fmt.Errorf("state: restore %s: %w", table, err)
		}
	}
	if first {
		return errors.New("state: snapshot is empty")
	}
	if err := restoreHistory(txn, history); err != nil {
		return err
	}
	txn.Commit()

	s.mu.Lock()
	old := s.abandonCh
	s.db, s.abandonCh = db, make(chan struct{})
	s.mu.Unlock()
	close(old)
	return nil
}

// Equal reports whether two stores hold the same rows and indexes; tests use
// it to prove snapshot round trips and replica convergence.
func Equal(a, b *Store) (bool, string) {
	ta, tb := a.readTxn(), b.readTxn()
	if a.ClusterID() != b.ClusterID() {
		return false, fmt.Sprintf("cluster ids differ: %q != %q", a.ClusterID(), b.ClusterID())
	}
	if a.ACLBootstrapped() != b.ACLBootstrapped() {
		return false, "ACL bootstrap differs"
	}
	for _, table := range allTables {
		ia, err := ta.Get(table, "id")
		if err != nil {
			return false, err.Error()
		}
		ib, err := tb.Get(table, "id")
		if err != nil {
			return false, err.Error()
		}
		nextA, nextB := ia.Next, ib.Next
		if table == TableHistory {
			// Entry by entry: two stores may bucket them differently.
			nextA, nextB = historyNext(ia), historyNext(ib)
		}
		for n := 0; ; n++ {
			ra, rb := nextA(), nextB()
			if ra == nil && rb == nil {
				break
			}
			if ra == nil || rb == nil {
				return false, fmt.Sprintf("%s: row counts differ at row %d", table, n)
			}
			if pa, ok := ra.(proto.Message); ok {
				if !proto.Equal(pa, rb.(proto.Message)) {
					return false, fmt.Sprintf("%s row %d: %v != %v", table, n, ra, rb)
				}
			} else if *ra.(*indexEntry) != *rb.(*indexEntry) {
				return false, fmt.Sprintf("%s row %d: %v != %v", table, n, ra, rb)
			}
		}
	}
	return true, ""
}
