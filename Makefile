# Rel: the two commands of the README are `make demo` and `make test`.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/relhq/rel/internal/version.Version=$(VERSION)
BIN       := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build demo test test-browser screenshots test-docker test-short vet fmt-check lint proto proto-check bench bench-security bench-raftbytes fuzz clean

all: build

## build: compile bin/rel-server, bin/rel-agent and bin/relctl
build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/rel-server ./cmd/server
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/relctl ./cmd/relctl
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/rel-agent ./cmd/agent

## demo: build, run a local 3-node cluster, fail over, clean up
demo: build
	./scripts/demo.sh

## test: formatting, vet, generated-code freshness, every package's tests with
## the race detector, then the end-to-end tests (real processes; the binaries
## they run are not race-instrumented, so neither is the test driver)
test: fmt-check vet proto-check
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v /internal/e2e)
	$(GO) test -count=1 -timeout 20m ./internal/e2e/
	$(MAKE) test-browser

## test-browser: the web dashboard in a real headless Chromium (chromedp):
## installs Debian's chromium first when none is found
## (scripts/install-chromium.sh); the tests skip, saying why, only when no
## browser can be found or installed
test-browser:
	-./scripts/install-chromium.sh
	$(GO) test -tags browser -count=1 -timeout 10m ./internal/dashboard/browsertest/

## screenshots: docs/img/dashboard-*.png from a live run in Chromium
screenshots:
	./scripts/install-chromium.sh
	REL_SCREENSHOTS=$(CURDIR)/docs/img $(GO) test -tags browser -count=1 -run '^TestScreenshots$$' ./internal/dashboard/browsertest/

## test-docker: three servers and two agents in containers on a private
## Docker network; the leader is cut off and reconnected; then a follower is
## cut off with its agents during a rollout that rolls back (needs Docker)
test-docker:
	./scripts/docker-test.sh

## test-short: the tests without the race detector (faster while editing)
test-short:
	$(GO) test -count=1 ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## lint: gofmt, go vet and staticcheck
lint: fmt-check vet
	$(GO) run $(STATICCHECK) ./...

## proto: regenerate the committed Go code from proto/rel/v1/*.proto
proto:
	./scripts/proto.sh

## proto-check: fail if the committed generated code is stale
proto-check:
	./scripts/proto.sh --check

## bench: the table of docs/PERFORMANCE.md on this machine (figures, not
## pass/fail; each row a median of several runs, with its goal and whether
## it was met); the table goes into docs/PERFORMANCE.md, README.md and bench.out
bench: build
	$(GO) run ./scripts/bench -bin $(BIN) -write-table docs/PERFORMANCE.md,README.md | tee bench.out

## bench-security: the cost of TLS: the agents and latency figures beside
## those of the last commit before security (plaintext), built once into
## bin/baseline from git; runs interleaved
bench-security: build
	GO="$(GO)" ./scripts/bench-baseline.sh $(BIN)/baseline
	$(GO) run ./scripts/bench -suite security -bin $(BIN) $$(test -x $(BIN)/baseline/rel-server && echo -baseline-bin $(BIN)/baseline) | tee bench-security.out

## bench-raftbytes: only the raft bytes of rolling rollouts (in-process, about a minute)
bench-raftbytes:
	$(GO) run ./scripts/bench -suite raftbytes

## fuzz: fuzz archive extraction and raft command decode-validate-apply,
## 60s each (tmpfs makes extraction ~10x faster)
fuzz:
	TMPDIR=$${FUZZ_TMPDIR:-/dev/shm} $(GO) test -run '^$$' -fuzz FuzzExtract -fuzztime 60s -fuzzminimizetime 1s ./internal/install/
	$(GO) test -run '^$$' -fuzz FuzzApplyCommand -fuzztime 60s ./internal/fsm/

clean:
	rm -rf $(BIN) .tools bench.out bench-security.out
