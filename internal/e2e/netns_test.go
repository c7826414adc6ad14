package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// netLab is a small network of Linux network namespaces for partition
// tests: one namespace per node, each with one address on a bridge. The
// bridge lives in a namespace of its own (the hub): a bridge in the host's
// namespace would pass its traffic through the host's iptables FORWARD
// chain (br_netfilter), which Docker sets to DROP. The test process reaches
// the nodes through a veth from its own namespace into the hub, at
// <subnet>.1.
//
// Names carry a random tag so that concurrent runs do not collide, and
// everything is removed in t.Cleanup, also when the test fails. Processes
// started inside a namespace must be stopped before that cleanup runs:
// create the lab before starting them, and their cleanups (registered
// later) run first.
type netLab struct {
	t      *testing.T
	tag    string // rp + 6 hex digits: interface names stay within IFNAMSIZ
	hub    string // the namespace holding the bridge
	subnet string // "10.X.Y"
	nodes  []*netNode
}

// netNode is one namespace of a lab.
type netNode struct {
	ns     string // the namespace's name
	ip     string // its address on the bridge
	hubEnd string // its veth's end in the hub: down cuts the node off
}

// needNetns skips the test when it cannot make namespaces at all: not root,
// or no ip(8).
func needNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed: no network namespaces")
	}
}

// ipCmd runs ip(8) with args, failing the test with its output on error.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetLab makes a lab of n nodes, at 10.X.Y.2 ... 10.X.Y.(n+1).
func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	needNetns(t)
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	l := &netLab{t: t, tag: "rp" + hex.EncodeToString(b)}
	l.subnet = l.freeSubnet()
	l.hub = "rel-" + l.tag + "-hub"
	// Registered before anything exists, so a failure halfway through
	// still removes what was made.
	t.Cleanup(l.remove)

	ipCmd(t, "netns", "add", l.hub)
	ipCmd(t, "-n", l.hub, "link", "set", "lo", "up")
	ipCmd(t, "-n", l.hub, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", l.hub, "link", "set", "br0", "up")

	// The test process's own leg: <tag>r here, <tag>rb in the hub.
	ipCmd(t, "link", "add", l.tag+"r", "type", "veth", "peer", "name", l.tag+"rb")
	ipCmd(t, "link", "set", l.tag+"rb", "netns", l.hub)
	ipCmd(t, "-n", l.hub, "link", "set", l.tag+"rb", "master", "br0", "up")
	ipCmd(t, "addr", "add", l.subnet+".1/24", "dev", l.tag+"r")
	ipCmd(t, "link", "set", l.tag+"r", "up")

	for i := 1; i <= n; i++ {
		nd := &netNode{ns: fmt.Sprintf("rel-%s-%d", l.tag, i), ip: fmt.Sprintf("%s.%d", l.subnet, i+1), hubEnd: fmt.Sprintf("%sh%d", l.tag, i)}
		nodeEnd := fmt.Sprintf("%sn%d", l.tag, i)
		ipCmd(t, "netns", "add", nd.ns)
		l.nodes = append(l.nodes, nd)
		ipCmd(t, "-n", nd.ns, "link", "set", "lo", "up")
		ipCmd(t, "link", "add", nd.hubEnd, "type", "veth", "peer", "name", nodeEnd)
		ipCmd(t, "link", "set", nd.hubEnd, "netns", l.hub)
		ipCmd(t, "link", "set", nodeEnd, "netns", nd.ns)
		ipCmd(t, "-n", l.hub, "link", "set", nd.hubEnd, "master", "br0", "up")
		ipCmd(t, "-n", nd.ns, "addr", "add", nd.ip+"/24", "dev", nodeEnd)
		ipCmd(t, "-n", nd.ns, "link", "set", nodeEnd, "up")
	}
	return l
}

