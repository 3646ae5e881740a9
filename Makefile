# grbd — see README.md. `make test` is what CI runs.
SHELL    := /bin/bash
GO       ?= go
PKGS     := ./...
FUZZTIME ?= 60s
BIN      := bin/grbd

.PHONY: all build deps verify test unit e2e bench bench-sustained fuzz chaos clean sim soak

all: build

build:
	$(GO) build -o $(BIN) ./cmd/grbd

# deps ensures the system programs the tests drive (fio, libnbd, nbdkit, fuse3, qemu-utils, e2fsprogs).
deps:
	@bash scripts/ensure-deps.sh

# verify: formatting, vet, staticcheck when installed, go.mod tidy.
verify:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@if command -v staticcheck >/dev/null; then staticcheck $(PKGS); else echo "staticcheck not installed: skipped"; fi
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum not tidy: run 'go mod tidy' and commit"; exit 1; }

# test: everything CI runs — unit tests with the race detector, then the
# end-to-end tests with the real binary, fio and an ext4 mount.
test: deps verify unit e2e

# unit: every package with the race detector (the simulation with a short
# seed range there) and, at the same time, a pass without it: NORACE_PKGS,
# then the simulation's 1000 seeds. The in-process cluster tests (node/) are
# parallel and mostly wait on timers: four at a time keep two cores busy,
# and node/ is the last package of the race pass by far (~160 s), which
# leaves room for the other pass. NORACE_PKGS run a sample of their
# compute-heavy tests under -race and all of them without it
# (internal/racetest; internal/lint checks that every package using it is
# listed): journal 60 s -> 16 s, secondary 39 s -> 18 s, wire 28 s -> 6 s
# under -race; make unit 6:10 -> 4:48 here.
SIMSEEDS ?= 1000
NORACE_PKGS := ./journal ./secondary ./internal/wire
unit:
	@set -o pipefail; echo "$(GO) test -race -short ... (every package) & $(GO) test $(NORACE_PKGS) ./internal/sim (without -race)"; \
	  $(GO) test -race -short -count=1 -parallel 4 -timeout 10m $$($(GO) list ./... | grep -v /e2e) & race=$$!; \
	  { $(GO) test -count=1 -timeout 10m $(NORACE_PKGS) && \
	    $(GO) test -count=1 -timeout 10m -run TestSim -v ./internal/sim -seeds $(SIMSEEDS) | grep -E '^(---|ok|FAIL|PASS|\s+sim_test)'; }; norace=$$?; \
	  wait $$race; r=$$?; [ $$r -eq 0 ] && [ $$norace -eq 0 ] || { echo "make unit: race pass exit $$r, pass without -race exit $$norace"; exit 1; }

# e2e: the parallel tests mostly wait on processes and timers (the suite
# used half of two cores): three at a time, 370 s -> 300 s here. Tests that
# measure pauses or run the bench are not parallel and run alone first.
# A failure reprints its assertions and anomalies at the end (the streamed
# log puts them far above the last lines).
E2ELOG ?= $${TMPDIR:-/tmp}/grbd-e2e.log
e2e:
	@set -o pipefail; echo "$(GO) test -count=1 -timeout 15m -parallel 3 -v ./e2e  (log: $(E2ELOG))"; \
	  $(GO) test -count=1 -timeout 15m -parallel 3 -v ./e2e 2>&1 | tee $(E2ELOG) || \
	  { bash scripts/failure-summary.sh $(E2ELOG); exit 1; }

# bench: the fio job files of bench/jobs against grbd and its peer NBD servers
# in one run, plus resync and failover (not part of test; ~12 minutes). Writes
# bench-results.json and bench-results.png; BENCHFLAGS adds flags, e.g.
# BENCHFLAGS='--rounds 3 --duration 10s' (see `grbd bench --help`).
bench: deps build
	$(BIN) bench --json bench-results.json --png bench-results.png $(BENCHFLAGS)

# bench-sustained: 1 MiB writes over the whole device for 60 s on nbdkit,
# one grbd node and two with a witness, throughput per 5 s window (issue 17:
# no collapse once the page cache fills; ~4 minutes). Each system is first
# preconditioned by one round of the same job (measured and reported), so
# the windows are its steady state, not the first fill of a new device
# (docs/benchmarks.md, "Sustained writes after a preconditioning pass").
bench-sustained: deps build
	$(BIN) bench --sustained 60s --jobs seqwrite-1m-qd8 --rounds 1 --extras=false --systems nbdkit-file,grbd-1n,grbd-2n+w-C --json bench-sustained.json $(BENCHFLAGS)

# chaos: long fault-suite runs (issue 5; not part of test). Every scenario (or
# those whose name contains SCENARIO) in rounds with seeds SEED, SEED+1, ...
# until DURATION is spent; reports, porcupine visualizations and member logs in
# CHAOS_REPORT. A failed run prints the `make chaos SEED=.. SCENARIO=..` that
# replays its fault schedule.
SEED         ?= $(shell date +%s)
DURATION     ?= 10m
SCENARIO     ?=
CHAOS_REPORT ?= $(CURDIR)/chaos-report
chaos: deps
	$(GO) test -count=1 -timeout 24h -run '^TestChaosSoak$$' -v ./e2e -args \
	  -chaos.seed=$(SEED) -chaos.duration=$(DURATION) -chaos.scenario=$(SCENARIO) -chaos.report=$(CHAOS_REPORT)

fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f for $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10s $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin bench-results.json bench-results.png bench-sustained.json chaos-report

# soak: the lease soak of issue 15 (not part of test): 2 data nodes + witness
# with the default timings next to a CPU hog per core, SOAK idle and SOAK
# under fio writes; fails on any fencing or I/O error.
SOAK ?= 10m
soak: deps
	GRBD_SOAK=$(SOAK) $(GO) test -count=1 -timeout 60m -run '^TestLeaseSoak$$' -v ./e2e

# sim: a long simulation run (SIMSEEDS=20000 make sim; SIMFIRST=20001 starts
# past the seeds make test runs).
SIMFIRST ?= 1
sim:
	$(GO) test -count=1 -timeout 120m -run TestSimSeeds -v ./internal/sim -seeds $(SIMSEEDS) -first $(SIMFIRST)
