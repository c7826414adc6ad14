package server

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestAuditBatcherBound: past maxAuditQueue, refusals are counted, not
// queued, and the count goes out with the next entry, once.
func TestAuditBatcherBound(t *testing.T) {
	b := newAuditBatcher(&Server{})
	for i := 0; i < maxAuditQueue+7; i++ {
		b.add(&relv1.AuditRefusal{TimeUnixNano: int64(i + 1)})
	}
	batch, dropped := b.take()
	if len(batch) != validate.MaxAuditRefusals || dropped != 7 {
		t.Fatalf("first entry: %d refusals, %d dropped; want %d and 7", len(batch), dropped, validate.MaxAuditRefusals)
	}
	if batch[0].GetTimeUnixNano() != 1 {
		t.Errorf("the first entry starts with refusal %d, want the oldest", batch[0].GetTimeUnixNano())
	}
	total := len(batch)
	for {
		batch, dropped = b.take()
		if len(batch) == 0 {
			break
		}
		if dropped != 0 {
			t.Errorf("drops counted twice: %d", dropped)
		}
		total += len(batch)
	}
	if total != maxAuditQueue {
		t.Errorf("%d refusals taken, want the %d queued", total, maxAuditQueue)
	}
}

// TestAuditedMethods: reads and the servers' and agents' own traffic
// record no refusal; the writes people make do.
func TestAuditedMethods(t *testing.T) {
	for method, want := range map[string]bool{
		relv1.ControlService_CreateApp_FullMethodName:       true,
		relv1.ControlService_StartRollout_FullMethodName:    true,
		relv1.ACLService_CreateToken_FullMethodName:         true,
		relv1.ArtifactService_Upload_FullMethodName:         true,
		relv1.EnrollService_Enroll_FullMethodName:           true,
		relv1.ControlService_ListApps_FullMethodName:        false,
		relv1.ACLService_ListTokens_FullMethodName:          false,
		relv1.AgentService_Connect_FullMethodName:           false,
		relv1.ClusterService_Apply_FullMethodName:           false,
		relv1.AuditService_ListAudit_FullMethodName:         false,
		relv1.AuditService_AuditCheckpoint_FullMethodName:   false,
		"/rel.v1.ControlService/NoSuchMethod":               false,
		relv1.ControlService_RollbackRollout_FullMethodName: true,
	} {
		if got := auditedMethod(method); got != want {
			t.Errorf("auditedMethod(%s) = %v, want %v", method, got, want)
		}
	}
}

// TestAuditCheckpointWithoutKey: a server without --audit-key-file says
// what to do.
func TestAuditCheckpointWithoutKey(t *testing.T) {
	a := &auditService{s: &Server{cfg: Config{NodeID: "s9"}}}
	_, err := a.AuditCheckpoint(context.Background(), &relv1.AuditCheckpointRequest{})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !contains(st.Message(), "--audit-key-file") {
		t.Fatalf("got %v, want FailedPrecondition naming --audit-key-file", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestAuditTextValidUTF8: a clipped message stays valid UTF-8, or the
// whole batch would fail to encode.
func TestAuditTextValidUTF8(t *testing.T) {
	for _, s := range []string{strings.Repeat("é", 10), "bad \xff byte", "plain"} {
		for n := 1; n < 12; n++ {
			if got := auditText(s, n); !utf8.ValidString(got) {
				t.Errorf("auditText(%q, %d) = %q: not valid UTF-8", s, n, got)
			}
		}
	}
}
