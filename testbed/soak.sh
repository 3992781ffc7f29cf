#!/usr/bin/env bash
# Soak over two namespace paths with faults: `tcpls serve --perf` in the
# server namespace, `tcpls soak` (two connections per session, one per
# path) in the client namespace, and every FAULT_EVERY seconds one path,
# drawn at random, gets a random fault (rst or blackhole) that lasts
# FAULT_FOR seconds. The soak's JSON report (and its plot) land in OUT.
# The report's lost_bytes and corrupt_transfers must be 0.
#
# usage: testbed/soak.sh [SESSIONS] [DURATION] [OUT]
#   SESSIONS  sessions kept open (default 200)
#   DURATION  e.g. 60s, 10m (default 60s)
#   OUT       output directory (default ./soak-out)
#   env: RATE (per path, default 200mbit), FAULT_EVERY (s, default 3),
#        FAULT_FOR (s, default 1), BIN (tcpls binary, default: release build),
#        SOAK_ARGS (more `tcpls soak` options, e.g. "--keepalive 200ms")
# Needs root. Removes its namespaces and rules on exit, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-200}
duration=${2:-60s}
out=${3:-soak-out}
rate=${RATE:-200mbit}
every=${FAULT_EVERY:-3}
fault_for=${FAULT_FOR:-1}
prefix=sk$(($$ % 100000))
mkdir -p "$out"
rm -f "$out/faults.log"
if [ -z "${BIN:-}" ]; then
    cargo build --release -p tcpls-cli
    BIN=$PWD/target/release/tcpls
fi

server_pid=
injector_pid=
cleanup() {
    [ -n "$injector_pid" ] && kill "$injector_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    for p in 1 2; do testbed/fault.sh "$prefix" "$p" restore >/dev/null 2>&1 || true; done
    testbed/netns.sh down "$prefix" >/dev/null 2>&1 || true
}
trap cleanup EXIT

PATHS=2 testbed/netns.sh up "$prefix" "$rate" "$rate"
ip netns exec "$prefix-srv" "$BIN" serve --listen 0.0.0.0:4443 --perf \
    --advertise 10.71.2.2:4443 \
    --max-sessions 0 --max-sessions-per-ip 0 --max-handshakes-per-ip 0 \
    2>"$out/serve.log" &
server_pid=$!
for _ in $(seq 100); do
    ip netns exec "$prefix-cli" bash -c "exec 3<>/dev/tcp/10.71.1.2/4443" 2>/dev/null && break
    sleep 0.1
done

# Random faults on random paths, each undone after FAULT_FOR seconds.
(
    while true; do
        sleep "$every"
        p=$((RANDOM % 2 + 1))
        f=$([ $((RANDOM % 2)) -eq 0 ] && echo rst || echo blackhole)
        echo "$(date +%s%3N) path $p $f" >>"$out/faults.log"
        testbed/fault.sh "$prefix" "$p" "$f"
        sleep "$fault_for"
        testbed/fault.sh "$prefix" "$p" restore
    done
) &
injector_pid=$!

# The server's process id inside the namespace is the same on the host.
ip netns exec "$prefix-cli" "$BIN" soak 10.71.1.2:4443 -k \
    --sessions "$sessions" --duration "$duration" \
    --connections 2 --bind 10.71.1.1:0 --bind 10.71.2.1:0 \
    --stall-timeout 20s --server-pid "$server_pid" ${SOAK_ARGS:-} \
    --out "$out/soak.json" --plot "$out/soak.png"
echo "faults injected: $(wc -l <"$out/faults.log" 2>/dev/null || echo 0) (see $out/faults.log)"
