#!/usr/bin/env bash
# The self-contained demo behind `make demo`: an index server, two seeders and a leecher on
# 127.0.0.1, a generated 64 MiB file pulled from both seeders at once, then a folder of 500
# small files shared as one and downloaded by its folder id, each checked byte for byte.
# Everything it starts is stopped and everything it writes is removed on exit.
#
# mDNS must never reach a real network from here, so the demo re-runs itself in a private
# network namespace (only loopback, multicast on) where it can; there the peers find the server
# with --auto-discover. Where namespaces are unavailable it runs with --no-mdns and --server.
set -euo pipefail

BIN=${1:-target/release/p2p-transfer}

# True when the only network interface is loopback (we are in a private namespace).
only_loopback() {
    command -v ip >/dev/null || return 1
    [ "$(ip -o link show | awk -F': ' '{print $2}' | grep -vc '^lo$' || true)" = 0 ]
}

if ! only_loopback && [ -z "${P2P_DEMO_IN_NETNS:-}" ] && command -v unshare >/dev/null && command -v ip >/dev/null; then
    ns=(--net)
    [ "$(id -u)" -ne 0 ] && ns+=(--map-root-user)
    if unshare "${ns[@]}" -- sh -c 'ip link set lo up && ip link set lo multicast on' 2>/dev/null; then
        export P2P_DEMO_IN_NETNS=1
        exec unshare "${ns[@]}" -- sh -c 'ip link set lo up && ip link set lo multicast on && exec "$0" "$@"' "$0" "$@"
    fi
fi
if only_loopback; then
    mdns=1
else
    mdns=0
fi
SIZE_MIB=${DEMO_SIZE_MIB:-64}
export RUST_LOG=${RUST_LOG:-warn}

work=$(mktemp -d "${TMPDIR:-/tmp}/p2p-demo.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Waits until file $1 has a line starting with $2, and prints that line.
wait_for_line() {
    for _ in $(seq 1 200); do
        if line=$(grep -m1 "^$2" "$1" 2>/dev/null); then
            echo "$line"
            return 0
        fi
        sleep 0.05
    done
    echo "demo: timed out waiting for '$2' in $1" >&2
    cat "$1" >&2
    return 1
}

step() { printf '\n==> %s\n' "$*"; }

mkdir -p "$work/seeder1" "$work/seeder2" "$work/downloads"
step "generating a ${SIZE_MIB} MiB random file, and a folder of 500 small files"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$work/seeder1/demo.bin"
cp "$work/seeder1/demo.bin" "$work/seeder2/demo.bin"
for d in $(seq 1 10); do
    mkdir -p "$work/seeder2/photos/day$d"
    for f in $(seq 1 50); do
        head -c "$(( (d * 50 + f) * 37 % 40000 + 1000 ))" /dev/urandom > "$work/seeder2/photos/day$d/img$f.jpg"
    done
done

if [ "$mdns" = 1 ]; then
    step "starting the index server on 127.0.0.1, advertised over mDNS (private network namespace)"
    P2P_IDENTITY_DIR="$work/id/server" "$BIN" server --addr 127.0.0.1:0 > "$work/server.out" 2> "$work/server.err" &
else
    step "starting the index server on 127.0.0.1 (no network namespace here, so no mDNS)"
    P2P_IDENTITY_DIR="$work/id/server" "$BIN" server --addr 127.0.0.1:0 --no-mdns > "$work/server.out" 2> "$work/server.err" &
fi
pids+=($!)
server=$(wait_for_line "$work/server.out" "server listening on " | awk '{print $4}')
echo "index server at $server"
if [ "$mdns" = 1 ]; then
    wait_for_line "$work/server.out" "advertising over mDNS as "
    find_server=(--auto-discover)
else
    find_server=(--server "$server")
fi

step "starting seeder 1, sharing demo.bin"
P2P_IDENTITY_DIR="$work/id/seeder1" "$BIN" peer --addr 127.0.0.1:0 "${find_server[@]}" \
    --register "$work/seeder1/demo.bin" > "$work/seeder1.out" 2> "$work/seeder1.err" &
pids+=($!)
wait_for_line "$work/seeder1.out" "registered "
step "starting seeder 2, sharing demo.bin and the folder photos (one folder id)"
P2P_IDENTITY_DIR="$work/id/seeder2" "$BIN" peer --addr 127.0.0.1:0 "${find_server[@]}" \
    --register "$work/seeder2/demo.bin" --register "$work/seeder2/photos" > "$work/seeder2.out" 2> "$work/seeder2.err" &
pids+=($!)
id=$(wait_for_line "$work/seeder1.out" "registered " | awk '{print $3}')
folder=$(wait_for_line "$work/seeder2.out" "registered $work/seeder2/photos " | awk '{print $3}')

step "leecher downloading ${id:0:12} from both seeders"
P2P_IDENTITY_DIR="$work/id/leecher" "$BIN" peer --addr 127.0.0.1:0 "${find_server[@]}" --download "${id:0:12}" --out "$work/downloads"

step "checking the copy"
if cmp "$work/seeder1/demo.bin" "$work/downloads/demo.bin"; then
    echo "OK: downloaded file is byte-identical ($(stat -c %s "$work/downloads/demo.bin") bytes)"
else
    echo "FAILED: downloaded file differs" >&2
    exit 1
fi

step "leecher downloading the folder ${folder:0:12} (500 files) as one job"
P2P_IDENTITY_DIR="$work/id/leecher" "$BIN" peer --addr 127.0.0.1:0 "${find_server[@]}" --download "${folder:0:12}" --out "$work/downloads"
if diff -r "$work/seeder2/photos" "$work/downloads/photos"; then
    echo "OK: downloaded folder is identical ($(find "$work/downloads/photos" -type f | wc -l) files)"
else
    echo "FAILED: downloaded folder differs" >&2
    exit 1
fi

step "the same command again completes nothing new: every file is already there"
P2P_IDENTITY_DIR="$work/id/leecher" "$BIN" peer --addr 127.0.0.1:0 "${find_server[@]}" --download "${folder:0:12}" --out "$work/downloads"
