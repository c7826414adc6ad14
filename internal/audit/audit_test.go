package audit

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func chainOf(n int) []*relv1.AuditRecord {
	var out []*relv1.AuditRecord
	prev := ZeroHash
	for i := 1; i <= n; i++ {
		r := &relv1.AuditRecord{Seq: uint64(i), Index: uint64(10 + i), TimeUnixNano: int64(i) * 1000, Actor: &relv1.Actor{Kind: "token", Id: "a1", Name: "alice"},
			Action: "create_app", Result: Applied, App: "web", PrevHash: prev}
		r.Hash = Hash(r)
		prev = r.Hash
		out = append(out, r)
	}
	return out
}

func check(recs []*relv1.AuditRecord) error {
	c := NewChain()
	for _, r := range recs {
		if err := c.Add(r); err != nil {
			return err
		}
	}
	return nil
}

func TestChain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(recs []*relv1.AuditRecord) []*relv1.AuditRecord
		want   string
	}{
		{"intact", func(r []*relv1.AuditRecord) []*relv1.AuditRecord { return r }, ""},
		{"a field changed", func(r []*relv1.AuditRecord) []*relv1.AuditRecord { r[2].Reason = "nothing to see"; return r }, "record 3: hash does not match its contents"},
		{"the actor changed", func(r []*relv1.AuditRecord) []*relv1.AuditRecord { r[1].Actor.Id = "mallory"; return r }, "record 2: hash does not match its contents"},
		{"rehashed after a change", func(r []*relv1.AuditRecord) []*relv1.AuditRecord {
			r[2].Reason = "x"
			r[2].Hash = Hash(r[2])
			return r
		}, "record 4: prev_hash is not record 3's hash"},
		{"a record removed", func(r []*relv1.AuditRecord) []*relv1.AuditRecord { return append(r[:2], r[3:]...) }, "record 4 follows record 2"},
		{"the first removed", func(r []*relv1.AuditRecord) []*relv1.AuditRecord { return r[1:] }, "record 2: the chain does not start at record 1"},
		{"a bad start", func(r []*relv1.AuditRecord) []*relv1.AuditRecord {
			r[0].PrevHash = []byte("x")
			r[0].Hash = Hash(r[0])
			return r
		}, "record 1: prev_hash is not the chain's start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check(tc.change(chainOf(5)))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestEncodeCoversEveryField: changing any field but hash changes the
// hash, so a field added to AuditRecord without its place in Encode
// fails here.
func TestEncodeCoversEveryField(t *testing.T) {
	base := chainOf(1)[0]
	fields := base.ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Name() == "hash" {
			continue
		}
		r := proto.Clone(base).(*relv1.AuditRecord)
		m := r.ProtoReflect()
		switch {
		case fd.Message() != nil:
			r.Actor.Name = "someone else"
		case fd.Kind().String() == "string":
			m.Set(fd, protoString(m.Get(fd).String()+"x"))
		case fd.Kind().String() == "bytes":
			m.Set(fd, protoBytes(append([]byte{1}, m.Get(fd).Bytes()...)))
		case fd.Kind().String() == "uint64":
			m.Set(fd, protoUint(m.Get(fd).Uint()+1))
		case fd.Kind().String() == "int64":
			m.Set(fd, protoInt(m.Get(fd).Int()+1))
		default:
			t.Fatalf("field %s of kind %s: teach this test (and Encode) about it", fd.Name(), fd.Kind())
		}
		if string(Hash(r)) == string(base.GetHash()) {
			t.Errorf("changing %s leaves the hash as it was: Encode leaves it out", fd.Name())
		}
	}
}

func TestCheckpoint(t *testing.T) {
	dir := t.TempDir()
	keyFile, pubFile, err := WriteKeyPair(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := WriteKeyPair(dir); err == nil {
		t.Fatal("a second key pair replaced the first")
	}
	key, err := ReadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ReadPublicKeyFile(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	cp := &relv1.SignedAuditHead{Cluster: "cl-1", Seq: 5, Hash: chainOf(5)[4].GetHash(), TimeUnixNano: 99}
	Sign(cp, key)
	if err := VerifyCheckpoint(cp, pub); err != nil {
		t.Fatal(err)
	}
	bad := proto.Clone(cp).(*relv1.SignedAuditHead)
	bad.Seq = 4
	if err := VerifyCheckpoint(bad, pub); err == nil {
		t.Error("a checkpoint with another seq verified")
	}
	_, other, _ := ed25519.GenerateKey(nil)
	if err := VerifyCheckpoint(cp, other.Public().(ed25519.PublicKey)); err == nil {
		t.Error("a checkpoint verified with another key")
	}
	if err := os.Chmod(keyFile, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(keyFile); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a group-readable key: %v, want a refusal saying to chmod", err)
	}
	if _, err := ReadPublicKeyFile(filepath.Join(dir, "nope.pub")); err == nil {
		t.Error("a missing public key file was read")
	}
}

func protoString(s string) protoreflect.Value { return protoreflect.ValueOfString(s) }
func protoBytes(b []byte) protoreflect.Value  { return protoreflect.ValueOfBytes(b) }
func protoUint(v uint64) protoreflect.Value   { return protoreflect.ValueOfUint64(v) }
func protoInt(v int64) protoreflect.Value     { return protoreflect.ValueOfInt64(v) }
