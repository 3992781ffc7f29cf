#!/usr/bin/env bash
# A congestion controller shipped as eBPF (issue 18, seed 002 §5.6): one
# upload through a router whose bottleneck queue is deep, from a client
# whose own choice is cubic; once as is, once with the server shipping the
# Vegas example (bpf/vegas.bpf.c) for the client to send with. Cubic fills
# the queue, Vegas drains it: prints goodput, median and 95th percentile
# smoothed RTT and the controller the client's connection used, and
# writes goodput and RTT plots to OUT.
#
# The bottleneck is in a router namespace between client and server, not
# on the client's own interface: a sender's queue on its own host is held
# back by TCP Small Queues, so it never fills the way a router's does
# (on netns.sh's two namespaces cubic's RTT stayed 8 ms above the base).
#
# usage: testbed/cc-program-bench.sh
#        (root; build first: cargo build --release -p tcpls-cli --features bpf-cc)
# env:   BIN, OUT (default target/cc-program-bench), BYTES (default 120M),
#        RATE (50mbit), RTT (40ms, added on the return path), QUEUE (100ms)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/tcpls}
OUT=${OUT:-target/cc-program-bench}
BYTES=${BYTES:-120M}
RATE=${RATE:-50mbit}
RTT=${RTT:-40ms}
QUEUE=${QUEUE:-100ms}
C=ccp-cli R=ccp-rtr S=ccp-srv
mkdir -p "$OUT"
bpf/build.sh "$OUT/bpf" >/dev/null
digest=$(sha256sum "$OUT/bpf/vegas.bpf.o" | cut -d' ' -f1)
srv=
down() {
    [ -n "$srv" ] && kill "$srv" 2>/dev/null || true
    testbed/path.sh $S ccps clear 2>/dev/null || true
    for n in $C $R $S; do ip netns del $n 2>/dev/null || true; done
}
trap down EXIT
down
# client 10.72.1.1 -- router -- 10.72.2.2 server
for n in $C $R $S; do
    ip netns add $n
    ip -n $n link set lo up
done
ip link add ccpc type veth peer name ccprc
ip link set ccpc netns $C
ip link set ccprc netns $R
ip link add ccps type veth peer name ccprs
ip link set ccps netns $S
ip link set ccprs netns $R
ip -n $C addr add 10.72.1.1/24 dev ccpc
ip -n $R addr add 10.72.1.254/24 dev ccprc
ip -n $S addr add 10.72.2.2/24 dev ccps
ip -n $R addr add 10.72.2.254/24 dev ccprs
ip -n $C link set ccpc up
ip -n $R link set ccprc up
ip -n $R link set ccprs up
ip -n $S link set ccps up
ip -n $C route add default via 10.72.1.254
ip -n $S route add default via 10.72.2.254
ip netns exec $R sysctl -qw net.ipv4.ip_forward=1
# The bottleneck: the router's link to the server, QUEUE deep.
tc -n $R qdisc add dev ccprs root tbf rate "$RATE" burst 64kb latency "$QUEUE"
# The propagation delay, on the return path (the server's ACKs).
testbed/path.sh $S ccps - "$RTT" - >/dev/null
echo "| client's controller | how | goodput (Mbit/s) | RTT median (ms) | RTT p95 (ms) |"
echo "|---|---|---|---|---|"
for run in cubic vegas; do
    ship=()
    accept=()
    if [ $run = vegas ]; then
        ship=(--peer-cc tcpls_vegas --peer-cc-program "$OUT/bpf/vegas.bpf.o")
        accept=(--accept-cc-programs "$digest")
    fi
    ip netns exec $S "$BIN" serve --listen 0.0.0.0:4443 --perf "${ship[@]}" >/dev/null 2>&1 &
    srv=$!
    sleep 0.5
    tl="$OUT/$run.json"
    ip netns exec $C "$BIN" perf 10.72.2.2:4443 -k --bytes "$BYTES" --repeat 1 --upload \
        --cc cubic "${accept[@]}" --timeline "$tl" --json >"$OUT/$run.report.json"
    kill $srv 2>/dev/null || true
    wait $srv 2>/dev/null || true
    srv=
    how="its own (--cc cubic)"
    [ $run = vegas ] && how="shipped by the server as eBPF (--peer-cc-program)"
    python3 - "$OUT/$run.report.json" "$tl" "$how" <<'PY'
import json, statistics, sys
report = json.load(open(sys.argv[1]))
timeline = json.load(open(sys.argv[2]))
rtts = sorted(r / 1000 for r in timeline.get("rtt_us", []) if r > 0)
p95 = rtts[int(len(rtts) * 0.95)] if rtts else float("nan")
cc = report["connections"][0]["congestion_control"]
mbps = report["tcpls"]["gbps_median"] * 1000
print(f"| {cc} | {sys.argv[3]} | {mbps:.1f} | {statistics.median(rtts):.1f} | {p95:.1f} |")
PY
done
"$BIN" plot "$OUT/cubic.json" "$OUT/vegas.json" \
    --title "upload over $RATE, RTT $RTT, queue $QUEUE: cubic / Vegas shipped as eBPF" \
    -o "$OUT/goodput.png" 2>/dev/null
"$BIN" plot --rtt "$OUT/cubic.json" "$OUT/vegas.json" \
    --title "upload over $RATE, RTT $RTT, queue $QUEUE: smoothed RTT, cubic / Vegas (eBPF)" \
    -o "$OUT/rtt.png" 2>/dev/null
echo "plots: $OUT/goodput.png $OUT/rtt.png"
