#!/usr/bin/env bash
# The tunnel's overhead: iperf3 on loopback directly, through `tcpls
# tunnel` (client and server, one TCPLS session) and through stunnel (TLS
# 1.3 at both ends), in one run, both directions. Same cipher suite for the
# two tunnels (TLS_AES_128_GCM_SHA256). Installs iperf3 and stunnel4 from
# apt when missing (root).
#
# usage: bench/tunnel-bench.sh            (build first: cargo build --release -p tcpls-cli)
# env:   BIN (default target/release/tcpls), SECONDS_PER_RUN (default 5),
#        REPEAT (default 3: the median is printed)
# Also prints the CPU time the tunnel's two processes (client and server
# side) spent per GB moved, a figure less sensitive than goodput to what
# else the machine runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/tcpls}
T=${SECONDS_PER_RUN:-5}
REPEAT=${REPEAT:-3}
SUITE=TLS_AES_128_GCM_SHA256
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || need+=(stunnel4)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
STUNNEL=$(command -v stunnel4 || command -v stunnel)
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

iperf3 -s -p 5201 >/dev/null 2>&1 &
pids+=($!)
"$BIN" tunnel server --listen 127.0.0.1:5443 --to 127.0.0.1:5201 --cert-out "$tmp/tcpls.pem" 2>/dev/null &
pids+=($!)
tcpls_pids=($!)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
cat >"$tmp/server.conf" <<CONF
foreground = yes
pid =
[s]
accept = 127.0.0.1:5444
connect = 127.0.0.1:5201
cert = $tmp/cert.pem
key = $tmp/key.pem
sslVersionMin = TLSv1.3
ciphersuites = $SUITE
CONF
cat >"$tmp/client.conf" <<CONF
foreground = yes
pid =
[c]
client = yes
accept = 127.0.0.1:5203
connect = 127.0.0.1:5444
sslVersionMin = TLSv1.3
ciphersuites = $SUITE
verifyChain = no
CONF
"$STUNNEL" "$tmp/server.conf" >/dev/null 2>&1 &
pids+=($!)
stunnel_pids=($!)
"$STUNNEL" "$tmp/client.conf" >/dev/null 2>&1 &
pids+=($!)
stunnel_pids+=($!)
sleep 0.5
"$BIN" tunnel client --listen 127.0.0.1:5202 --connect 127.0.0.1:5443 -k --cipher "$SUITE" 2>/dev/null &
pids+=($!)
tcpls_pids+=($!)
sleep 0.5

# CPU time (clock ticks, user + system) of a tunnel's two processes.
cpu_ticks() { # name
    local t=0 p f
    case $1 in tcpls) set -- "${tcpls_pids[@]}" ;; stunnel) set -- "${stunnel_pids[@]}" ;; *) set -- ;; esac
    for p in "$@"; do
        read -r -a f <"/proc/$p/stat"
        t=$((t + f[13] + f[14]))
    done
    echo $t
}
hz=$(getconf CLK_TCK)

run() { # name port [-R] -> "Gbit/s CPU-s/GB" (receiver side; CPU of the tunnel's processes)
    local before after
    before=$(cpu_ticks "$1")
    iperf3 -c 127.0.0.1 -p "$2" -t "$T" -J ${3:+"$3"} >"$tmp/run.json"
    after=$(cpu_ticks "$1")
    python3 - "$tmp/run.json" $((after - before)) "$hz" <<'PY'
import json, sys
end = json.load(open(sys.argv[1]))["end"]["sum_received"]
gb = end["bytes"] / 1e9
print(f'{end["bits_per_second"] / 1e9:.2f}:{int(sys.argv[2]) / int(sys.argv[3]) / gb:.3f}')
PY
}
median() { python3 -c 'import sys; v=sorted(map(float, sys.argv[1:])); print(v[len(v)//2])' "$@"; }

echo "| path | upload (Gbit/s) | download (Gbit/s) | tunnel CPU up (s/GB) | tunnel CPU down (s/GB) | upload runs | download runs |"
echo "|---|---|---|---|---|---|---|"
declare -A up down upcpu downcpu
for r in $(seq 1 "$REPEAT"); do
    # Interleaved, so that a noisy moment hits every path alike.
    for p in direct:5201 tcpls:5202 stunnel:5203; do
        name=${p%%:*}
        u=$(run "$name" "${p##*:}")
        d=$(run "$name" "${p##*:}" -R)
        up[$name]+="${u%%:*} "
        upcpu[$name]+="${u##*:} "
        down[$name]+="${d%%:*} "
        downcpu[$name]+="${d##*:} "
    done
done
for name in direct tcpls stunnel; do
    cu=$(median ${upcpu[$name]})
    cd=$(median ${downcpu[$name]})
    [ $name = direct ] && cu=- && cd=-
    # shellcheck disable=SC2086
    echo "| $name | $(median ${up[$name]}) | $(median ${down[$name]}) | $cu | $cd | ${up[$name]% } | ${down[$name]% } |"
done
