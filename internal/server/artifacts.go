package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/relhq/rel/internal/artifact"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// artifactService implements relv1.ArtifactService.
type artifactService struct {
	relv1.UnimplementedArtifactServiceServer
	s *Server
}

// chunkReader turns the upload stream's chunks into an io.Reader.
type chunkReader struct {
	stream relv1.ArtifactService_UploadServer
	buf    []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		m, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF at the end of the upload
		}
		if m.GetHeader() != nil {
			return 0, status.Error(codes.InvalidArgument, "a second upload header: send one header, then chunks")
		}
		r.buf = m.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// uploadRetryDelay is what a refusal past --max-concurrent-uploads tells
// clients to wait before trying again (relctl adds jitter).
const uploadRetryDelay = time.Second

// errUploadsBusy refuses an upload past --max-concurrent-uploads. Its
// RetryInfo detail tells clients it is worth trying again, which a quota
// refusal (also ResourceExhausted) is not.
func errUploadsBusy(n int) error {
	st := status.Newf(codes.ResourceExhausted, "%d uploads are in progress on this server (rel-server --max-concurrent-uploads): try again shortly", n)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(uploadRetryDelay)}); err == nil {
		st = d
	}
	return st.Err()
}

// Upload stores a streamed file and answers once a majority of voters hold
// it, so that a release referring to it survives the loss of any minority.
func (a *artifactService) Upload(stream relv1.ArtifactService_UploadServer) error {
	s := a.s
	if s.uploads != nil {
		select {
		case s.uploads <- struct{}{}:
			defer func() { <-s.uploads }()
		default:
			s.metrics.uploadsRefused.WithLabelValues("concurrency").Inc()
			return errUploadsBusy(cap(s.uploads))
		}
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "an upload starts with a header (sha256, size)")
	}
	digest, err := validate.SHA256(h.GetSha256())
	if err != nil {
		return toStatus(err)
	}
	if h.GetSize() < 0 {
		return status.Errorf(codes.InvalidArgument, "upload size %d is negative", h.GetSize())
	}
	if h.GetSize() > s.artifacts.MaxSize() {
		return status.Errorf(codes.InvalidArgument, "artifact is %d bytes: the limit is %d (rel-server --max-artifact-bytes)", h.GetSize(), s.artifacts.MaxSize())
	}
	if err := s.awaitRemovals(stream.Context(), digest); err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	removedBefore := s.tombstoneIndex(digest)
	start := time.Now()
	n, err := s.artifacts.Put(&chunkReader{stream: stream}, digest, h.GetSize())
	if err != nil {
		if errors.Is(err, artifact.ErrQuotaExceeded) {
			s.metrics.uploadsRefused.WithLabelValues("quota").Inc()
		}
		return artifactStatus(err)
	}
	s.logger.Info("artifact received", "sha256", digest, "bytes", n, "name", h.GetName(), "took", time.Since(start).Round(time.Millisecond))
	holders, err := s.replicateArtifact(stream.Context(), digest, n)
	if err != nil {
		return toStatus(err)
	}
	// The same bytes, stored long ago and unused, may have been removed by
	// a GC pass that committed during the upload: its deletions may take
	// the copies just made, so the upload is not acknowledged.
	if s.tombstoneIndex(digest) > removedBefore {
		return status.Errorf(codes.Aborted, "artifact %s was removed by artifact GC while it was being uploaded (the same bytes were stored before, more than --artifact-grace ago, and no release used them): upload it again", digest)
	}
	return stream.SendAndClose(&relv1.UploadResponse{Sha256: digest, Size: n, ArtifactUrl: artifact.URL(digest), Holders: holders})
}

// tombstoneIndex is the index of the latest GC removal of digest this
// replica has applied (0: none).
func (s *Server) tombstoneIndex(digest string) uint64 {
	t, err := s.store.ArtifactTombstone(digest)
	if err != nil || t == nil {
		return 0
	}
	return t.GetModifyIndex()
}

