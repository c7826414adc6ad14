package server

import (
	"encoding/base64"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Paging of the list RPCs. A page holds at most page_size items
// (defaultPageSize when 0, maxPageSize at most) and stops before its items
// would encode to more than maxPageBytes, well below gRPC's 4 MiB message
// limit, so no answer can exceed it however big the items are (a single
// item always goes out, or the list could never move past it).
//
// A page token names the last item of the previous page by its sort key
// (a message holding only the fields the list is ordered by), so the next
// page starts after it even if that item has gone since: tokens are
// "<list>.<base64url of the key message>", opaque to clients.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
	maxPageBytes    = 3 << 20
)

// pageSize is the number of items a request's page_size asks for.
func pageSize(n uint32) int {
	switch {
	case n == 0:
		return defaultPageSize
	case n > maxPageSize:
		return maxPageSize
	}
	return int(n)
}

// pageToken encodes the sort key of a page's last item.
func pageToken(list string, key proto.Message) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(key)
	if err != nil {
		return ""
	}
	return list + "." + base64.RawURLEncoding.EncodeToString(b)
}

// parsePageToken decodes a token of list into key; false when tok is "".
func parsePageToken(list, tok string, key proto.Message) (bool, error) {
	if tok == "" {
		return false, nil
	}
	bad := status.Errorf(codes.InvalidArgument, "page_token %q is not a page token of this list: pass the next_page_token of the previous page, or none for the first page", clip(tok, 64))
	rest, ok := strings.CutPrefix(tok, list+".")
	if !ok {
		return false, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) == 0 {
		return false, bad
	}
	if err := proto.Unmarshal(b, key); err != nil {
		return false, bad
	}
	return true, nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// pageBudget counts a page's items and bytes.
type pageBudget struct {
	size, n, bytes int
}

func newPageBudget(pageSizeField uint32) *pageBudget {
	return &pageBudget{size: pageSize(pageSizeField), bytes: 1024} // room for the answer's other fields
}

// full reports whether the page holds page_size items.
func (b *pageBudget) full() bool { return b.n >= b.size }

// take counts m as the page's next item, or reports false when it would
// make the answer too big (never for the page's first item).
func (b *pageBudget) take(m proto.Message) bool {
	sz := protowire.SizeTag(1) + protowire.SizeBytes(proto.Size(m)) // tag, length and bytes
	if b.n > 0 && b.bytes+sz > maxPageBytes {
		return false
	}
	b.n++
	b.bytes += sz
	return true
}

// after returns the items (sorted by less) that come after key.
func after[T any](items []T, key T, less func(a, b T) bool) []T {
	i := sort.Search(len(items), func(i int) bool { return less(key, items[i]) })
	return items[i:]
}

// fillPage converts items into a page until it is full or too big, and
// reports whether items were left out.
func fillPage[T any, M proto.Message](b *pageBudget, items []T, conv func(T) M) ([]M, bool) {
	var out []M
	for _, it := range items {
		if b.full() {
			return out, true
		}
		m := conv(it)
		if !b.take(m) {
			return out, true
		}
		out = append(out, m)
	}
	return out, false
}
