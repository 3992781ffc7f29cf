#!/usr/bin/env bash
# Failover benchmark: the same faults on TCPLS and on the kernel's MPTCP,
# side by side. For each scenario a 100 MiB download runs over path 1 of
# the testbed (200 Mbit/s per path) while the fault hits path 1 after 1.5 s
# (or, for "rotate", all but one of 3 paths are blackholed, rotating every
# second). Reports whether the transfer completed and two recovery times
# from the 10 ms goodput samples: "stall", the longest run with no byte at
# all, and "degraded", the longest run below 10% of the run's median rate
# (MPTCP's reinjection trickles a few bytes through an outage). Writes the
# timelines and goodput plots (tcpls plot) to OUT.
#
# usage: testbed/failover-bench.sh            (needs root; build first:
#        cargo build --release -p tcpls-cli)
# env:   BIN (default target/release/tcpls), OUT (default
#        target/failover-bench), SCENARIOS (default "rst blackhole down rotate"),
#        BYTES (default 100M), ROTATE="PERIOD DURATION" (default "1 12";
#        "5 60" with BYTES=1500M is the 60-second run)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/tcpls}
BYTES=${BYTES:-100M}
read -r ROT_PERIOD ROT_DURATION <<<"${ROTATE:-1 12}"
OUT=${OUT:-target/failover-bench}
SCENARIOS=${SCENARIOS:-rst blackhole down rotate}
P=fb
mkdir -p "$OUT"
trap 'testbed/netns.sh down $P; pkill -f "$BIN (mptcp )?serve" || true' EXIT

run() { # scenario proto -> prints "completed stall_ms"
    local scen=$1 proto=$2 paths=2
    [ "$scen" = rotate ] && paths=3
    PATHS=$paths testbed/netns.sh up $P 200mbit 200mbit 200mbit
    local tl="$OUT/$scen-$proto.json"
    rm -f "$tl"
    if [ "$proto" = mptcp ]; then
        for ns in cli srv; do ip -n "$P-$ns" mptcp limits set subflows 4 add_addr_accepted 4; done
        for i in $(seq 2 "$paths"); do
            ip -n "$P-cli" mptcp endpoint add "10.71.$i.1" dev "${P}c$i" subflow
        done
        ip netns exec "$P-srv" "$BIN" mptcp serve --listen 0.0.0.0:5443 >/dev/null 2>&1 &
    else
        ip netns exec "$P-srv" "$BIN" serve --listen 0.0.0.0:4443 --perf \
            --advertise 10.71.2.2:4443 --advertise 10.71.3.2:4443 >/dev/null 2>&1 &
    fi
    local srv=$!
    sleep 0.5
    if [ "$scen" = rotate ]; then
        testbed/rotate.sh $P 3 "$ROT_PERIOD" "$ROT_DURATION" >/dev/null &
    else
        (sleep 1.5; testbed/fault.sh $P 1 "$scen") &
    fi
    local inj=$!
    local binds=()
    for i in $(seq 1 "$paths"); do binds+=(--bind "10.71.$i.1:0"); done
    local ok=no
    if [ "$proto" = mptcp ]; then
        timeout $((ROT_DURATION + 60)) ip netns exec "$P-cli" "$BIN" mptcp perf 10.71.1.2:5443 --bytes "$BYTES" \
            --timeline "$tl" --json >/dev/null 2>&1 && ok=yes
    else
        timeout $((ROT_DURATION + 60)) ip netns exec "$P-cli" "$BIN" perf 10.71.1.2:4443 -k --bytes "$BYTES" --repeat 1 \
            --connections "$paths" "${binds[@]}" --keepalive 100ms --verify \
            --timeline "$tl" --json >/dev/null 2>&1 && ok=yes
    fi
    kill "$inj" 2>/dev/null || true
    wait "$inj" 2>/dev/null || true
    kill "$srv" 2>/dev/null || true
    wait "$srv" 2>/dev/null || true
    testbed/netns.sh down $P
    local stall="- -"
    if [ -f "$tl" ]; then
        stall=$(python3 - "$tl" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
b = t["bytes"]
nz = [i for i, x in enumerate(b) if x > 0]
body = b[nz[0]:nz[-1] + 1] if nz else []
med = sorted(body)[len(body) // 2] if body else 0
run = low = 0
for x in body:
    run = run + 1 if x < med / 10 else 0
    low = max(low, run)
print(t["max_stall_ms"], low * t["interval_ms"])
PY
)
    fi
    echo "$ok $stall"
}

echo "| scenario | TCPLS completed | TCPLS stall / degraded (ms) | MPTCP completed | MPTCP stall / degraded (ms) |"
echo "|---|---|---|---|---|"
for scen in $SCENARIOS; do
    read -r tok tstall tlow < <(run "$scen" tcpls)
    read -r mok mstall mlow < <(run "$scen" mptcp)
    echo "| $scen | $tok | $tstall / $tlow | $mok | $mstall / $mlow |"
    mark=(--mark 1.5)
    [ "$scen" = rotate ] && mark=()
    "$BIN" plot "$OUT/$scen-tcpls.json" "$OUT/$scen-mptcp.json" "${mark[@]}" \
         --title "$scen ($BYTES download, 200 Mbit/s paths)" -o "$OUT/$scen.png" 2>/dev/null || true
done
