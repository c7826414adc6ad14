// Package version holds the build's version, set by the linker:
//
//	go build -ldflags "-X github.com/relhq/rel/internal/version.Version=v0.1.0"
package version

// Version is the Rel version of this binary; "dev" for untagged builds.
var Version = "dev"
