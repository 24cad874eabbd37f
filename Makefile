# p2p-transfer: the two commands a newcomer needs are `make demo` and `make test`.
CARGO ?= cargo
BIN := target/release/p2p-transfer

.PHONY: all build demo test lint fmt doc bench bench-deps clean

all: build

build:
	$(CARGO) build --release --bin p2p-transfer

## demo: build in release mode, then run a server, two seeders and a leecher on loopback,
## transfer a generated file, check it byte for byte, clean up.
demo: build
	./scripts/demo.sh $(BIN)

## test: formatting, lints, docs (no broken links), then every unit and integration test.
## (The benchmarks are built by `lint`, never run here: they move gigabytes.)
test: lint doc
	$(CARGO) test --workspace --lib --bins --tests --examples
	$(CARGO) test --workspace --doc

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

doc:
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps

## bench: transfer, hashing, memory, index-load and TLS cipher figures against baselines
## measured in the same run (never asserted in tests). BENCH_ARGS=--quick for a fast run. Results in target/bench/.
bench:
	$(CARGO) bench -p p2p-transfer --bench transfer -- $(BENCH_ARGS)
	$(CARGO) bench -p p2p-transfer --bench index_load -- $(BENCH_ARGS)
	$(CARGO) bench -p p2p-transfer --bench ciphers -- $(BENCH_ARGS)

## bench-deps: install the tools `make bench` measures against (rsync and socat for the folder
## baselines, nginx and curl for the HTTP one), once. As root with apt-get it installs the
## missing ones; otherwise it prints the command. Without them those baselines are skipped
## with a note.
BENCH_TOOLS := rsync:rsync socat:socat nginx:nginx-light curl:curl
bench-deps:
	@missing=""; for pair in $(BENCH_TOOLS); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -z "$$missing" ]; then echo "bench tools present: rsync socat nginx curl"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y --no-install-recommends $$missing \
			|| { apt-get update && apt-get install -y --no-install-recommends $$missing; }; \
	else echo "run as root: apt-get install -y --no-install-recommends$$missing"; fi

clean:
	$(CARGO) clean
