package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Webhook tables: the webhooks (by name), with their delivery cursor and
// latest deliveries, and the events each gave up on (by webhook and seq).
const (
	TableWebhooks           = "webhooks"
	TableWebhookDeadLetters = "webhook_dead_letters"
)

// MaxRecentDeliveries is how many of its latest deliveries a webhook row
// keeps for 'relctl webhook deliveries'.
const MaxRecentDeliveries = 50

func addWebhookTables(sc *memdb.DBSchema) {
	sc.Tables[TableWebhooks] = &memdb.TableSchema{
		Name: TableWebhooks,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
		},
	}
	sc.Tables[TableWebhookDeadLetters] = &memdb.TableSchema{
		Name: TableWebhookDeadLetters,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.StringFieldIndex{Field: "Webhook"}, &memdb.UintFieldIndex{Field: "Seq"},
			}}},
		},
	}
}

// CreateWebhook stores a new webhook, refused (AlreadyExists) when the
// name is taken. Its cursor starts at the newest event: a webhook
// delivers what happens from its creation on.
func (s *Store) CreateWebhook(index uint64, wh *relv1.Webhook) error {
	txn := s.writeTxn()
	defer txn.Abort()
	if raw, err := txn.First(TableWebhooks, "id", wh.GetName()); err != nil {
		return fmt.Errorf("state: lookup webhook: %w", err)
	} else if raw != nil {
		return newError(ErrAlreadyExists, fmt.Sprintf("webhook %q already exists: delete it first ('relctl webhook delete %s') or pick another name", wh.GetName(), wh.GetName()))
	}
	row := proto.Clone(wh).(*relv1.Webhook)
	row.DeliveredSeq, row.Delivered, row.DeadLettered, row.FailedAttempts, row.Recent, row.HasSecret = 0, 0, 0, 0, nil, false
	if last, err := txn.Last(TableClusterEvents, "id"); err != nil {
		return fmt.Errorf("state: last event: %w", err)
	} else if last != nil {
		row.DeliveredSeq = last.(*relv1.Event).GetSeq()
	}
	row.CreateIndex, row.ModifyIndex = index, index
	if err := txn.Insert(TableWebhooks, row); err != nil {
		return fmt.Errorf("state: insert webhook: %w", err)
	}
	if err := setIndex(txn, TableWebhooks, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// DeleteWebhook removes a webhook and its dead letters.
func (s *Store) DeleteWebhook(index uint64, name string) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableWebhooks, "id", name)
	if err != nil {
		return fmt.Errorf("state: lookup webhook: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("webhook %q not found: 'relctl webhook list' shows them", name))
	}
	if err := txn.Delete(TableWebhooks, raw); err != nil {
		return fmt.Errorf("state: delete webhook: %w", err)
	}
	// The prefix index matches longer names too ("a" and "ab"): delete
	// only this webhook's.
	it, err := txn.Get(TableWebhookDeadLetters, "id_prefix", name)
	if err != nil {
		return fmt.Errorf("state: dead letters: %w", err)
	}
	var gone []any
	for dl := it.Next(); dl != nil; dl = it.Next() {
		if dl.(*relv1.WebhookDeadLetter).GetWebhook() == name {
			gone = append(gone, dl)
		}
	}
	for _, dl := range gone {
		if err := txn.Delete(TableWebhookDeadLetters, dl); err != nil {
			return fmt.Errorf("state: delete dead letter: %w", err)
		}
	}
	if err := setIndex(txn, TableWebhooks, index); err != nil {
		return err
	}
	if err := setIndex(txn, TableWebhookDeadLetters, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// WebhookProgress records a leader's deliveries (see rel.v1.WebhookProgress).
// It is refused (Conflict) for a webhook deleted, or deleted and made
// again, since the leader read it; the cursor only moves forward.
func (s *Store) WebhookProgress(index uint64, p *relv1.WebhookProgress) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableWebhooks, "id", p.GetName())
	if err != nil {
		return fmt.Errorf("state: lookup webhook: %w", err)
	}
	if raw == nil || raw.(*relv1.Webhook).GetCreateIndex() != p.GetCreateIndex() {
		return newError(ErrConflict, fmt.Sprintf("webhook %q (created at index %d) is gone", p.GetName(), p.GetCreateIndex()))
	}
	row := proto.Clone(raw.(*relv1.Webhook)).(*relv1.Webhook)
	if p.GetDeliveredSeq() > row.GetDeliveredSeq() {
		row.DeliveredSeq = p.GetDeliveredSeq()
	}
	for _, d := range p.GetDeliveries() {
		if d.GetOutcome() != "dead_letter" {
			row.Delivered++
		}
	}
	row.DeadLettered += uint64(len(p.GetDeadLetters()))
	row.FailedAttempts += p.GetFailedAttempts()
	row.Recent = append(row.Recent, p.GetDeliveries()...)
	if n := len(row.Recent); n > MaxRecentDeliveries {
		row.Recent = row.Recent[n-MaxRecentDeliveries:]
	}
	row.ModifyIndex = index
	if err := txn.Insert(TableWebhooks, row); err != nil {
		return fmt.Errorf("state: update webhook: %w", err)
	}
	for _, dl := range p.GetDeadLetters() {
		r := proto.Clone(dl).(*relv1.WebhookDeadLetter)
		r.Webhook, r.Redeliver = p.GetName(), false
		r.CreateIndex, r.ModifyIndex = index, index
		if err := txn.Insert(TableWebhookDeadLetters, r); err != nil {
			return fmt.Errorf("state: insert dead letter: %w", err)
		}
	}
	for _, seq := range p.GetRedelivered() {
		if _, err := txn.DeleteAll(TableWebhookDeadLetters, "id", p.GetName(), seq); err != nil {
			return fmt.Errorf("state: delete dead letter: %w", err)
		}
	}
	if err := setIndex(txn, TableWebhooks, index); err != nil {
		return err
	}
	if err := setIndex(txn, TableWebhookDeadLetters, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// RedeliverWebhook marks a dead letter for the leader to deliver again.
func (s *Store) RedeliverWebhook(index uint64, name string, seq uint64) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableWebhookDeadLetters, "id", name, seq)
	if err != nil {
		return fmt.Errorf("state: lookup dead letter: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("webhook %q has no dead letter for event %d: 'relctl webhook dead-letters %s' lists them", name, seq, name))
	}
	r := proto.Clone(raw.(*relv1.WebhookDeadLetter)).(*relv1.WebhookDeadLetter)
	r.Redeliver, r.ModifyIndex = true, index
	if err := txn.Insert(TableWebhookDeadLetters, r); err != nil {
		return fmt.Errorf("state: update dead letter: %w", err)
	}
	if err := setIndex(txn, TableWebhookDeadLetters, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// Webhooks lists the webhooks by name, with the table's index. Rows hold
// their secrets: the API strips them.
func (s *Store) Webhooks(ws memdb.WatchSet) ([]*relv1.Webhook, uint64, error) {
	txn := s.readTxn()
	idx := tableIndexOf(txn, ws, TableWebhooks)
	it, err := txn.Get(TableWebhooks, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: webhooks: %w", err)
	}
	var out []*relv1.Webhook
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.Webhook))
	}
	return out, idx, nil
}

// Webhook returns one webhook or ErrNotFound.
func (s *Store) Webhook(ws memdb.WatchSet, name string) (*relv1.Webhook, error) {
	txn := s.readTxn()
	ch, raw, err := txn.FirstWatch(TableWebhooks, "id", name)
	if err != nil {
		return nil, fmt.Errorf("state: get webhook: %w", err)
	}
	ws.Add(ch)
	if raw == nil {
		return nil, newError(ErrNotFound, fmt.Sprintf("webhook %q not found: 'relctl webhook list' shows them", name))
	}
	return raw.(*relv1.Webhook), nil
}

// DeadLetters lists a webhook's dead letters by seq.
func (s *Store) DeadLetters(ws memdb.WatchSet, name string) ([]*relv1.WebhookDeadLetter, error) {
	txn := s.readTxn()
	tableIndexOf(txn, ws, TableWebhookDeadLetters)
	it, err := txn.Get(TableWebhookDeadLetters, "id_prefix", name)
	if err != nil {
		return nil, fmt.Errorf("state: dead letters: %w", err)
	}
	var out []*relv1.WebhookDeadLetter
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if dl := raw.(*relv1.WebhookDeadLetter); dl.GetWebhook() == name {
			out = append(out, dl)
		}
	}
	return out, nil
}