// freeSubnet picks a random 10.X.Y.0/24 that no address of this host's
// namespace is in yet.
func (l *netLab) freeSubnet() string {
	out, err := exec.Command("ip", "-4", "-o", "addr").CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip -4 -o addr: %v\n%s", err, out)
	}
	routes, err := exec.Command("ip", "-4", "route").CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip -4 route: %v\n%s", err, routes)
	}
	for range 100 {
		x, _ := rand.Int(rand.Reader, big.NewInt(150))
		y, _ := rand.Int(rand.Reader, big.NewInt(256))
		s := fmt.Sprintf("10.%d.%d", 100+x.Int64(), y.Int64())
		if !strings.Contains(string(out), " "+s+".") && !strings.Contains(string(routes), s+".0/24") {
			return s
		}
	}
	l.t.Fatalf("no free 10.X.Y.0/24 after 100 tries; addresses:\n%s", out)
	return ""
}

// wrap makes cmd run inside node's namespace (ip netns exec, which execs
// the program: the process is cmd's own, signals reach it directly).
func (nd *netNode) wrap(cmd *exec.Cmd) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		panic(err) // needNetns checked it
	}
	cmd.Args = append([]string{"ip", "netns", "exec", nd.ns, cmd.Path}, cmd.Args[1:]...)
	cmd.Path = ip
}

// cut takes node off the bridge: no packet in or out, connections stay
// open on both sides (as a partition does), and processes inside the
// namespace still reach each other.
func (l *netLab) cut(nd *netNode) {
	l.t.Helper()
	ipCmd(l.t, "-n", l.hub, "link", "set", nd.hubEnd, "down")
}

// heal puts node back on the bridge.
func (l *netLab) heal(nd *netNode) {
	l.t.Helper()
	ipCmd(l.t, "-n", l.hub, "link", "set", nd.hubEnd, "up")
}

// remove deletes the lab: the test's own veth (its peer goes with it) and
// every namespace (their interfaces go with them). It reports, and does
// not stop at, what it could not remove.
func (l *netLab) remove() {
	var errs []string
	run := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out))))
		}
	}
	names, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	links, _ := exec.Command("ip", "-o", "link").CombinedOutput()
	if strings.Contains(string(links), l.tag+"r@") || strings.Contains(string(links), l.tag+"r:") {
		run("link", "del", l.tag+"r")
	}
	for _, nd := range l.nodes {
		if strings.Contains(string(names), nd.ns) {
			run("netns", "del", nd.ns)
		}
	}
	if strings.Contains(string(names), l.hub) {
		run("netns", "del", l.hub)
	}
	if len(errs) > 0 {
		l.t.Errorf("removing network lab %s: %s", l.tag, strings.Join(errs, "; "))
	}
}

// TestNetLab checks the lab itself: nodes reach each other and the test
// process reaches them; a cut node reaches nobody but itself, and once
// healed it is reachable again.
func TestNetLab(t *testing.T) {
	for _, tool := range []string{"bash", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is needed for this check", tool)
		}
	}
	l := newNetLab(t, 3)
	// reach connects to port 1 of addr from inside from (the test's own
	// namespace when nil): a refused connection means the address
	// answered; through a cut link it times out or finds no route.
	reach := func(from *netNode, addr string) bool {
		cmd := exec.Command("timeout", "2", "bash", "-c", "exec 3<>/dev/tcp/"+addr+"/1")
		if from != nil {
			from.wrap(cmd)
		}
		out, _ := cmd.CombinedOutput()
		return strings.Contains(string(out), "Connection refused")
	}
	for _, nd := range l.nodes {
		if !reach(nil, nd.ip) {
			t.Fatalf("the test process does not reach %s at %s", nd.ns, nd.ip)
		}
	}
	if !reach(l.nodes[0], l.nodes[1].ip) {
		t.Fatalf("%s does not reach %s", l.nodes[0].ns, l.nodes[1].ip)
	}
	l.cut(l.nodes[2])
	if reach(l.nodes[0], l.nodes[2].ip) || reach(nil, l.nodes[2].ip) {
		t.Fatalf("the cut-off %s is still reachable", l.nodes[2].ns)
	}
	if !reach(l.nodes[2], l.nodes[2].ip) {
		t.Fatalf("the cut-off %s does not reach its own address", l.nodes[2].ns)
	}
	l.heal(l.nodes[2])
	waitFor(t, 5*time.Second, "the healed node to be reachable", func() bool { return reach(l.nodes[0], l.nodes[2].ip) })
}
