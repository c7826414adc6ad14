#!/usr/bin/env bash
# Regenerates the Go code for proto/rel/v1 with pinned tools, or (with
# --check) verifies that the committed code is what the pinned tools produce.
#
# protoc comes from Debian's protobuf-compiler package (installed here when
# missing, since every machine we build on is a root Debian box); the Go
# plugins are pinned as tool dependencies in go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."

want_protoc="libprotoc 3.21.12"
if ! command -v protoc >/dev/null 2>&1; then
  echo "proto: protoc not found; installing Debian's protobuf-compiler" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq protobuf-compiler >/dev/null
  fi
fi
have_protoc="$(protoc --version)"
if [ "$have_protoc" != "$want_protoc" ]; then
  echo "proto: want $want_protoc, have $have_protoc; the committed code may differ in its header" >&2
fi

tools="$(pwd)/.tools"
mkdir -p "$tools"
go build -o "$tools/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$tools/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc

out="proto"
if [ "${1:-}" = "--check" ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi

protoc -I proto \
  --plugin=protoc-gen-go="$tools/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$tools/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  proto/rel/v1/*.proto

if [ "${1:-}" = "--check" ]; then
  if ! diff -ru --exclude='*.proto' proto/rel/v1 "$out/rel/v1"; then
    echo "proto: the committed generated code is stale: run 'make proto' and commit the result" >&2
    exit 1
  fi
  echo "proto: generated code is up to date"
fi
