#!/usr/bin/env bash
# Two TCPLS servers behind one virtual address, kube-proxy style: a router
# namespace DNATs new connections to the virtual address onto the two
# backends in turn (iptables `statistic`; this kernel has no IPVS).
#
#   PREFIX-cli 10.73.0.1 --- 10.73.0.2 PREFIX-lb 10.73.1.1 --- 10.73.1.2 PREFIX-b1
#                                                10.73.2.1 --- 10.73.2.2 PREFIX-b2
#   virtual address 10.73.0.100:4443 -> 10.73.1.2:4443 / 10.73.2.2:4443
#
# Each backend must advertise its own address (`serve --advertise
# 10.73.N.2:4443`): a join carries a token only the backend holding the
# session knows, so it must not go through the virtual address (where it
# would reach either backend). Connections to the backends' own addresses
# are routed, not translated.
#
# usage: testbed/lb.sh up [PREFIX]   |   testbed/lb.sh down [PREFIX]
# Needs root. `up` replaces a testbed of the same prefix.
set -euo pipefail
cmd=${1:?up or down}
p=${2:-lb}
VIP=10.73.0.100
PORT=4443

down() {
    for ns in cli lb b1 b2; do ip netns del "$p-$ns" 2>/dev/null || true; done
}

case "$cmd" in
up)
    down
    for ns in cli lb b1 b2; do
        ip netns add "$p-$ns"
        ip -n "$p-$ns" link set lo up
    done
    ip link add "${p}c" netns "$p-cli" type veth peer name "${p}l0" netns "$p-lb"
    ip -n "$p-cli" addr add 10.73.0.1/24 dev "${p}c"
    ip -n "$p-lb" addr add 10.73.0.2/24 dev "${p}l0"
    ip -n "$p-cli" link set "${p}c" up
    ip -n "$p-lb" link set "${p}l0" up
    ip -n "$p-cli" route add default via 10.73.0.2
    for b in 1 2; do
        ip link add "${p}l$b" netns "$p-lb" type veth peer name "${p}b$b" netns "$p-b$b"
        ip -n "$p-lb" addr add "10.73.$b.1/24" dev "${p}l$b"
        ip -n "$p-b$b" addr add "10.73.$b.2/24" dev "${p}b$b"
        ip -n "$p-lb" link set "${p}l$b" up
        ip -n "$p-b$b" link set "${p}b$b" up
        ip -n "$p-b$b" route add default via "10.73.$b.1"
    done
    ip netns exec "$p-lb" sysctl -qw net.ipv4.ip_forward=1
    # The virtual address is answered by the router (ARP), then each new
    # connection goes to backend 1 or 2 in turn; conntrack keeps it there.
    ip -n "$p-lb" addr add "$VIP/32" dev "${p}l0"
    ip netns exec "$p-lb" iptables -t nat -A PREROUTING -d "$VIP" -p tcp --dport "$PORT" \
        -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination "10.73.1.2:$PORT"
    ip netns exec "$p-lb" iptables -t nat -A PREROUTING -d "$VIP" -p tcp --dport "$PORT" \
        -j DNAT --to-destination "10.73.2.2:$PORT"
    ;;
down)
    down
    ;;
*)
    sed -n '2,20p' "$0" >&2
    exit 2
    ;;
esac
