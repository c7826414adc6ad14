package state

import (
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// stepRow is the row a step makes of cur: r itself when it is a whole row
// (steps written before deltas), else r merged into cur as a delta.
func stepRow(cur, r *relv1.Rollout, hostsDelta bool) (*relv1.Rollout, error) {
	if !hostsDelta {
		return proto.Clone(r).(*relv1.Rollout), nil
	}
	row, err := rollout.MergeDelta(cur, r)
	if err != nil {
		return nil, refusal(err)
	}
	return row, nil
}
