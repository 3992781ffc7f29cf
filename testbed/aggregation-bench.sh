#!/usr/bin/env bash
# Bandwidth aggregation: one 100 MiB download over two rate-limited paths,
# by TCPLS with each scheduler (one stream, two connections), by the
# kernel's MPTCP (subflow endpoint on path 2), and by single-path TCP; for a
# symmetric (100 + 100 Mbit/s) and an asymmetric (100 + 25) case. Prints
# goodput and its ratio to the sum of the path rates, TCPLS's peak
# reassembly memory, and writes goodput timelines and plots to OUT.
#
# usage: testbed/aggregation-bench.sh    (needs root; build first:
#        cargo build --release -p tcpls-cli)
# env:   BIN (default target/release/tcpls), OUT (default
#        target/aggregation-bench), BYTES (default 100M), KINDS (senders
#        to run, ';'-separated, e.g. "tcpls default;mptcp"; default: TCPLS
#        with its default scheduler and with each named one, MPTCP, TCP)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/tcpls}
OUT=${OUT:-target/aggregation-bench}
BYTES=${BYTES:-100M}
P=ab
mkdir -p "$OUT"
trap 'testbed/netns.sh down $P' EXIT

# run RATE1 RATE2 KIND [SCHED] -> prints "gbps peak"
run() {
    local r1=$1 r2=$2 kind=$3 sched=${4:-}
    testbed/netns.sh up $P "$r1" "$r2"
    local tl="$OUT/${r1}-${r2}-${kind}${sched:+-$sched}.json"
    local srv
    case "$kind" in
    tcpls)
        local flag=()
        [ "$sched" != default ] && flag=(--scheduler "$sched")
        ip netns exec "$P-srv" "$BIN" serve --listen 0.0.0.0:4443 --perf \
            --advertise 10.71.2.2:4443 "${flag[@]}" >/dev/null 2>&1 &
        srv=$!
        ;;
    mptcp)
        for ns in cli srv; do ip -n "$P-$ns" mptcp limits set subflows 2 add_addr_accepted 2; done
        ip -n "$P-cli" mptcp endpoint add 10.71.2.1 dev "${P}c2" subflow
        ip netns exec "$P-srv" "$BIN" mptcp serve --listen 0.0.0.0:5443 >/dev/null 2>&1 &
        srv=$!
        ;;
    tcp)
        ip netns exec "$P-srv" "$BIN" mptcp serve --tcp --listen 0.0.0.0:5443 >/dev/null 2>&1 &
        srv=$!
        ;;
    esac
    sleep 0.5
    local out
    if [ "$kind" = tcpls ]; then
        out=$(timeout 120 ip netns exec "$P-cli" "$BIN" perf 10.71.1.2:4443 -k --bytes "$BYTES" \
            --repeat 1 --connections 2 --bind 10.71.1.1:0 --bind 10.71.2.1:0 --verify \
            --timeline "$tl" --json 2>/dev/null |
            python3 -c "import json,sys; v=json.load(sys.stdin); print(v['tcpls']['gbps_median'], v['peak_reassembly_bytes'])")
    else
        local flag=()
        [ "$kind" = tcp ] && flag=(--tcp)
        out=$(timeout 120 ip netns exec "$P-cli" "$BIN" mptcp perf 10.71.1.2:5443 "${flag[@]}" \
            --bytes "$BYTES" --timeline "$tl" --json 2>/dev/null |
            python3 -c "import json,sys; v=json.load(sys.stdin); print(v['gbps'], '-')")
    fi
    kill "$srv" 2>/dev/null || true
    wait "$srv" 2>/dev/null || true
    testbed/netns.sh down $P
    echo "${out:-0 -}"
}

mbit() { echo "${1%mbit}"; }

echo "| paths (Mbit/s) | sender | goodput (Mbit/s) | ratio to sum of rates | TCPLS peak reassembly |"
echo "|---|---|---|---|---|"
for rates in "100mbit 100mbit" "100mbit 25mbit"; do
    read -r r1 r2 <<<"$rates"
    sum=$(($(mbit "$r1") + $(mbit "$r2")))
    w="weighted:$(mbit "$r1"),$(mbit "$r2")"
    kinds=("tcpls default" "tcpls round-robin" "tcpls lowest-rtt" "tcpls $w" "mptcp" "tcp")
    [ -n "${KINDS:-}" ] && IFS=';' read -r -a kinds <<<"$KINDS"
    for k in "${kinds[@]}"; do
        read -r kind sched <<<"$k"
        read -r gbps peak < <(run "$r1" "$r2" "$kind" "$sched")
        mb=$(python3 -c "print(round($gbps * 1000, 1))")
        ratio=$(python3 -c "print(round($gbps * 1000 / $sum, 3))")
        echo "| $(mbit "$r1") + $(mbit "$r2") | $kind${sched:+ $sched} | $mb | $ratio | $peak |"
    done
    "$BIN" plot "$OUT/${r1}-${r2}-"*.json --title "aggregation, $(mbit "$r1") + $(mbit "$r2") Mbit/s" \
        -o "$OUT/aggregation-$(mbit "$r1")-$(mbit "$r2").png" 2>/dev/null || true
done
