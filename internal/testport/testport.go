// Package testport hands out free loopback addresses for servers that tests
// and benches start themselves.
//
// Asking the kernel for port 0 and closing the listener again returns a port
// from the ephemeral range, which the kernel also hands to every outgoing
// connection; between the close and the server's own bind, a gRPC or raft
// dial elsewhere on the machine can take it ("address already in use", seen
// in CI). Ports here come from below the ephemeral range, where only explicit
// binds land, and are never handed out twice by one process.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
)

// lowest port handed out; the range ends where the kernel's ephemeral range
// starts.
const lowest = 20000

var (
	mu     sync.Mutex
	issued = map[int]bool{}
)

// Addr returns "127.0.0.1:PORT" for a port nothing listens on now and that
// outgoing connections do not use.
func Addr() (string, error) {
	highest := ephemeralStart() - 1
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		port := lowest + rand.IntN(highest-lowest+1)
		if issued[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // someone else's: try another
		}
		_ = ln.Close()
		issued[port] = true
		return addr, nil
	}
	return "", fmt.Errorf("no free loopback port in %d-%d after 1000 tries", lowest, highest)
}

// ephemeralStart is the first port of the kernel's ephemeral range (Linux's
// default when it cannot be read).
func ephemeralStart() int {
	start := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var lo, hi int
		if n, _ := fmt.Sscan(string(b), &lo, &hi); n == 2 && lo > lowest+1000 {
			start = lo
		}
	}
	return start
}
