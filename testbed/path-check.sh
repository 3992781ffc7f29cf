#!/usr/bin/env bash
# Measures what testbed/path.sh delivers, on a fresh namespace pair (one
# path): ping RTT with a delay on both ends and on one, TCP goodput and
# tcpi_rtt at 200 Mbit/s + 10 ms each way (BBR and CUBIC), reordering
# (TCP counters, iperf3 UDP), 1% loss against retransmissions, and that
# `clear` leaves nothing. The figures in docs/testbed.md come from it.
#
# usage: testbed/path-check.sh [PREFIX]     (root; installs iperf3 if missing)
#
# PATH_EMU and TCPLS_NETEM are passed on to path.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prefix=${1:-pc}
cli="$prefix-cli" srv="$prefix-srv" c="${prefix}c1" s="${prefix}s1"

command -v iperf3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
command -v ping >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iputils-ping >/dev/null

trap '"$here/netns.sh" down "$prefix"' EXIT
PATHS=1 "$here/netns.sh" up "$prefix"

path() { "$here/path.sh" "$@" 2>&1 | sed 's/^/    /'; }

# ping from the client: min, median, p99 and max of N replies (the first,
# which waits for address resolution, left out).
ping_stats() { # dst count
    ip netns exec "$cli" ping -n -c "$(($2 + 1))" -i 0.02 "$1" |
        sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | tail -n +2 | sort -n |
        awk '{a[NR]=$1} END {printf "min %.3f  median %.3f  p99 %.3f  max %.3f ms (%d replies)\n",
            a[1], a[int((NR+1)/2)], a[int(NR*0.99+0.5)], a[NR], NR}'
}

# One iperf3 run from the client (extra args: -C cubic, -u ...), with the
# data connection's tcpi_rtt (ss -ti: srtt/rttvar, minrtt) every second.
iperf() { # seconds args...
    local t=$1 srv_pid
    shift
    ip netns exec "$srv" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
    srv_pid=$!
    sleep 0.5
    ip netns exec "$cli" iperf3 -c 10.71.1.2 -p 5201 -t "$t" "$@" >/tmp/path-check.$$ 2>&1 &
    local cli_pid=$!
    for _ in $(seq 2 "$t"); do
        sleep 1
        ip netns exec "$cli" ss -tinH dst 10.71.1.2 | awk '
            /bytes_sent/ { n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^bytes_sent:/) { split($i, b, ":"); n = b[2] }
                if (n >= best) { best = n; line = $0 } }
            END { r = line; sub(/.* rtt:/, "", r); sub(/ .*/, "", r)
                  m = line; sub(/.* minrtt:/, "", m); sub(/ .*/, "", m)
                  print "    tcpi_rtt " r " ms (srtt/rttvar), minrtt " m " ms" }'
    done
    wait "$cli_pid" || true
    wait "$srv_pid" || true
    grep -E 'sender|receiver|out-of-order' /tmp/path-check.$$ | sed 's/^/    /'
    rm -f /tmp/path-check.$$
}

counters() { # ns: TCP reordering and retransmission counters since the last call
    ip netns exec "$1" nstat -z | awk '/TcpOutSegs|TcpRetransSegs|TCPSACKReorder|TCPTSReorder|TCPRenoReorder|TCPOFOQueue/ {printf "    %s %s\n", $1, $2}'
}

echo "== ping, 30 ms one-way on both ends (expected RTT 60 ms)"
path "$cli" "$c" - 30ms
path "$srv" "$s" - 30ms
echo "  IPv4: $(ping_stats 10.71.1.2 200)"
echo "  IPv6: $(ping_stats fd71:1::2 200)"

echo "== ping, 30 ms on the client's end only (expected 30 ms)"
path "$srv" "$s" clear
echo "  IPv4: $(ping_stats 10.71.1.2 200)"

echo "== TCP, 200 Mbit/s and 10 ms each way (expected RTT 20 ms)"
path "$cli" "$c" 200mbit 10ms
path "$srv" "$s" 200mbit 10ms
echo "  ping: $(ping_stats 10.71.1.2 50)"
for cc in bbr cubic; do
    echo "  iperf3 -C $cc, 10 s:"
    ip netns exec "$cli" nstat -n
    ip netns exec "$srv" nstat -n
    iperf 10 -C "$cc"
    echo "  client counters:"
    counters "$cli"
    echo "  server counters:"
    counters "$srv"
done

echo "== UDP order: iperf3 -u 150 Mbit/s (8 MB socket buffers)"
iperf 10 -u -b 150M -l 1400 -w 8M

echo "== 1% loss on the client's end, 200 Mbit/s, 10 ms each way"
path "$cli" "$c" 200mbit 10ms 1%
for cc in bbr cubic; do
    echo "  iperf3 -C $cc, 10 s:"
    ip netns exec "$cli" nstat -n
    iperf 10 -C "$cc"
    counters "$cli"
done

echo "== clear (the delay lines' exit summaries, then what is left)"
path "$cli" "$c" clear
path "$srv" "$s" clear
left=0
for ns in "$cli" "$srv"; do
    for cmd in iptables ip6tables; do
        if ip netns exec "$ns" "$cmd" -t mangle -S | grep tcpls-netem; then left=1; fi
    done
    if tc -n "$ns" qdisc show | grep -E 'tbf|netem'; then left=1; fi
done
if ls /run/tcpls-netem/"$prefix"-* 2>/dev/null; then left=1; fi
if pgrep -a tcpls-netem | grep -v defunct | grep -- "--netns $prefix-"; then left=1; fi
if [ "$left" = 0 ]; then echo "  nothing left"; else echo "  LEFT OVER (above)"; exit 1; fi
