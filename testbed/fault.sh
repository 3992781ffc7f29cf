#!/usr/bin/env bash
# Fault injection on one path of a testbed made by netns.sh.
#
# usage: testbed/fault.sh PREFIX PATH FAULT
#   blackhole    drop every packet of the path, both directions (iptables DROP)
#   rst          answer every TCP segment on the path with a reset, at both
#                ends (REJECT --reject-with tcp-reset; resets themselves pass,
#                or each end's rule would swallow the other's reset)
#   down         take the path's link down
#   hello-drop   a middlebox that drops TLS ClientHellos carrying the TCPLS
#                extension (iptables -m string on its bytes), at the server
#   hello-reset  the same, answering them with a TCP reset
#   join-drop    a middlebox that drops join hellos (the tcpls_join
#                extension), at the server: joins over the path get no answer
#   restore      undo all of the above for that path
# Needs root. Rules are tagged with a comment so `restore` removes only them.
set -euo pipefail

prefix=${1:?PREFIX}
path=${2:?PATH number}
fault=${3:?blackhole, rst, down, hello-drop, hello-reset, join-drop or restore}
cli="$prefix-cli"
srv="$prefix-srv"
tag="tcpls-fault-$path"
# The `tcpls` extension as a default client sends it: type 0xff54, length
# 55, version 1, then the first parameter's id (1) and length (8).
# (crates/tcpls-proto/src/wire/extension.rs)
tcpls_hello='|ff54 0037 0001 0001 0008|'
# A join hello: supported_versions (TLS 1.3 only), then the tcpls_join
# extension (0xff55) with its 32-byte token (wire/join.rs).
join_hello='|002b 0003 0203 04ff 5500 20|'

rules() { # ns dev action...
    local ns=$1 dev=$2
    shift 2
    ip netns exec "$ns" iptables -A INPUT -i "$dev" "$@" -m comment --comment "$tag"
    ip netns exec "$ns" iptables -A OUTPUT -o "$dev" "$@" -m comment --comment "$tag"
}

clear_rules() { # ns
    local ns=$1
    ip netns exec "$ns" iptables -S | { grep -- "--comment $tag" || true; } | sed 's/^-A/-D/' |
        while read -r rule; do
            # shellcheck disable=SC2086
            ip netns exec "$ns" iptables $rule
        done
}

case "$fault" in
blackhole)
    rules "$srv" "${prefix}s$path" -j DROP
    ;;
rst)
    for side in cli:c srv:s; do
        ns="$prefix-${side%%:*}"
        dev="${prefix}${side##*:}$path"
        ip netns exec "$ns" iptables -A INPUT -i "$dev" -p tcp ! --tcp-flags RST RST \
            -j REJECT --reject-with tcp-reset -m comment --comment "$tag"
    done
    ;;
down)
    ip -n "$cli" link set "${prefix}c$path" down
    ;;
join-drop)
    ip netns exec "$srv" iptables -A INPUT -i "${prefix}s$path" -p tcp \
        -m string --algo bm --hex-string "$join_hello" -j DROP -m comment --comment "$tag"
    ;;
hello-drop | hello-reset)
    action=(-j DROP)
    [ "$fault" = hello-reset ] && action=(-j REJECT --reject-with tcp-reset)
    ip netns exec "$srv" iptables -A INPUT -i "${prefix}s$path" -p tcp \
        -m string --algo bm --hex-string "$tcpls_hello" "${action[@]}" -m comment --comment "$tag"
    ;;
restore)
    clear_rules "$cli"
    clear_rules "$srv"
    ip -n "$cli" link set "${prefix}c$path" up
    ;;
*)
    sed -n '2,16p' "$0" >&2
    exit 2
    ;;
esac
