package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// fakePages answers the list RPCs in pages of at most 3 items (or the
// page size asked for, if smaller), with tokens "p<offset>".
type fakePages struct {
	relv1.UnimplementedControlServiceServer
	n int

	mu      sync.Mutex
	sizes   []uint32 // page_size of every call
	rollout *relv1.ListRolloutsRequest
}

func (f *fakePages) page(tok string, size uint32) (from, to int, next string, err error) {
	f.mu.Lock()
	f.sizes = append(f.sizes, size)
	f.mu.Unlock()
	if tok != "" {
		if from, err = strconv.Atoi(strings.TrimPrefix(tok, "p")); err != nil || !strings.HasPrefix(tok, "p") {
			return 0, 0, "", status.Error(codes.InvalidArgument, "bad token")
		}
	}
	n := 3
	if size != 0 && int(size) < n {
		n = int(size)
	}
	to = min(from+n, f.n)
	if to < f.n {
		next = fmt.Sprintf("p%d", to)
	}
	return from, to, next, nil
}

func (f *fakePages) ListRollouts(_ context.Context, req *relv1.ListRolloutsRequest) (*relv1.ListRolloutsResponse, error) {
	f.mu.Lock()
	f.rollout = req
	f.mu.Unlock()
	from, to, next, err := f.page(req.GetPageToken(), req.GetPageSize())
	if err != nil {
		return nil, err
	}
	resp := &relv1.ListRolloutsResponse{NextPageToken: next}
	for i := from; i < to; i++ {
		st := opsRollout("succeeded", "")
		st.Rollout.Id = fmt.Sprintf("ro-%02d", i)
		resp.Rollouts = append(resp.Rollouts, st)
	}
	return resp, nil
}

func (f *fakePages) ListReleases(_ context.Context, req *relv1.ListReleasesRequest) (*relv1.ListReleasesResponse, error) {
	from, to, next, err := f.page(req.GetPageToken(), req.GetPageSize())
	if err != nil {
		return nil, err
	}
	resp := &relv1.ListReleasesResponse{NextPageToken: next}
	for i := from; i < to; i++ {
		resp.Releases = append(resp.Releases, &relv1.Release{App: "web", Version: fmt.Sprintf("1.0.%d", i), Sha256: strings.Repeat("a", 64), ArtifactUrl: "https://a.example.com/x.tgz"})
	}
	return resp, nil
}

func (f *fakePages) ListAgents(_ context.Context, req *relv1.ListAgentsRequest) (*relv1.ListAgentsResponse, error) {
	from, to, next, err := f.page(req.GetPageToken(), req.GetPageSize())
	if err != nil {
		return nil, err
	}
	resp := &relv1.ListAgentsResponse{NextPageToken: next}
	for i := from; i < to; i++ {
		resp.Agents = append(resp.Agents, &relv1.AgentStatus{Agent: &relv1.Agent{Id: fmt.Sprintf("host-%02d", i)}})
	}
	return resp, nil
}

func (f *fakePages) History(_ context.Context, req *relv1.HistoryRequest) (*relv1.HistoryResponse, error) {
	from, to, next, err := f.page(req.GetPageToken(), req.GetPageSize())
	if err != nil {
		return nil, err
	}
	resp := &relv1.HistoryResponse{NextPageToken: next}
	for i := from; i < to; i++ {
		resp.Entries = append(resp.Entries, &relv1.HistoryEntry{App: "web", AgentId: fmt.Sprintf("host-%02d", i), Version: "1.0.0", FromUnixNano: t0, Outcome: "running"})
	}
	return resp, nil
}

// word matches s as a whole word.
func word(s string) *regexp.Regexp {
	return regexp.MustCompile(`(^|\s)` + regexp.QuoteMeta(s) + `(\s|$)`)
}

// TestListsFollowPages: every list command gets all pages (each item
// once, in order, JSON one document), and --limit stops after N items,
// asking for no more than it needs.
func TestListsFollowPages(t *testing.T) {
	f := &fakePages{n: 11}
	env := map[string]string{envAddr: serve(t, f, nil)}
	for _, c := range []struct {
		args []string
		item string // format of the i-th item's name
	}{
		{[]string{"rollout", "list"}, "ro-%02d"},
		{[]string{"release", "list"}, "1.0.%d"},
		{[]string{"agent", "list"}, "host-%02d"},
		{[]string{"history", "web"}, "host-%02d"},
	} {
		name := strings.Join(c.args, " ")
		res := runCLI(t, env, "", c.args...)
		if res.code != 0 {
			t.Fatalf("%s: exit %d: %s", name, res.code, res.stderr)
		}
		last := -1
		for i := 0; i < f.n; i++ {
			re := word(fmt.Sprintf(c.item, i))
			all := re.FindAllStringIndex(res.stdout, -1)
			if len(all) != 1 || all[0][0] < last {
				t.Fatalf("%s: %s not once and in order in:\n%s", name, re, res.stdout)
			}
			last = all[0][0]
		}

		res = runCLI(t, env, "", append(c.args, "-o", "json")...)
		var doc map[string][]json.RawMessage
		if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil || res.code != 0 {
			t.Fatalf("%s -o json: exit %d, %v:\n%s", name, res.code, err, res.stdout)
		}
		for k, v := range doc {
			if len(v) != f.n {
				t.Fatalf("%s -o json: %d %s, want %d", name, len(v), k, f.n)
			}
		}

		f.mu.Lock()
		f.sizes = nil
		f.mu.Unlock()
		res = runCLI(t, env, "", append(c.args, "--limit", "5")...)
		if res.code != 0 {
			t.Fatalf("%s --limit 5: exit %d: %s", name, res.code, res.stderr)
		}
		if !word(fmt.Sprintf(c.item, 4)).MatchString(res.stdout) || word(fmt.Sprintf(c.item, 5)).MatchString(res.stdout) {
			t.Fatalf("%s --limit 5:\n%s", name, res.stdout)
		}
		f.mu.Lock()
		if fmt.Sprint(f.sizes) != "[5 2]" {
			t.Errorf("%s --limit 5 asked for pages of %v, want [5 2]", name, f.sizes)
		}
		f.mu.Unlock()
	}

	// Filters go to the server.
	res := runCLI(t, env, "", "rollout", "list", "--state", "active", "--since", "2025-03-04T10:00:00Z", "--app", "web")
	if res.code != 0 {
		t.Fatalf("rollout list --state --since: exit %d: %s", res.code, res.stderr)
	}
	f.mu.Lock()
	if r := f.rollout; r.GetState() != "active" || r.GetApp() != "web" || r.GetSinceUnixNano() != 1741082400*1e9 {
		t.Errorf("request %v", r)
	}
	f.mu.Unlock()

	// Bad values are usage errors.
	for _, args := range [][]string{
		{"rollout", "list", "--since", "yesterday"},
		{"rollout", "list", "--since", "-2h"},
		{"rollout", "list", "--state", "done"},
		{"rollout", "list", "--limit", "-1"},
		{"release", "list", "--limit", "x"},
		{"history", "web", "--limit", "-3"},
	} {
		res := runCLI(t, env, "", args...)
		if res.code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", args, res.code, res.stderr)
		}
		checkOneErrorLine(t, res)
	}
}
