package state

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// metaACLBootstrap records that the first management token was made.
const metaACLBootstrap = "acl_bootstrap"

// maxUsedBy bounds the node ids a join token remembers.
const maxUsedBy = 100

// ACLBootstrap stores the first management token, once per cluster.
func (s *Store) ACLBootstrap(index uint64, tok *relv1.ACLToken) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(tableMeta, "id", metaACLBootstrap)
	if err != nil {
		return fmt.Errorf("state: read acl bootstrap: %w", err)
	}
	if raw != nil {
		return newError(ErrConflict, "ACLs are already bootstrapped: ask an admin for a token (relctl acl token create), or use an admin client certificate made with the CA key")
	}
	if err := txn.Insert(tableMeta, &metaEntry{Key: metaACLBootstrap, Value: fmt.Sprint(index)}); err != nil {
		return fmt.Errorf("state: acl bootstrap: %w", err)
	}
	if err := insertACLToken(txn, index, tok); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// ACLBootstrapped reports whether the first management token was made.
func (s *Store) ACLBootstrapped() bool {
	raw, err := s.readTxn().First(tableMeta, "id", metaACLBootstrap)
	return err == nil && raw != nil
}

// CreateACLToken stores a new token.
func (s *Store) CreateACLToken(index uint64, tok *relv1.ACLToken) error {
	txn := s.writeTxn()
	defer txn.Abort()
	if err := insertACLToken(txn, index, tok); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

func insertACLToken(txn *memdb.Txn, index uint64, tok *relv1.ACLToken) error {
	for _, idx := range []struct{ name, val string }{{"id", tok.GetAccessorId()}, {"secret", tok.GetSecretHash()}} {
		existing, err := txn.First(TableACLTokens, idx.name, idx.val)
		if err != nil {
			return fmt.Errorf("state: lookup token: %w", err)
		}
		if existing != nil {
			return newError(ErrAlreadyExists, fmt.Sprintf("token %s already exists", tok.GetAccessorId()))
		}
	}
	row := proto.Clone(tok).(*relv1.ACLToken)
	row.CreateIndex, row.ModifyIndex = index, index
	if err := txn.Insert(TableACLTokens, row); err != nil {
		return fmt.Errorf("state: insert token: %w", err)
	}
	return setIndex(txn, TableACLTokens, index)
}

// DeleteACLToken removes a token: it stops working on every server as soon
// as they apply this entry.
func (s *Store) DeleteACLToken(index uint64, accessor string) error {
	txn := s.writeTxn()
	defer txn.Abort()
	existing, err := txn.First(TableACLTokens, "id", accessor)
	if err != nil {
		return fmt.Errorf("state: lookup token: %w", err)
	}
	if existing == nil {
		return newError(ErrNotFound, fmt.Sprintf("token %q not found: 'relctl acl token list' shows the accessors", accessor))
	}
	if err := txn.Delete(TableACLTokens, existing); err != nil {
		return fmt.Errorf("state: delete token: %w", err)
	}
	if err := setIndex(txn, TableACLTokens, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// ACLTokenBySecret finds the token whose secret hashes to hash.
func (s *Store) ACLTokenBySecret(hash string) (*relv1.ACLToken, error) {
	raw, err := s.readTxn().First(TableACLTokens, "secret", hash)
	if err != nil {
		return nil, fmt.Errorf("state: lookup token: %w", err)
	}
	if raw == nil {
		return nil, newError(ErrNotFound, "token not found")
	}
	return raw.(*relv1.ACLToken), nil
}

// ACLTokens lists tokens by accessor.
func (s *Store) ACLTokens(ws memdb.WatchSet) ([]*relv1.ACLToken, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableACLTokens, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: list tokens: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.ACLToken
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.ACLToken))
	}
	return out, tableIndexOf(txn, ws, TableACLTokens), nil
}

