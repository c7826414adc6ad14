package validate

import (
	"crypto/sha256"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// MaxTrimmedAudit bounds one audit retention pass, as
// MaxPrunedDeployments bounds the deployment records'.
const MaxTrimmedAudit = 5000

// AuditArchived checks a mark of the archived audit records: a record's
// seq (from 1) and its hash (sha256, 32 bytes).
func AuditArchived(seq uint64, hash []byte) error {
	if seq == 0 {
		return invalid("audit_archived names record 0: give the seq of the archive's last record (from 1)")
	}
	if len(hash) != sha256.Size {
		return invalid("audit_archived's hash is %d bytes: want the %d bytes of the archive's last record's sha256", len(hash), sha256.Size)
	}
	return nil
}

// auditCommand validates the audit trail's retention commands; ok is
// false for any other kind.
func auditCommand(cmd *relv1.Command) (ok bool, err error) {
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_AuditArchived:
		return true, AuditArchived(k.AuditArchived.GetSeq(), k.AuditArchived.GetHash())
	case *relv1.Command_TrimAudit:
		c := k.TrimAudit
		if n := c.GetMaxRecords(); n == 0 || n > MaxTrimmedAudit {
			return true, invalid("an audit retention pass removes 1 to %d records, not %d", MaxTrimmedAudit, n)
		}
		return true, positive("trim_audit cutoff", c.GetCutoffUnixNano())
	}
	return false, nil
}
