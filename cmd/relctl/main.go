// Command relctl is the command line client of Rel's control plane.
package main

import (
	"os"
	// Freeze windows name IANA time zones: carry the database, so relctl
	// shows the same times as the servers on any host.
	_ "time/tzdata"

	"github.com/relhq/rel/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
