package testport

import (
	"net"
	"strconv"
	"testing"
)

// TestAddrOutsideEphemeralRange: every address is bindable, below the
// kernel's ephemeral range, and never repeated.
func TestAddrOutsideEphemeralRange(t *testing.T) {
	seen := map[string]bool{}
	top := ephemeralStart()
	for range 200 {
		addr, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if port < lowest || port >= top {
			t.Fatalf("%s outside %d-%d", addr, lowest, top-1)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("bind %s: %v", addr, err)
		}
		ln.Close()
	}
}
