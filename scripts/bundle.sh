#!/usr/bin/env bash
# Builds the demo's sample app into a release bundle:
#   scripts/bundle.sh VERSION OUT.tar.gz
# The bundle holds the static hello binary and rel.yaml at its root.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:?usage: bundle.sh VERSION OUT.tar.gz}"
out="${2:?usage: bundle.sh VERSION OUT.tar.gz}"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$stage/hello" ./examples/hello
cp examples/hello/rel.yaml "$stage/rel.yaml"
echo "$version" > "$stage/VERSION"
tar -C "$stage" -czf "$out" hello rel.yaml VERSION
echo "$out"
