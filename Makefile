# MessageVault: the developer commands. `make test` is what CI runs.
GO ?= go
FUZZTIME ?= 5s

.PHONY: test deps unit fuzz fuzz-long bench build serve vet

## test: everything CI runs: installs the test dependencies, then vet, gofmt check, all tests with the race detector, short fuzzing
test: deps vet unit fuzz

## deps: what the tests need besides Go: Azurite (pinned in package-lock.json) from npm
deps:
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 and npm (apt-get install nodejs npm)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 20m ./...

## fuzz: run every fuzz target briefly (FUZZTIME each)
fuzz:
	$(GO) test ./formats -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME)
	$(GO) test ./formats -run '^$$' -fuzz '^FuzzDecodeTransfer$$' -fuzztime $(FUZZTIME)

## fuzz-long: the same for ten minutes each (not part of `make test`)
fuzz-long:
	$(MAKE) fuzz FUZZTIME=10m

## bench: every Go benchmark, three runs each (compare with benchstat)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./...

build:
	$(GO) build -o bin/messagevault ./cmd/messagevault

serve:
	$(GO) run ./cmd/messagevault serve
