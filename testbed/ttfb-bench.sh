#!/usr/bin/env bash
# Time to first response byte of a small GET over an emulated path (issue
# 17): TCPLS (`tcpls get`) full, with TCP Fast Open, resumed from a ticket,
# resumed with Fast Open, and resumed with the request as early data
# (0-RTT, with and without Fast Open), beside TLS 1.3 over TCP (curl with the
# system's OpenSSL, against the same server as a plain TLS client: its
# OpenSSL then keeps the record layer; Debian's `openssl s_server` has no
# Fast Open) full, resumed, and with Fast Open (curl's OpenSSL offers X25519 only; TCPLS's default is the hybrid
# post-quantum X25519MLKEM768, so TCPLS also runs with --groups X25519).
# quinn too (`quic-ttfb` of tcpls-bench: full handshakes, and 0-RTT).
# Each line is the median of RUNS fetches, each a new process
# (curl's resumed line: the second of two URLs in one process, which
# resumes the first one's session). Prints a Markdown table, in
# milliseconds and in round trips.
#
# usage: testbed/ttfb-bench.sh   (root; build first: cargo build --release -p tcpls-cli)
# env:   BIN, RUNS (20), RATE (100mbit), DELAY (25ms one way: 50 ms RTT)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${BIN:-target/release/tcpls}")
QUIC=target/release/quic-ttfb
[ -x "$QUIC" ] || cargo build --release -p tcpls-bench --bin quic-ttfb >&2
QUIC=$(realpath "$QUIC")
RUNS=${RUNS:-20}
RATE=${RATE:-100mbit}
DELAY=${DELAY:-25ms}
P=ttfb
scripts/setup.sh
command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; testbed/netns.sh down $P; rm -rf "$dir"' EXIT
PATHS=1 DELAY1=$DELAY testbed/netns.sh up $P "$RATE" >/dev/null
head -c 1024 /dev/urandom >"$dir/small.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
cli() { ip netns exec $P-cli "$@"; }
ip netns exec $P-srv "$BIN" serve --listen 0.0.0.0:4443 --root "$dir" \
    --cert "$dir/cert.pem" --key "$dir/key.pem" >/dev/null 2>&1 &
ip netns exec $P-srv "$QUIC" server 0.0.0.0:4444 "$dir/quic-cert.pem" >/dev/null 2>&1 &
sleep 1
rtt=$(cli ping -c 5 -i 0.2 -q 10.71.1.2 | awk -F/ '/^rtt/ {print $5}')

median() { sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.1f", m}'; }
# Milliseconds to the first byte of one `tcpls get`, with extra flags.
tcpls_ms() {
    cli "$BIN" get https://10.71.1.2:4443/small.bin -k --json "$@" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["first_byte_seconds"] * 1000)'
}
# The handshake kind, Fast Open and early data of one `tcpls get`.
tcpls_kind() {
    cli "$BIN" get https://10.71.1.2:4443/small.bin -k --json "$@" |
        python3 -c 'import json,sys; r = json.load(sys.stdin)[0]; print(r["handshake"], "tfo" if r["fast_open"] else "no-tfo", "0-rtt " + r["early_data"])'
}
# Milliseconds to the first byte of curl's last URL (each URL's body
# discarded; `-w` prints a line per URL).
curl_ms() {
    local args=()
    for a in "$@"; do
        args+=("$a")
        case $a in https://*) args+=(-o /dev/null) ;; esac
    done
    cli curl -sk --tlsv1.3 -H "Connection: close" -w '%{time_starttransfer}\n' "${args[@]}" |
        tail -1 | awk '{print $1 * 1000}'
}
# "resumed" if curl's last URL reused a TLS session, else "full".
curl_kind() {
    local args=()
    for a in "$@"; do
        args+=("$a")
        case $a in https://*) args+=(-o /dev/null) ;; esac
    done
    if cli curl -vsk --tlsv1.3 -H "Connection: close" "${args[@]}" 2>&1 | grep -q "SSL re-using session ID"; then
        echo resumed
    else
        echo full
    fi
}
line() {
    local name=$1 check=$2
    shift 2
    local v
    v=$(for _ in $(seq "$RUNS"); do "$@"; done | median)
    printf '| %s | %s | %s | %.2f |\n' "$name" "$check" "$v" "$(echo "$v / $rtt" | bc -l)"
}
cache="$dir/sessions.json"
# Warm the kernel's Fast Open cookie for the server address.
cli "$BIN" get https://10.71.1.2:4443/small.bin -k -o /dev/null --no-session-cache

echo "path: $RATE, ping RTT ${rtt} ms; median of $RUNS"
echo
echo "| stack | handshake (checked) | first byte (ms) | RTTs |"
echo "|---|---|---|---|"
line "TCPLS full" "$(tcpls_kind --no-session-cache --no-fast-open)" \
    tcpls_ms --no-session-cache --no-fast-open
line "TCPLS full + TFO" "$(tcpls_kind --no-session-cache)" tcpls_ms --no-session-cache
cli "$BIN" get https://10.71.1.2:4443/small.bin -k -o /dev/null --session-cache "$cache"
ne=(--no-early-data)
line "TCPLS resumed" "$(tcpls_kind --session-cache "$cache" --no-fast-open "${ne[@]}")" \
    tcpls_ms --session-cache "$cache" --no-fast-open "${ne[@]}"
line "TCPLS resumed + TFO" "$(tcpls_kind --session-cache "$cache" "${ne[@]}")" \
    tcpls_ms --session-cache "$cache" "${ne[@]}"
line "TCPLS resumed + 0-RTT" "$(tcpls_kind --session-cache "$cache" --no-fast-open)" \
    tcpls_ms --session-cache "$cache" --no-fast-open
# The default hybrid post-quantum key share makes the ClientHello about
# 1,500 bytes: the SYN carries only its first 1,420 and the server waits
# for the rest, so Fast Open saves nothing. With X25519 alone it fits.
x=(--groups X25519)
line "TCPLS full + TFO, X25519" "$(tcpls_kind --no-session-cache "${x[@]}")" \
    tcpls_ms --no-session-cache "${x[@]}"
cli "$BIN" get https://10.71.1.2:4443/small.bin -k -o /dev/null --session-cache "$cache" "${x[@]}"
line "TCPLS resumed + TFO, X25519" "$(tcpls_kind --session-cache "$cache" "${x[@]}" "${ne[@]}")" \
    tcpls_ms --session-cache "$cache" "${x[@]}" "${ne[@]}"
line "TCPLS resumed + 0-RTT + TFO, X25519" "$(tcpls_kind --session-cache "$cache" "${x[@]}")" \
    tcpls_ms --session-cache "$cache" "${x[@]}"
url=https://10.71.1.2:4443/small.bin

line "TLS 1.3/TCP (curl, OpenSSL) full" "$(curl_kind "$url")" curl_ms "$url"
line "TLS 1.3/TCP (curl, OpenSSL) full + TFO" "$(curl_kind --tcp-fastopen "$url")" \
    curl_ms --tcp-fastopen "$url"
line "TLS 1.3/TCP (curl, OpenSSL) resumed" "$(curl_kind "$url" "$url")" curl_ms "$url" "$url"
line "TLS 1.3/TCP (curl, OpenSSL) resumed + TFO" "$(curl_kind --tcp-fastopen "$url" "$url")" \
    curl_ms --tcp-fastopen "$url" "$url"
# quinn: the client times RUNS connections itself (median, then what they
# were: "full" or "0-rtt accepted").
quic_line() {
    local name=$1
    shift
    local out v check
    out=$(cli "$QUIC" client 10.71.1.2:4444 "$dir/quic-cert.pem" --runs "$RUNS" "$@")
    v=$(echo "$out" | sed -n 1p)
    check=$(echo "$out" | sed -n 2p)
    printf '| %s | %s | %s | %.2f |\n' "$name" "$check" "$v" "$(echo "$v / $rtt" | bc -l)"
}
quic_line "QUIC (quinn) full"
quic_line "QUIC (quinn) resumed + 0-RTT" --zero-rtt
