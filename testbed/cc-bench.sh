#!/usr/bin/env bash
# A receiver switching its sender's congestion controller over the secure
# channel (TRANSPORT_OPTION, issue 18): one download over a lossy path
# from a server whose own choice is cubic, once as is and once with the
# client asking for bbr (`perf --peer-cc bbr`), plus reno for reference.
# Prints goodput and the server connection's controller as the client
# asked it, writes the timelines and a goodput plot to OUT.
#
# usage: testbed/cc-bench.sh   (root; build first: cargo build --release -p tcpls-cli)
# env:   BIN, OUT (default target/cc-bench), BYTES (default 60M),
#        RATE (50mbit), DELAY (20ms one way), LOSS (1%)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/tcpls}
OUT=${OUT:-target/cc-bench}
BYTES=${BYTES:-60M}
RATE=${RATE:-50mbit}
DELAY=${DELAY:-20ms}
LOSS=${LOSS:-1%}
P=cc
mkdir -p "$OUT"
trap 'testbed/netns.sh down $P' EXIT
PATHS=1 DELAY1=$DELAY LOSS1=$LOSS testbed/netns.sh up $P "$RATE" >/dev/null
ip netns exec $P-srv "$BIN" serve --listen 0.0.0.0:4443 --perf --cc cubic >/dev/null 2>&1 &
srv=$!
sleep 0.5
echo "| sender's controller | how | goodput (Mbit/s) |"
echo "|---|---|---|"
for ask in none bbr reno; do
    flag=()
    [ "$ask" != none ] && flag=(--peer-cc "$ask")
    tl="$OUT/$ask.json"
    mbps=$(ip netns exec $P-cli "$BIN" perf 10.71.1.2:4443 -k --bytes "$BYTES" --repeat 1 \
        "${flag[@]}" --timeline "$tl" --json | python3 -c '
import json, sys
v = json.load(sys.stdin)
print(round(v["tcpls"]["gbps_median"] * 1000, 1))')
    how="server's own (--cc cubic)"
    [ "$ask" != none ] && how="asked by the client (--peer-cc $ask)"
    name=$ask
    [ "$ask" = none ] && name=cubic
    echo "| $name | $how | $mbps |"
done
kill $srv 2>/dev/null || true
"$BIN" plot "$OUT/none.json" "$OUT/bbr.json" "$OUT/reno.json" \
    --title "download over $RATE, RTT 2x$DELAY, loss $LOSS: sender cubic / bbr / reno" \
    -o "$OUT/cc.png" 2>/dev/null || true
echo "plot: $OUT/cc.png"