// CreateJoinToken stores a new join token.
func (s *Store) CreateJoinToken(index uint64, tok *relv1.JoinToken) error {
	txn := s.writeTxn()
	defer txn.Abort()
	for _, idx := range []struct{ name, val string }{{"id", tok.GetAccessorId()}, {"secret", tok.GetSecretHash()}} {
		existing, err := txn.First(TableJoinTokens, idx.name, idx.val)
		if err != nil {
			return fmt.Errorf("state: lookup join token: %w", err)
		}
		if existing != nil {
			return newError(ErrAlreadyExists, fmt.Sprintf("join token %s already exists", tok.GetAccessorId()))
		}
	}
	row := proto.Clone(tok).(*relv1.JoinToken)
	row.CreateIndex, row.ModifyIndex = index, index
	row.UsesLeft = row.GetUses()
	if err := txn.Insert(TableJoinTokens, row); err != nil {
		return fmt.Errorf("state: insert join token: %w", err)
	}
	if err := setIndex(txn, TableJoinTokens, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// UseJoinToken spends one use of the join token whose secret hashes to hash
// for agentID at time at. It refuses an unknown, expired or used-up token,
// and a token made before agentID was revoked: revoking an agent must not
// be undone by a token that was already around.
func (s *Store) UseJoinToken(index uint64, hash, agentID string, at int64) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableJoinTokens, "secret", hash)
	if err != nil {
		return fmt.Errorf("state: lookup join token: %w", err)
	}
	if raw == nil {
		return newError(ErrUnauthenticated, "unknown join token: ask an operator for one ('relctl agent token create')")
	}
	tok := raw.(*relv1.JoinToken)
	if exp := tok.GetExpiresUnixNano(); exp != 0 && at >= exp {
		return newError(ErrUnauthenticated, fmt.Sprintf("join token %s expired at %s: ask an operator for a new one ('relctl agent token create')", tok.GetAccessorId(), time.Unix(0, exp).UTC().Format(time.RFC3339)))
	}
	if ids := tok.GetNodeIds(); len(ids) > 0 && !slices.Contains(ids, agentID) {
		return newError(ErrPermissionDenied, fmt.Sprintf("join token %s is for %s, not for node %q", tok.GetAccessorId(), strings.Join(ids, ", "), agentID))
	}
	if tok.GetUsesLeft() == 0 {
		return newError(ErrUnauthenticated, fmt.Sprintf("join token %s has been used up (%d of %d uses): ask an operator for a new one ('relctl agent token create')", tok.GetAccessorId(), tok.GetUses(), tok.GetUses()))
	}
	if rev, err := txn.First(TableRevocations, "id", agentID); err != nil {
		return fmt.Errorf("state: lookup revocation: %w", err)
	} else if rev != nil && rev.(*relv1.AgentRevocation).GetRevokedUnixNano() >= tok.GetCreatedUnixNano() {
		return newError(ErrPermissionDenied, fmt.Sprintf("agent %q was revoked after join token %s was made: enrolling it again needs a token made since ('relctl agent token create')", agentID, tok.GetAccessorId()))
	}
	row := proto.Clone(tok).(*relv1.JoinToken)
	row.UsesLeft--
	row.UsedBy = append(row.UsedBy, agentID)
	if len(row.UsedBy) > maxUsedBy {
		row.UsedBy = row.UsedBy[len(row.UsedBy)-maxUsedBy:]
	}
	row.ModifyIndex = index
	if err := txn.Insert(TableJoinTokens, row); err != nil {
		return fmt.Errorf("state: update join token: %w", err)
	}
	if err := setIndex(txn, TableJoinTokens, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// JoinTokenBySecret finds the join token whose secret hashes to hash.
func (s *Store) JoinTokenBySecret(hash string) (*relv1.JoinToken, error) {
	raw, err := s.readTxn().First(TableJoinTokens, "secret", hash)
	if err != nil {
		return nil, fmt.Errorf("state: lookup join token: %w", err)
	}
	if raw == nil {
		return nil, newError(ErrNotFound, "join token not found")
	}
	return raw.(*relv1.JoinToken), nil
}

// DeleteJoinToken removes a join token.
func (s *Store) DeleteJoinToken(index uint64, accessor string) error {
	txn := s.writeTxn()
	defer txn.Abort()
	existing, err := txn.First(TableJoinTokens, "id", accessor)
	if err != nil {
		return fmt.Errorf("state: lookup join token: %w", err)
	}
	if existing == nil {
		return newError(ErrNotFound, fmt.Sprintf("join token %q not found: 'relctl agent token list' shows them", accessor))
	}
	if err := txn.Delete(TableJoinTokens, existing); err != nil {
		return fmt.Errorf("state: delete join token: %w", err)
	}
	if err := setIndex(txn, TableJoinTokens, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// JoinTokens lists join tokens by accessor.
func (s *Store) JoinTokens(ws memdb.WatchSet) ([]*relv1.JoinToken, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableJoinTokens, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: list join tokens: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.JoinToken
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.JoinToken))
	}
	return out, tableIndexOf(txn, ws, TableJoinTokens), nil
}

// RevokeAgent records a revocation (a later one replaces an earlier one).
func (s *Store) RevokeAgent(index uint64, rev *relv1.AgentRevocation) error {
	txn := s.writeTxn()
	defer txn.Abort()
	row := proto.Clone(rev).(*relv1.AgentRevocation)
	row.CreateIndex, row.ModifyIndex = index, index
	if old, err := txn.First(TableRevocations, "id", rev.GetAgentId()); err != nil {
		return fmt.Errorf("state: lookup revocation: %w", err)
	} else if old != nil {
		row.CreateIndex = old.(*relv1.AgentRevocation).GetCreateIndex()
	}
	if err := txn.Insert(TableRevocations, row); err != nil {
		return fmt.Errorf("state: insert revocation: %w", err)
	}
	if err := setIndex(txn, TableRevocations, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// HasServers reports whether any server is registered: until the first
// registration (a brand-new cluster, or a node that has not received the
// log yet) there is no member list to check peers against.
func (s *Store) HasServers() bool {
	raw, err := s.readTxn().First(TableServers, "id")
	return err == nil && raw != nil
}

// Revocation is the agent's revocation, or nil.
func (s *Store) Revocation(agentID string) *relv1.AgentRevocation {
	raw, err := s.readTxn().First(TableRevocations, "id", agentID)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*relv1.AgentRevocation)
}

// Revocations lists revocations by agent id, watching for new ones.
func (s *Store) Revocations(ws memdb.WatchSet) ([]*relv1.AgentRevocation, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableRevocations, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: list revocations: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.AgentRevocation
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.AgentRevocation))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetAgentId() < out[j].GetAgentId() })
	return out, tableIndexOf(txn, ws, TableRevocations), nil
}
