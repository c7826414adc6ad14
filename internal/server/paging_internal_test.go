package server

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestPageBytes: items of 1.4 MiB (agents with big hook output) go two to
// a page, each page's answer below 4 MiB; an item bigger than a page still
// goes out alone, so paging always moves on.
func TestPageBytes(t *testing.T) {
	big := strings.Repeat("o", 1400<<10)
	var items []*relv1.AgentStatus
	for i := 0; i < 7; i++ {
		items = append(items, &relv1.AgentStatus{Agent: &relv1.Agent{Id: fmt.Sprintf("a%d", i)}, Apps: []*relv1.AppReport{{Output: big}}})
	}
	items = append(items, &relv1.AgentStatus{Agent: &relv1.Agent{Id: "huge"}, Apps: []*relv1.AppReport{{Output: big + strings.Repeat("o", 1200<<10)}}})
	id := func(a *relv1.AgentStatus) *relv1.AgentStatus { return a }
	rest, sizes := items, []int{}
	for len(rest) > 0 {
		page, more := fillPage(newPageBudget(0), rest, id)
		if len(page) == 0 {
			t.Fatal("empty page")
		}
		if sz := proto.Size(&relv1.ListAgentsResponse{Agents: page, Index: 1 << 60, NextPageToken: strings.Repeat("t", 100)}); sz > 4<<20 {
			t.Fatalf("page of %d bytes", sz)
		}
		sizes = append(sizes, len(page))
		rest = rest[len(page):]
		if more != (len(rest) > 0) {
			t.Fatalf("more %v with %d left", more, len(rest))
		}
	}
	if fmt.Sprint(sizes) != "[2 2 2 1 1]" {
		t.Fatalf("pages of %v items, want [2 2 2 1 1]", sizes)
	}
	if got := pageSize(0); got != defaultPageSize {
		t.Errorf("page size 0: %d", got)
	}
	if got := pageSize(5000); got != maxPageSize {
		t.Errorf("page size 5000: %d", got)
	}
}
