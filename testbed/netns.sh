#!/usr/bin/env bash
# Two network namespaces joined by disjoint paths (veth pairs), two by
# default, PATHS=3 for three.
#
#   PREFIX-cli                         PREFIX-srv
#   PREFIXc1 10.71.1.1/24 <--path 1--> PREFIXs1 10.71.1.2/24
#   PREFIXc2 10.71.2.1/24 <--path 2--> PREFIXs2 10.71.2.2/24
#   PREFIXc3 10.71.3.1/24 <--path 3--> PREFIXs3 10.71.3.2/24   (PATHS=3)
#
# usage:
#   testbed/netns.sh up   [PREFIX] [RATE1] [RATE2] [RATE3]   e.g. up tb 100mbit 25mbit
#   testbed/netns.sh down [PREFIX]
#   testbed/netns.sh exec PREFIX cli|srv CMD...
#
# `up` first removes what an earlier run may have left (idempotent); RATEs
# (tc tbf, both directions) are optional. Addresses live only inside the
# namespaces. PREFIX (default "tb") must be at most 8 characters so that
# interface names fit the kernel's 15-character limit. Needs root.
set -euo pipefail

cmd=${1:-}
prefix=${2:-tb}
cli="$prefix-cli"
srv="$prefix-srv"

if [ ${#prefix} -gt 8 ]; then
    echo "netns.sh: PREFIX must be at most 8 characters" >&2
    exit 2
fi

down() {
    ip netns del "$cli" 2>/dev/null || true
    ip netns del "$srv" 2>/dev/null || true
}

shape() { # ns dev rate
    tc -n "$1" qdisc replace dev "$2" root tbf rate "$3" burst 256kb latency 50ms
}

case "$cmd" in
up)
    paths=${PATHS:-2}
    down
    ip netns add "$cli"
    ip netns add "$srv"
    ip -n "$cli" link set lo up
    ip -n "$srv" link set lo up
    for i in $(seq 1 "$paths"); do
        ip link add "${prefix}c$i" netns "$cli" type veth peer name "${prefix}s$i" netns "$srv"
        ip -n "$cli" addr add "10.71.$i.1/24" dev "${prefix}c$i"
        ip -n "$srv" addr add "10.71.$i.2/24" dev "${prefix}s$i"
        ip -n "$cli" link set "${prefix}c$i" up
        ip -n "$srv" link set "${prefix}s$i" up
    done
    rates=("${@:3}")
    for i in $(seq 1 "$paths"); do
        rate=${rates[$((i - 1))]:-}
        if [ -n "$rate" ]; then
            shape "$cli" "${prefix}c$i" "$rate"
            shape "$srv" "${prefix}s$i" "$rate"
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
    sed -n '2,21p' "$0" >&2
    exit 2
    ;;
esac
