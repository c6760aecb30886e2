# MessageVault: the developer commands. `make test` is what CI runs.
GO ?= go

.PHONY: test deps unit fuzz fuzz-long soak bench bench-goals bench-scale peers build serve vet

## test: everything CI runs: installs the test dependencies, then vet, gofmt check, all tests with the race detector, short fuzzing
test: deps vet unit fuzz

## deps: what the tests need besides Go: Azurite (pinned in package-lock.json) from npm, Chromium and kcat from Debian
deps:
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 and npm (apt-get install nodejs npm)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		echo "installing Debian's chromium for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v kcat >/dev/null || { \
		echo "installing Debian's kcat for the Kafka gateway test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; }

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 20m ./...

## fuzz: run every fuzz target briefly: a fixed number of inputs each (a few
## seconds here). Counts, not durations: with a duration, Go 1.26's fuzzer can
## fail spuriously with "context deadline exceeded" on a loaded machine
## (golang/go#75804).
FUZZ_RECORD ?= 300000x
FUZZ_TRANSFER ?= 50000x
FUZZ_PUBLISH ?= 30000x
FUZZ_AUTH ?= 5000x
FUZZ_LZ4 ?= 100000x
FUZZ_JSON ?= 100000x
FUZZ_KAFKA ?= 100000x
fuzz:
	$(GO) test ./formats -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZ_RECORD)
	$(GO) test ./formats -run '^$$' -fuzz '^FuzzDecodeTransfer$$' -fuzztime $(FUZZ_TRANSFER)
	$(GO) test ./server -run '^$$' -fuzz '^FuzzPublish$$' -fuzztime $(FUZZ_PUBLISH)
	$(GO) test ./server -run '^$$' -fuzz '^FuzzAuthorization$$' -fuzztime $(FUZZ_AUTH)
	$(GO) test ./formats/lz4stream -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZ_LZ4)
	$(GO) test ./server -run '^$$' -fuzz '^FuzzDecodeJSONFast$$' -fuzztime $(FUZZ_JSON)
	$(GO) test ./kafka -run '^$$' -fuzz '^FuzzDecodeBatches$$' -fuzztime $(FUZZ_KAFKA)

## fuzz-long: the same for ten minutes each (not part of `make test`)
fuzz-long:
	$(MAKE) fuzz FUZZ_RECORD=10m FUZZ_TRANSFER=10m FUZZ_PUBLISH=10m FUZZ_AUTH=10m FUZZ_LZ4=10m FUZZ_JSON=10m FUZZ_KAFKA=10m

## soak: a steady load for SOAK_DURATION (default 30m) that fails if goroutines, open files or memory keep growing
SOAK_DURATION ?= 30m
soak: deps
	SOAK_DURATION=$(SOAK_DURATION) $(GO) test -race -tags soak -count=1 -timeout 0 -run '^TestSoak$$' -v ./e2e

## bench: every Go benchmark, three runs each (compare with benchstat)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./...

## bench-goals: tables of the performance goals measured here (goal, measured, pass: publish and latency, Kafka produce against HTTP publish, Azure on Azurite, the peers' ratio, then scale as bench-scale does), then the issue 7 runs of `messagevault bench` (see docs/PERFORMANCE.md)
bench-goals: deps build
	$(GO) run ./bench/goals
	cd bench/peers && $(GO) run . -producers 4 -batch 1000 -size 100 -duration 10s
	$(GO) run ./bench/scale
	$(GO) run ./bench/scale -tails 10000
	rm -rf /tmp/mv-bench && bin/messagevault bench --data /tmp/mv-bench --threads 4 --batch 1000 --min-size 100 --max-size 100 --duration 10s --no-verify
	rm -rf /tmp/mv-bench && bin/messagevault bench --data /tmp/mv-bench --threads 4 --batch 10 --rate 10000 --min-size 100 --max-size 100 --duration 10s --no-verify
	rm -rf /tmp/mv-bench

## bench-scale: 10,000 streams written at once against a server limited to 4,096 open files (peak memory, descriptors, errors, memory once idle), then 10,000 event streams (memory, delivery); tables, about 5 minutes
bench-scale: build
	$(GO) run ./bench/scale
	$(GO) run ./bench/scale -tails 10000

## peers: the same workload against embedded NATS JetStream and MessageVault, side by side (module bench/peers)
peers:
	cd bench/peers && $(GO) run . -producers 4 -batch 1000 -size 100 -duration 10s

build:
	$(GO) build -buildvcs=auto -o bin/messagevault ./cmd/messagevault

serve:
	$(GO) run ./cmd/messagevault serve
