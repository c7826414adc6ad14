// Package state is Rel's replicated state: a go-memdb store whose rows are the
// rel.v1 protobuf messages (history's: buckets of them, see history.go). The
// raft FSM is its only writer; every write carries the raft index it was
// applied at, so rows record CreateIndex and ModifyIndex and the index table
// records the latest write per table.
//
// Rows read from the store are shared with the store: never modify them,
// clone first (proto.Clone).
package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// Table names.
const (
	TableApps         = "apps"
	TableEnvironments = "environments"
	TableReleases     = "releases"
	TableServers      = "servers"
	TableAgents       = "agents"
	TableAgentApps    = "agent_apps"
	TableDesired      = "desired"
	TableRollouts     = "rollouts"
	// TableHistory holds the history entries (rel.v1.HistoryEntry) in
	// buckets, up to 32 entries of one (app, agent) a row; see history.go.
	TableHistory = "history"
	// TableHistorySummaries holds what history retention kept of the
	// entries it folded: one row per (app, agent).
	TableHistorySummaries = "history_summaries"
	TableEvents           = "rollout_events"
	TableACLTokens        = "acl_tokens"
	TableJoinTokens       = "join_tokens"
	TableRevocations      = "agent_revocations"
	TableRequests         = "requests"
	tableIndex            = "index"
	tableMeta             = "meta"
)

// TableAudit holds the audit trail (rel.v1.AuditRecord), by seq. Rows
// are appended and never edited; only the audit retention pass
// (TrimAudit) removes them, oldest first and only those an archive
// covers.
const TableAudit = "audit"

// TableAuditRetention holds one row (rel.v1.AuditRetention): the
// archived mark and the anchor of the records retention removed.
const TableAuditRetention = "audit_retention"

// TableFreezes holds the freeze windows (change control), by name.
const TableFreezes = "freezes"

// TableDeployments holds one compact record per finished rollout
// (rel.v1.Deployment), kept far longer than rollouts for the management
// report; see deployments.go.
const TableDeployments = "deployments"

// TableArtifactTombstones holds the blobs artifact GC passes removed.
const TableArtifactTombstones = "artifact_tombstones"

// indexEntry is a row of the index table: the raft index of the latest write
// to a table. Blocking queries watch these rows.
type indexEntry struct {
	Key   string
	Value uint64
}

// metaEntry is a row of the meta table: cluster-wide facts such as its id.
type metaEntry struct {
	Key   string
	Value string
}

const metaClusterID = "cluster_id"

func schema() *memdb.DBSchema {
	sc := baseSchema()
	for name, t := range lifecycleTables() {
		sc.Tables[name] = t
	}
	addEventTables(sc)
	return sc
}

