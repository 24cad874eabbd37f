# p2p-transfer: the two commands a newcomer needs are `make demo` and `make test`.
CARGO ?= cargo
BIN ?= target/release/p2p-transfer

# Where `make install` puts things (GNU conventions): DESTDIR is prefixed to every path, for
# packaging into a staging folder; PREFIX=$$HOME/.local installs for one user without root.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man

.PHONY: all build demo test lint fmt doc bench bench-deps man install uninstall clean

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

## bench: transfer, hashing, memory, index-load, TLS cipher and DHT figures against baselines
## measured in the same run (never asserted in tests). BENCH_ARGS=--quick for a fast run. Results in target/bench/.
bench:
	$(CARGO) bench -p p2p-transfer --bench transfer -- $(BENCH_ARGS)
	$(CARGO) bench -p p2p-transfer --bench index_load -- --indexes 2 $(BENCH_ARGS)
	$(CARGO) bench -p p2p-transfer --bench ciphers -- $(BENCH_ARGS)
	$(CARGO) bench -p p2p-dht --bench dht -- $(BENCH_ARGS)

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

## man: one man page per command, generated from the command-line definitions, into
## target/man (read one with `man -l target/man/p2p-transfer-send.1`). Not committed.
man:
	rm -rf target/man
	$(CARGO) run --quiet --bin p2p-transfer -- man target/man

## install: the release binary, its man pages and its bash, zsh and fish completions, under
## $(DESTDIR)$(PREFIX) (default /usr/local). `cargo install --locked --path cmd/p2p-transfer`
## installs only the binary, into ~/.cargo/bin.
install: build
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(MANDIR)/man1" \
		"$(DESTDIR)$(DATADIR)/bash-completion/completions" \
		"$(DESTDIR)$(DATADIR)/zsh/site-functions" \
		"$(DESTDIR)$(DATADIR)/fish/vendor_completions.d"
	install -m 0755 "$(BIN)" "$(DESTDIR)$(BINDIR)/p2p-transfer"
	"$(BIN)" man "$(DESTDIR)$(MANDIR)/man1"
	"$(BIN)" completions bash > "$(DESTDIR)$(DATADIR)/bash-completion/completions/p2p-transfer"
	"$(BIN)" completions zsh > "$(DESTDIR)$(DATADIR)/zsh/site-functions/_p2p-transfer"
	"$(BIN)" completions fish > "$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/p2p-transfer.fish"
	chmod 0644 "$(DESTDIR)$(MANDIR)"/man1/p2p-transfer*.1 \
		"$(DESTDIR)$(DATADIR)/bash-completion/completions/p2p-transfer" \
		"$(DESTDIR)$(DATADIR)/zsh/site-functions/_p2p-transfer" \
		"$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/p2p-transfer.fish"

## uninstall: removes what `make install` put there (same PREFIX and DESTDIR).
uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/p2p-transfer" \
		"$(DESTDIR)$(MANDIR)"/man1/p2p-transfer.1 "$(DESTDIR)$(MANDIR)"/man1/p2p-transfer-*.1 \
		"$(DESTDIR)$(DATADIR)/bash-completion/completions/p2p-transfer" \
		"$(DESTDIR)$(DATADIR)/zsh/site-functions/_p2p-transfer" \
		"$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/p2p-transfer.fish"

clean:
	$(CARGO) clean