func artifactStatus(err error) error {
	switch {
	case errors.Is(err, artifact.ErrDigestMismatch), errors.Is(err, artifact.ErrSizeMismatch),
		errors.Is(err, artifact.ErrTooLarge), errors.Is(err, artifact.ErrInvalidDigest):
		return status.Errorf(codes.InvalidArgument, "upload refused, nothing stored: %v", err)
	case errors.Is(err, artifact.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, artifact.ErrQuotaExceeded):
		return status.Errorf(codes.ResourceExhausted, "upload refused, nothing stored: %v", err)
	}
	if st, ok := status.FromError(errors.Unwrap(err)); ok {
		return st.Err()
	}
	return toStatus(err)
}

// replicateArtifact asks every other voter to fetch the blob from this
// server and returns once a majority of voters (this one included) hold it.
// Stragglers keep fetching in the background; a server that still lacks a
// blob fetches it from its peers when an agent asks for it.
func (s *Server) replicateArtifact(ctx context.Context, digest string, size int64) ([]string, error) {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, err
	}
	servers, _, _ := s.store.Servers(memdb.NewWatchSet())
	grpcOf := map[string]string{}
	for _, srv := range servers {
		grpcOf[srv.GetId()] = srv.GetGrpcAddr()
	}
	voters := 0
	var peers []string
	for _, m := range cf.Configuration().Servers {
		if m.Suffrage != raft.Voter {
			continue
		}
		voters++
		if string(m.ID) != s.cfg.NodeID {
			peers = append(peers, string(m.ID))
		}
	}
	need := voters/2 + 1
	holders := []string{s.cfg.NodeID}
	if len(holders) >= need {
		return holders, nil
	}
	type result struct {
		id  string
		err error
	}
	results := make(chan result, len(peers))
	src := "https://" + s.HTTPAddr()
	applied, _ := s.fsm.Applied()
	for _, id := range peers {
		addr := grpcOf[id]
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			fctx, cancel := context.WithTimeout(s.ctx, 10*time.Minute)
			defer cancel()
			var err error
			if addr == "" {
				err = fmt.Errorf("server %s has not registered its address", id)
			} else {
				conn, derr := s.peers.get(addr)
				err = derr
				if err == nil {
					_, err = relv1.NewClusterServiceClient(conn).FetchArtifact(fctx,
						&relv1.FetchArtifactRequest{Sha256: digest, Size: size, Sources: []string{src}, MinIndex: applied})
				}
			}
			results <- result{id, err}
		}()
	}
	var errs []error
	for range peers {
		select {
		case r := <-results:
			if r.err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", r.id, status.Convert(r.err).Message()))
				s.logger.Warn("peer could not fetch artifact", "peer", r.id, "sha256", digest, "err", r.err)
				break
			}
			holders = append(holders, r.id)
			if len(holders) >= need {
				return holders, nil
			}
		case <-ctx.Done():
			return nil, status.Errorf(codes.DeadlineExceeded, "artifact stored on %d of %d servers when the upload timed out; a majority (%d) is needed", len(holders), voters, need)
		}
	}
	return nil, status.Errorf(codes.Unavailable, "artifact stored on %d of %d servers, a majority (%d) is needed: %v", len(holders), voters, need, errors.Join(errs...))
}

