package fsm

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func entry(t *testing.T, idx uint64, cmd *relv1.Command) *raft.Log {
	t.Helper()
	b, err := proto.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: idx, Type: raft.LogCommand, Data: b}
}

func commands() []*relv1.Command {
	return []*relv1.Command{
		{StampedUnixNano: 10, Kind: &relv1.Command_RegisterServer{RegisterServer: &relv1.RegisterServer{Server: &relv1.Server{Id: "s1", GrpcAddr: "a:1"}}}},
		{StampedUnixNano: 11, Kind: &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "web", CreatedUnixNano: 11}}}},
		{StampedUnixNano: 12, Kind: &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "web", CreatedUnixNano: 12}}}},
		{StampedUnixNano: 13, Kind: &relv1.Command_CreateEnvironment{CreateEnvironment: &relv1.CreateEnvironment{Environment: &relv1.Environment{Name: "prod", Selector: map[string]string{"env": "prod"}}}}},
		{StampedUnixNano: 14, Kind: &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: &relv1.Release{App: "web", Version: "1.0.0"}}}},
		{StampedUnixNano: 15, Kind: &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: &relv1.Release{App: "nope", Version: "1.0.0"}}}},
		{StampedUnixNano: 16, Kind: &relv1.Command_DeregisterServer{DeregisterServer: &relv1.DeregisterServer{Id: "s1"}}},
	}
}

func TestApplyResults(t *testing.T) {
	f := New(state.New())
	wantErr := []error{nil, nil, state.ErrAlreadyExists, nil, nil, state.ErrNotFound, nil}
	for i, cmd := range commands() {
		res, ok := f.Apply(entry(t, uint64(i+1), cmd)).(*Result)
		if !ok {
			t.Fatalf("entry %d: Apply returned %T", i+1, res)
		}
		if res.Index != uint64(i+1) {
			t.Errorf("entry %d: result index %d", i+1, res.Index)
		}
		if !errors.Is(res.Err, wantErr[i]) || (wantErr[i] == nil) != (res.Err == nil) {
			t.Errorf("entry %d: err %v, want %v", i+1, res.Err, wantErr[i])
		}
	}
	app, err := f.Store().App(nil, "web")
	if err != nil || app.GetCreateIndex() != 2 || app.GetCreatedUnixNano() != 11 {
		t.Fatalf("app after replay: %v %v", app, err)
	}
}

// TestDeterministic applies the same log to two FSMs, one of them restored
// from the other's snapshot half-way: both end identical.
func TestDeterministic(t *testing.T) {
	a, b := New(state.New()), New(state.New())
	cmds := commands()
	for i, cmd := range cmds[:4] {
		a.Apply(entry(t, uint64(i+1), cmd))
	}
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if err := b.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	for i, cmd := range cmds[4:] {
		a.Apply(entry(t, uint64(i+5), cmd))
		b.Apply(entry(t, uint64(i+5), cmd))
	}
	if ok, why := state.Equal(a.Store(), b.Store()); !ok {
		t.Fatalf("replicas differ: %s", why)
	}
}

func TestUndecodableEntryPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Apply of garbage did not panic")
		}
	}()
	New(state.New()).Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{0xff, 0xff}})
}

func TestUnknownCommandPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Apply of an empty command did not panic")
		}
	}()
	New(state.New()).Apply(entry(t, 1, &relv1.Command{}))
}

// TestNoNondeterminismInApplyPath guards the FSM contract: the packages
// Apply runs through never read a clock, draw random numbers or touch the
// file system. Stamping belongs to the server, before raft.Apply.
func TestNoNondeterminismInApplyPath(t *testing.T) {
	forbidden := map[string][]string{
		"time":      {"Now", "Since", "Until", "Sleep", "After", "Tick", "NewTimer", "NewTicker"},
		"math/rand": nil, "math/rand/v2": nil, "crypto/rand": nil, "os": nil, "net": nil,
	}
	for _, dir := range []string{".", filepath.Join("..", "state"), filepath.Join("..", "freeze")} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, file, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			names := map[string]string{} // local name -> import path
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				name := filepath.Base(path)
				if path == "math/rand/v2" {
					name = "rand"
				}
				if imp.Name != nil {
					name = imp.Name.Name
				}
				names[name] = path
				if fns, bad := forbidden[path]; bad && fns == nil {
					t.Errorf("%s imports %s: the apply path must be deterministic", file, path)
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				id, ok := sel.X.(*ast.Ident)
				if !ok {
					return true
				}
				for _, fn := range forbidden[names[id.Name]] {
					if sel.Sel.Name == fn {
						t.Errorf("%s: %s.%s in the apply path: stamp it before raft.Apply", fset.Position(sel.Pos()), id.Name, fn)
					}
				}
				return true
			})
		}
	}
}

type memSink struct {
	bytes.Buffer
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }
