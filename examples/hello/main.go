// Command hello is the sample service the Rel demo deploys: a small HTTP
// server that says which host and version answered.
//
//	hello serve   listen on --addr (default 127.0.0.1:0) and write the
//	              address it got to $REL_RELEASE_DIR/listen.addr
//	hello check   GET /healthz on the address in listen.addr (health check)
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hello serve [ADDR] | hello check")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		addr := "127.0.0.1:0"
		if len(os.Args) > 2 {
			addr = os.Args[2]
		}
		err = serve(addr)
	case "check":
		err = check()
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func addrFile() string {
	dir := os.Getenv("REL_RELEASE_DIR")
	if dir == "" {
		dir = "."
	}
	return filepath.Join(dir, "listen.addr")
}

func serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	node, version := os.Getenv("REL_NODE_ID"), os.Getenv("REL_VERSION")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s, version %s\n", node, version)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	// Written after listening, so a health check that finds the file finds
	// a live listener.
	tmp := addrFile() + ".tmp"
	if err := os.WriteFile(tmp, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, addrFile()); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func check() error {
	b, err := os.ReadFile(addrFile())
	if err != nil {
		return fmt.Errorf("not listening yet: %w", err)
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + strings.TrimSpace(string(b)) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz answered %s", resp.Status)
	}
	return nil
}
