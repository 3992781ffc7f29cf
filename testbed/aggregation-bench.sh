#!/usr/bin/env bash
# Bandwidth aggregation: one download over two paths, by TCPLS (one stream,
# two connections; its default scheduler and the named ones), by the
# kernel's MPTCP (subflow endpoint on path 2) and by single-path TCP over
# path 1, in one run, for each scenario:
#
#   sym      100 + 100 Mbit/s, no added delay
#   asym     100 + 25 Mbit/s, no added delay
#   het      60 Mbit/s at 10 ms RTT + 30 Mbit/s at 60 ms RTT and 0.2 % loss
#   het2     100 Mbit/s at 5 ms RTT + 25 Mbit/s at 80 ms RTT
#   het-win  het, with the client's receive window at 1 MiB (head-of-line
#            blocking across paths; MPTCP gets SO_RCVBUF 1 MiB, a window
#            of 1-1.8 MiB: `tcpls mptcp perf --window`)
#
# Prints goodput, its ratio to the sum of the path rates and TCPLS's peak
# reassembly memory, and writes goodput timelines and a plot per scenario
# to OUT. Delay and loss come from testbed/path.sh (via netns.sh).
#
# usage: testbed/aggregation-bench.sh [SCENARIO...]   (default: all; needs
#        root; build first: cargo build --release -p tcpls-cli)
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

# scenario -> "RATE1 RATE2 DELAY1 DELAY2 LOSS1 LOSS2 WINDOW" (one-way
# delays; "-" for none)
declare -A scenarios=(
    [sym]="100mbit 100mbit - - - - -"
    [asym]="100mbit 25mbit - - - - -"
    [het]="60mbit 30mbit 5ms 30ms - 0.2% -"
    [het2]="100mbit 25mbit 2500us 40ms - - -"
    [het-win]="60mbit 30mbit 5ms 30ms - 0.2% 1M"
)

# run SCENARIO KIND [SCHED] -> prints "gbps peak"
run() {
    local name=$1 kind=$2 sched=${3:-}
    local r1 r2 d1 d2 l1 l2 win
    read -r r1 r2 d1 d2 l1 l2 win <<<"${scenarios[$name]}"
    local env=()
    [ "$d1" != - ] && env+=("DELAY1=$d1")
    [ "$d2" != - ] && env+=("DELAY2=$d2")
    [ "$l1" != - ] && env+=("LOSS1=$l1")
    [ "$l2" != - ] && env+=("LOSS2=$l2")
    env "${env[@]}" testbed/netns.sh up $P "$r1" "$r2" >/dev/null
    local tl="$OUT/$name-${kind}${sched:+-${sched//:/_}}.json"
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
        local wflag=()
        [ "$win" != - ] && wflag=(--window "$win")
        out=$(timeout 180 ip netns exec "$P-cli" "$BIN" perf 10.71.1.2:4443 -k --bytes "$BYTES" \
            --repeat 1 --connections 2 --bind 10.71.1.1:0 --bind 10.71.2.1:0 --verify \
            "${wflag[@]}" --timeline "$tl" --json 2>/dev/null |
            python3 -c "import json,sys; v=json.load(sys.stdin); print(v['tcpls']['gbps_median'], v['peak_reassembly_bytes'])")
    else
        local flag=()
        [ "$kind" = tcp ] && flag=(--tcp)
        [ "$win" != - ] && flag+=(--window "$win")
        out=$(timeout 180 ip netns exec "$P-cli" "$BIN" mptcp perf 10.71.1.2:5443 "${flag[@]}" \
            --bytes "$BYTES" --timeline "$tl" --json 2>/dev/null |
            python3 -c "import json,sys; v=json.load(sys.stdin); print(v['gbps'], '-')")
    fi
    kill "$srv" 2>/dev/null || true
    wait "$srv" 2>/dev/null || true
    testbed/netns.sh down $P
    echo "${out:-0 -}"
}

mbit() { echo "${1%mbit}"; }

names=("$@")
[ ${#names[@]} -eq 0 ] && names=(sym asym het het2 het-win)
echo "| scenario | paths | sender | goodput (Mbit/s) | ratio to sum of rates | TCPLS peak reassembly |"
echo "|---|---|---|---|---|---|"
for name in "${names[@]}"; do
    [ -n "${scenarios[$name]:-}" ] || { echo "unknown scenario $name" >&2; exit 2; }
    read -r r1 r2 d1 d2 l1 l2 win <<<"${scenarios[$name]}"
    sum=$(($(mbit "$r1") + $(mbit "$r2")))
    # e.g. "60 (RTT 2x5ms) + 30 (RTT 2x30ms, loss 0.2%)"
    path_desc() { # rate delay loss
        local extra=()
        [ "$2" != - ] && extra+=("RTT 2x$2")
        [ "$3" != - ] && extra+=("loss $3")
        local IFS=,
        echo "$(mbit "$1")${extra[*]:+ (${extra[*]})}"
    }
    desc="$(path_desc "$r1" "$d1" "$l1") + $(path_desc "$r2" "$d2" "$l2")"
    [ "$win" != - ] && desc="$desc, window $win"
    w="weighted:$(mbit "$r1"),$(mbit "$r2")"
    kinds=("tcpls default" "tcpls round-robin" "tcpls lowest-rtt" "tcpls $w" "mptcp" "tcp")
    [ "$win" != - ] && kinds=("tcpls default" "tcpls round-robin" "mptcp")
    [ -n "${KINDS:-}" ] && IFS=';' read -r -a kinds <<<"$KINDS"
    rm -f "$OUT/$name-"*.json
    for k in "${kinds[@]}"; do
        read -r kind sched <<<"$k"
        read -r gbps peak < <(run "$name" "$kind" "$sched")
        mb=$(python3 -c "print(round($gbps * 1000, 1))")
        ratio=$(python3 -c "print(round($gbps * 1000 / $sum, 3))")
        echo "| $name | $desc | $kind${sched:+ $sched} | $mb | $ratio | $peak |"
    done
    "$BIN" plot "$OUT/$name-"*.json --title "aggregation, $name: $desc" \
        -o "$OUT/aggregation-$name.png" 2>/dev/null || true
done
