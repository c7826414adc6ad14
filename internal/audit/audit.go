// Package audit is the audit trail's hash chain and signed checkpoints:
// the canonical encoding of a record that its hash covers, the check of a
// chain (which relctl runs client-side, trusting nothing the server says),
// and the ed25519 "audit key" a server signs the chain's head with.
//
// It reads no clock and draws no random numbers outside key generation:
// the FSM computes hashes with it.
package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/relhq/rel/internal/pki"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Results of a record.
const (
	Applied = "applied"
	Refused = "refused"
)

// File names of the audit key pair, written beside the CA.
const (
	KeyFileName    = "audit.key"
	PubKeyFileName = "audit.pub"
)

// ZeroHash is the prev_hash of the first record: 32 zero bytes.
var ZeroHash = make([]byte, sha256.Size)

const (
	recordMagic     = "rel-audit-v1\n"
	checkpointMagic = "rel-audit-checkpoint-v1\n"
)

func putU64(b *bytes.Buffer, v uint64) {
	var x [8]byte
	binary.BigEndian.PutUint64(x[:], v)
	b.Write(x[:])
}

func putBytes(b *bytes.Buffer, v []byte) {
	var x [4]byte
	binary.BigEndian.PutUint32(x[:], uint32(len(v)))
	b.Write(x[:])
	b.Write(v)
}

// Encode is the canonical encoding of every field of rec but hash, in a
// fixed length-prefixed layout (documented on rel.v1.AuditRecord): the
// bytes the record's hash is the sha256 of. It does not depend on protobuf
// encoding, so a verifier in any language can recompute it.
func Encode(rec *relv1.AuditRecord) []byte {
	var b bytes.Buffer
	b.WriteString(recordMagic)
	putU64(&b, rec.GetSeq())
	putU64(&b, rec.GetIndex())
	putU64(&b, uint64(rec.GetTimeUnixNano()))
	a := rec.GetActor()
	for _, s := range []string{a.GetKind(), a.GetId(), a.GetName(), rec.GetAction(), rec.GetResult(),
		rec.GetErrorKind(), rec.GetMessage(), rec.GetObject(), rec.GetApp(), rec.GetEnv(),
		rec.GetDigest(), rec.GetReason(), rec.GetRequestId()} {
		putBytes(&b, []byte(s))
	}
	putBytes(&b, rec.GetPrevHash())
	return b.Bytes()
}

// Hash is the sha256 of Encode(rec).
func Hash(rec *relv1.AuditRecord) []byte {
	h := sha256.Sum256(Encode(rec))
	return h[:]
}

// Chain checks records one at a time, in seq order, as a client pages
// through them: every hash must match its record's contents and every
// prev_hash the previous record's hash, and seqs must follow each other
// from 1.
type Chain struct {
	// Seq and Hash are the last record checked (0 and ZeroHash before the
	// first).
	Seq  uint64
	Hash []byte
}

// NewChain starts a check at the chain's beginning.
func NewChain() *Chain { return &Chain{Hash: ZeroHash} }

// NewChainAfter starts a check after record seq, whose hash is hash,
// checked elsewhere or not at all: retention's anchor (the last record
// removed from the cluster, which an archive holds) or the last record of
// the archive before. NewChainAfter(0, ZeroHash) is NewChain().
func NewChainAfter(seq uint64, hash []byte) *Chain {
	if seq == 0 {
		return NewChain()
	}
	return &Chain{Seq: seq, Hash: append([]byte(nil), hash...)}
}

// Add checks the next record. Its error names the record's seq and what
// is wrong with it.
func (c *Chain) Add(rec *relv1.AuditRecord) error {
	seq := rec.GetSeq()
	if seq != c.Seq+1 {
		if c.Seq == 0 {
			return fmt.Errorf("record %d: the chain does not start at record 1: records 1 to %d are missing", seq, seq-1)
		}
		return fmt.Errorf("record %d follows record %d: records are missing or repeated", seq, c.Seq)
	}
	if !bytes.Equal(Hash(rec), rec.GetHash()) {
		return fmt.Errorf("record %d: hash does not match its contents", seq)
	}
	if !bytes.Equal(rec.GetPrevHash(), c.Hash) {
		if seq == 1 {
			return fmt.Errorf("record 1: prev_hash is not the chain's start (32 zero bytes)")
		}
		return fmt.Errorf("record %d: prev_hash is not record %d's hash", seq, c.Seq)
	}
	c.Seq, c.Hash = seq, rec.GetHash()
	return nil
}

// CheckpointMessage is what a checkpoint's signature signs: the magic
// "rel-audit-checkpoint-v1\n", the cluster (4-byte length and bytes), seq
// (8 bytes big-endian), the head hash (4-byte length and bytes) and the
// time (8 bytes big-endian).
func CheckpointMessage(cp *relv1.SignedAuditHead) []byte {
	var b bytes.Buffer
	b.WriteString(checkpointMagic)
	putBytes(&b, []byte(cp.GetCluster()))
	putU64(&b, cp.GetSeq())
	putBytes(&b, cp.GetHash())
	putU64(&b, uint64(cp.GetTimeUnixNano()))
	return b.Bytes()
}

// Sign fills in cp's public key and signature.
func Sign(cp *relv1.SignedAuditHead, key ed25519.PrivateKey) {
	cp.PublicKey = append([]byte(nil), key.Public().(ed25519.PublicKey)...)
	cp.Signature = ed25519.Sign(key, CheckpointMessage(cp))
}

// VerifyCheckpoint checks cp's signature against pub, the audit public key
// the verifier trusts (not the one the checkpoint carries).
func VerifyCheckpoint(cp *relv1.SignedAuditHead, pub ed25519.PublicKey) error {
	if len(cp.GetPublicKey()) != 0 && !bytes.Equal(cp.GetPublicKey(), pub) {
		return errors.New("the checkpoint was signed with another key than the public key given")
	}
	if !ed25519.Verify(pub, CheckpointMessage(cp), cp.GetSignature()) {
		return errors.New("the checkpoint's signature is not valid for the public key given: the checkpoint was altered or signed by another key")
	}
	return nil
}

// HexHash is how hashes are shown.
func HexHash(h []byte) string { return hex.EncodeToString(h) }

// WriteKeyPair makes a new audit key pair: dir/audit.key (PKCS#8 PEM, mode
// 0600) and dir/audit.pub (PKIX PEM, 0644). It refuses to replace either.
func WriteKeyPair(dir string) (keyFile, pubFile string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	keyPEM, err := pki.EncodeKey(priv)
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", "", err
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	keyFile, pubFile = filepath.Join(dir, KeyFileName), filepath.Join(dir, PubKeyFileName)
	if err := pki.WriteFile(keyFile, keyPEM, 0o600, true); err != nil {
		return "", "", err
	}
	if err := pki.WriteFile(pubFile, pubPEM, 0o644, true); err != nil {
		return "", "", err
	}
	return keyFile, pubFile, nil
}

// ReadKeyFile reads an audit private key, refusing a file group or others
// may read (as every key of the cluster).
func ReadKeyFile(path string) (ed25519.PrivateKey, error) {
	k, err := pki.ReadKeyFile(path)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("audit key %s is a %T, not an ed25519 key: make one with 'relctl tls ca create' (audit.key)", path, k)
	}
	return ek, nil
}

// ReadPublicKeyFile reads an audit public key (PKIX PEM, as audit.pub).
func ReadPublicKeyFile(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("public key file %s holds no PEM PUBLIC KEY: give the audit.pub written beside the CA", path)
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key file %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key file %s holds a %T, not an ed25519 key", path, k)
	}
	return ek, nil
}
