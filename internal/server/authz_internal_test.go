package server

import (
	"testing"
)

// TestEveryMethodHasARule: the interceptors refuse a method without a rule
// to everybody; this catches the omission at build time instead, and a
// rule left behind for a method that is gone.
func TestEveryMethodHasARule(t *testing.T) {
	s := &Server{}
	s.setupGRPC()
	defer s.grpcSrv.Stop()
	registered := map[string]bool{}
	for svc, info := range s.grpcSrv.GetServiceInfo() {
		for _, m := range info.Methods {
			method := "/" + svc + "/" + m.Name
			registered[method] = true
			r, ok := rules[method]
			if !ok {
				t.Errorf("%s has no entry in rules (authz.go): every method needs one", method)
				continue
			}
			if !r.anyone && len(r.kinds) == 0 && r.perm == "" {
				t.Errorf("%s: its rule allows nobody", method)
			}
		}
	}
	if len(registered) == 0 {
		t.Fatal("no methods registered")
	}
	for method := range rules {
		if !registered[method] {
			t.Errorf("rules has an entry for %s, which no service registers", method)
		}
	}
}
