# p2p-transfer: the two commands a newcomer needs are `make demo` and `make test`.
CARGO ?= cargo
BIN := target/release/p2p-transfer

.PHONY: all build demo test lint fmt doc bench clean

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

clean:
	$(CARGO) clean
