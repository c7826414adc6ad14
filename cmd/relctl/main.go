// Command relctl is the command line client of Rel's control plane.
package main

import (
	"os"

	"github.com/relhq/rel/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
