#!/usr/bin/env bash
# Two network namespaces joined by disjoint paths (veth pairs), two by
# default, PATHS=3 for three.
#
#   PREFIX-cli                         PREFIX-srv
#   PREFIXc1 10.71.1.1/24 <--path 1--> PREFIXs1 10.71.1.2/24
#            fd71:1::1/64              fd71:1::2/64
#   PREFIXc2 10.71.2.1/24 <--path 2--> PREFIXs2 10.71.2.2/24
#            fd71:2::1/64              fd71:2::2/64
#   PREFIXc3 10.71.3.1/24 <--path 3--> PREFIXs3 10.71.3.2/24   (PATHS=3)
#            fd71:3::1/64              fd71:3::2/64
#
# usage:
#   testbed/netns.sh up   [PREFIX] [RATE1] [RATE2] [RATE3]   e.g. up tb 100mbit 25mbit
#   DELAY1=30ms LOSS2=0.2% testbed/netns.sh up tb 100mbit 25mbit
#   testbed/netns.sh down [PREFIX]
#   testbed/netns.sh exec PREFIX cli|srv CMD...
#
# Per path N (1-3), each optional and applied in both directions
# (testbed/path.sh on both ends):
#   RATEn   rate limit (tc tbf), e.g. 100mbit; a positional RATE wins
#   DELAYn  one-way delay, e.g. 30ms (so the path's RTT is 2 x DELAYn)
#   LOSSn   random loss per direction, e.g. 0.2%
# Delay and loss use netem where the kernel has it, tcpls-netem otherwise
# (see path.sh and docs/testbed.md).
#
# Both namespaces get net.ipv4.tcp_fastopen=3 (TCP Fast Open, client and
# server).
#
# `up` first removes what an earlier run may have left (idempotent); `down`
# stops the delay processes and removes the namespaces. Addresses live
# only inside the namespaces; the IPv6 ones are added without duplicate
# address detection, usable at once. PREFIX (default "tb") must be at most
# 8 characters so that interface names fit the kernel's 15-character
# limit. Needs root.
set -euo pipefail

cmd=${1:-}
prefix=${2:-tb}
cli="$prefix-cli"
srv="$prefix-srv"

if [ ${#prefix} -gt 8 ]; then
    echo "netns.sh: PREFIX must be at most 8 characters" >&2
    exit 2
fi

path_sh="$(dirname "$0")/path.sh"

down() {
    # Delay processes first (path.sh keeps a pidfile per shaped device);
    # they would also exit by themselves once their namespace is gone.
    local ns f dev
    for ns in "$cli" "$srv"; do
        for f in /run/tcpls-netem/"$ns".*.pid; do # NS.DEV.WHERE.pid
            [ -e "$f" ] || continue
            dev=${f##*/"$ns".}
            dev=${dev%.*.pid}
            "$path_sh" "$ns" "$dev" clear 2>/dev/null || true
        done
    done
    ip netns del "$cli" 2>/dev/null || true
    ip netns del "$srv" 2>/dev/null || true
}

case "$cmd" in
up)
    paths=${PATHS:-2}
    down
    ip netns add "$cli"
    ip netns add "$srv"
    ip -n "$cli" link set lo up
    ip -n "$srv" link set lo up
    # TCP Fast Open for clients and servers (per namespace; the host's
    # default, 1, is client only).
    ip netns exec "$cli" sysctl -qw net.ipv4.tcp_fastopen=3
    ip netns exec "$srv" sysctl -qw net.ipv4.tcp_fastopen=3
    for i in $(seq 1 "$paths"); do
        ip link add "${prefix}c$i" netns "$cli" type veth peer name "${prefix}s$i" netns "$srv"
        ip -n "$cli" addr add "10.71.$i.1/24" dev "${prefix}c$i"
        ip -n "$srv" addr add "10.71.$i.2/24" dev "${prefix}s$i"
        ip -n "$cli" addr add "fd71:$i::1/64" dev "${prefix}c$i" nodad
        ip -n "$srv" addr add "fd71:$i::2/64" dev "${prefix}s$i" nodad
        ip -n "$cli" link set "${prefix}c$i" up
        ip -n "$srv" link set "${prefix}s$i" up
    done
    rates=("${@:3}")
    for i in $(seq 1 "$paths"); do
        rate_var="RATE$i" delay_var="DELAY$i" loss_var="LOSS$i"
        rate=${rates[$((i - 1))]:-${!rate_var:--}}
        delay=${!delay_var:--}
        loss=${!loss_var:--}
        if [ "$rate$delay$loss" != "---" ]; then
            "$path_sh" "$cli" "${prefix}c$i" "$rate" "$delay" "$loss"
            "$path_sh" "$srv" "${prefix}s$i" "$rate" "$delay" "$loss"
        fi
    done
    ;;
down)
    down
    ;;
exec)
    side=${3:?cli or srv}
    shift 3
    exec ip netns exec "$prefix-$side" "$@"
    ;;
*)
    sed -n '2,32p' "$0" >&2
    exit 2
    ;;
esac