// FetchArtifact downloads a blob from the given peers into this server's
// store. Sources must be the artifact endpoints of current members: a
// server never fetches from anywhere else (it would otherwise fetch any URL
// a caller names, from inside the network, and serve the answer to agents).
func (c *clusterService) FetchArtifact(ctx context.Context, req *relv1.FetchArtifactRequest) (*relv1.FetchArtifactResponse, error) {
	if _, err := validate.SHA256(req.GetSha256()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetSize() < 0 || req.GetSize() > c.s.artifacts.MaxSize() {
		return nil, status.Errorf(codes.InvalidArgument, "artifact size %d: want 0-%d", req.GetSize(), c.s.artifacts.MaxSize())
	}
	if len(req.GetSources()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no source to fetch from")
	}
	members := c.s.peerArtifactSources()
	for _, src := range req.GetSources() {
		if !slices.Contains(members, src) {
			return nil, status.Errorf(codes.InvalidArgument, "source %q is not the artifact endpoint of a member of this cluster: servers fetch artifacts only from each other", src)
		}
	}
	// Best effort (waitLocal is bounded): a replica that far behind is
	// rare, and the sender's upload still needs a majority.
	c.s.waitLocal(ctx, req.GetMinIndex())
	if err := c.s.awaitRemovals(ctx, req.GetSha256()); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if err := c.s.artifacts.Fetch(ctx, c.s.httpClient, req.GetSha256(), req.GetSize(), req.GetSources()); err != nil {
		return nil, artifactStatus(err)
	}
	return &relv1.FetchArtifactResponse{}, nil
}

// fetchFromPeers brings a blob this server lacks from any peer that has it.
// Concurrent requests for the same blob share one fetch.
func (s *Server) fetchFromPeers(ctx context.Context, digest string) error {
	s.fetchMu.Lock()
	call, ok := s.fetches[digest]
	if !ok {
		call = &fetchCall{done: make(chan struct{})}
		s.fetches[digest] = call
		sources := s.peerArtifactSources()
		go func() {
			fctx, cancel := context.WithTimeout(s.ctx, 10*time.Minute)
			defer cancel()
			call.err = s.artifacts.Fetch(fctx, s.httpClient, digest, 0, sources)
			close(call.done)
			s.fetchMu.Lock()
			delete(s.fetches, digest)
			s.fetchMu.Unlock()
		}()
	}
	s.fetchMu.Unlock()
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// peerArtifactSources are the HTTPS base URLs of the other members'
// artifact endpoints, as registered in the replicated state.
func (s *Server) peerArtifactSources() []string {
	servers, _, _ := s.store.Servers(memdb.NewWatchSet())
	var out []string
	for _, srv := range servers {
		if srv.GetId() != s.cfg.NodeID && srv.GetHttpAddr() != "" {
			out = append(out, "https://"+srv.GetHttpAddr())
		}
	}
	return out
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// fetchState is embedded in Server.
type fetchState struct {
	fetchMu    sync.Mutex
	fetches    map[string]*fetchCall
	httpClient *http.Client
}

// ListArtifacts lists this server's store, by digest, in pages; the
// releases using each blob come from this server's replica.
func (a *artifactService) ListArtifacts(ctx context.Context, req *relv1.ListArtifactsRequest) (*relv1.ListArtifactsResponse, error) {
	s := a.s
	key := &relv1.ArtifactInfo{}
	ok, err := parsePageToken("artifacts", req.GetPageToken(), key)
	if err != nil {
		return nil, err
	}
	blobs, err := s.artifacts.List()
	if err != nil {
		return nil, toStatus(err)
	}
	refs, _, err := s.store.ReferencedArtifacts(nil)
	if err != nil {
		return nil, toStatus(err)
	}
	slices.SortFunc(blobs, func(x, y artifact.Blob) int { return strings.Compare(x.Digest, y.Digest) })
	if ok {
		blobs = after(blobs, artifact.Blob{Digest: key.GetSha256()}, func(x, y artifact.Blob) bool { return x.Digest < y.Digest })
	}
	done := s.removals.processed()
	page, more := fillPage(newPageBudget(req.GetPageSize()), blobs, func(b artifact.Blob) *relv1.ArtifactInfo {
		info := &relv1.ArtifactInfo{Sha256: b.Digest, Size: b.Size, StoredUnixNano: b.ModTime.UnixNano(), Releases: refs[b.Digest]}
		if t, err := s.store.ArtifactTombstone(b.Digest); err == nil && t != nil && t.GetModifyIndex() > done {
			info.Removed = true
		}
		return info
	})
	resp := &relv1.ListArtifactsResponse{Artifacts: page, ServerId: s.cfg.NodeID, StoreBytes: s.artifacts.Used(), QuotaBytes: s.artifacts.Quota()}
	if more {
		resp.NextPageToken = pageToken("artifacts", &relv1.ArtifactInfo{Sha256: page[len(page)-1].GetSha256()})
	}
	return resp, nil
}
