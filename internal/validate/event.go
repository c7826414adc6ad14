package validate

import relv1 "github.com/relhq/rel/proto/rel/v1"

// MaxTrimmedEvents bounds one event retention pass (a delete of that many
// rows applies in a few milliseconds on every replica).
const MaxTrimmedEvents = 5000

// eventCommand validates the event stream's commands; ok is false for
// any other kind.
func eventCommand(cmd *relv1.Command) (ok bool, err error) {
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_TrimEvents:
		c := k.TrimEvents
		if n := c.GetMaxEvents(); n == 0 || n > MaxTrimmedEvents {
			return true, invalid("an event retention pass removes 1 to %d events, not %d", MaxTrimmedEvents, n)
		}
		if c.GetBeforeSeq() < 2 {
			return true, invalid("trim_events before seq %d removes nothing: give a seq above 1", c.GetBeforeSeq())
		}
		return true, positive("trim_events cutoff", c.GetCutoffUnixNano())
	}
	return false, nil
}