func baseSchema() *memdb.DBSchema {
	return &memdb.DBSchema{
		Tables: map[string]*memdb.TableSchema{
			TableApps: {
				Name: TableApps,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
				},
			},
			TableEnvironments: {
				Name: TableEnvironments,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
				},
			},
			TableReleases: {
				Name: TableReleases,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
						&memdb.StringFieldIndex{Field: "App"},
						&memdb.StringFieldIndex{Field: "Version"},
					}}},
					"app": {Name: "app", Indexer: &memdb.StringFieldIndex{Field: "App"}},
				},
			},
			TableServers: {
				Name: TableServers,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}},
				},
			},
			TableAgents: {
				Name: TableAgents,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}},
				},
			},
			TableAgentApps: {
				Name: TableAgentApps,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
						&memdb.StringFieldIndex{Field: "AgentId"},
						&memdb.StringFieldIndex{Field: "App"},
					}}},
					"app": {Name: "app", Indexer: &memdb.StringFieldIndex{Field: "App"}},
				},
			},
			TableDesired: {
				Name: TableDesired,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
						&memdb.StringFieldIndex{Field: "AgentId"},
						&memdb.StringFieldIndex{Field: "App"},
					}}},
					// Each agent's stream watches only its own rows.
					"agent": {Name: "agent", Indexer: &memdb.StringFieldIndex{Field: "AgentId"}},
				},
			},
			TableRollouts: {
				Name: TableRollouts,
				Indexes: map[string]*memdb.IndexSchema{
					"id":    {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}},
					"app":   {Name: "app", Indexer: &memdb.StringFieldIndex{Field: "App"}},
					"state": {Name: "state", Indexer: &memdb.StringFieldIndex{Field: "State"}},
				},
			},
			TableDeployments: {
				Name: TableDeployments,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "RolloutId"}},
					// Retention removes them oldest finish first, and the
					// report reads a period from it.
					"finished": {Name: "finished", Indexer: &memdb.IntFieldIndex{Field: "FinishedUnixNano"}},
				},
			},
			TableHistory: {
				Name: TableHistory,
				Indexes: map[string]*memdb.IndexSchema{
					// Rows are buckets of entries (historyBucket).
					"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
						&memdb.StringFieldIndex{Field: "App"},
						&memdb.StringFieldIndex{Field: "AgentId"},
						&memdb.UintFieldIndex{Field: "First"},
					}}},
				},
			},
			TableHistorySummaries: {
				Name: TableHistorySummaries,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
						&memdb.StringFieldIndex{Field: "App"},
						&memdb.StringFieldIndex{Field: "AgentId"},
					}}},
				},
			},
			TableEvents: {
				Name: TableEvents,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
						&memdb.StringFieldIndex{Field: "RolloutId"},
						&memdb.UintFieldIndex{Field: "Seq"},
					}}},
					// The events a raft entry wrote: the cluster event stream
					// maps them (AppendEvents) and metrics read those after
					// an index (RolloutEventsAfter), without scanning every
					// rollout's.
					"create": {Name: "create", Indexer: &memdb.UintFieldIndex{Field: "CreateIndex"}},
				},
			},
			TableACLTokens: {
				Name: TableACLTokens,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "AccessorId"}},
					// Requests are authenticated by looking the secret's hash up.
					"secret": {Name: "secret", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "SecretHash"}},
				},
			},
			TableFreezes: {
				Name: TableFreezes,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
				},
			},
			TableJoinTokens: {
				Name: TableJoinTokens,
				Indexes: map[string]*memdb.IndexSchema{
					"id":     {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "AccessorId"}},
					"secret": {Name: "secret", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "SecretHash"}},
				},
			},
			TableRevocations: {
				Name: TableRevocations,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "AgentId"}},
				},
			},
			TableArtifactTombstones: {
				Name: TableArtifactTombstones,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Digest"}},
				},
			},
			TableRequests: {
				Name: TableRequests,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}},
					// Order of recording: big-endian, so the oldest comes first.
					"seq": {Name: "seq", Unique: true, Indexer: &memdb.UintFieldIndex{Field: "Seq"}},
				},
			},
			TableAudit: {
				Name: TableAudit,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.UintFieldIndex{Field: "Seq"}},
					// The filters of ListAudit, each in seq order so that
					// a page starts right after the previous one's last
					// record. Records without an app (env, actor) are not
					// in that index.
					"actor": {Name: "actor", Unique: true, AllowMissing: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
						actorIDIndex{}, &memdb.UintFieldIndex{Field: "Seq"},
					}}},
					"app": {Name: "app", Unique: true, AllowMissing: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
						&memdb.StringFieldIndex{Field: "App"}, &memdb.UintFieldIndex{Field: "Seq"},
					}}},
					"env": {Name: "env", Unique: true, AllowMissing: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
						&memdb.StringFieldIndex{Field: "Env"}, &memdb.UintFieldIndex{Field: "Seq"},
					}}},
				},
			},
			TableAuditRetention: {
				Name: TableAuditRetention,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: singletonIndex{}},
				},
			},
			tableMeta: {
				Name: tableMeta,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
				},
			},
			tableIndex: {
				Name: tableIndex,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
				},
			},
		},
	}
}

func newDB() *memdb.MemDB {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		// The schema is a constant: failing to build it is a programming error.
		panic(fmt.Sprintf("state: invalid schema: %v", err))
	}
	return db
}
