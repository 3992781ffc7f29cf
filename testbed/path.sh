#!/usr/bin/env bash
# Path emulation on one device: one-way delay, random loss and a rate
# limit on what DEV sends, inside network namespace NS.
#
# usage:
#   testbed/path.sh NS DEV RATE [DELAY [LOSS]]   e.g. path.sh tb-cli tbc1 30mbit 30ms 0.2%
#   testbed/path.sh NS DEV clear
#
# RATE (tc units: 200mbit), DELAY (30ms, 1.5ms, 200us) and LOSS (percent:
# 0.2%) may each be 0 or - to leave that out. Re-running replaces what an
# earlier run set on DEV; `clear` removes all of it (process, iptables
# rules, qdisc). Several devices at once are independent. Needs root.
#
# Delay and loss: netem when the kernel has it (PATH_EMU=auto, the
# default); otherwise tcpls-netem (crates/tcpls-netem), an NFQUEUE delay
# line, in arrival order. For a veth device whose peer is in a named
# namespace (the testbed's paths), tcpls-netem holds TCP, UDP and all but
# ICMP where they arrive, on the peer, not where they leave DEV: a packet
# held on its sender's egress still counts against its socket's send
# budget (TCP small queues: about 1 ms of data), which caps a local TCP
# sender at a few Mbit/s behind a 10 ms delay; on the peer it has left the
# socket. ICMP (and ICMPv6, neighbour discovery included) is held on DEV's
# egress instead, by a second process: a packet held on arrival already
# carries its kernel receive timestamp, which ping reports, so a ping reply
# held on arrival would not count. The rate limit (tbf on DEV) is the
# qdisc, after the netfilter hooks: held on the peer, packets meet the rate
# limit first and then the delay, as on a real link (serialisation, then
# propagation); ICMP, the other way round. Other devices: everything is
# held on egress by one process (fine for forwarded traffic, slow for
# local TCP senders). With netem: netem, then tbf as its child.
#
# Environment:
#   PATH_EMU=auto|netem|nfqueue   force one delay element (default auto)
#   TCPLS_NETEM=PATH              the tcpls-netem binary (default:
#                                 target/release/tcpls-netem, built if missing)
#   NETEM_RT=N                    its SCHED_FIFO priority (default 10; 0: none)
#
# tcpls-netem runs in the background (pidfile and log in /run/tcpls-netem/,
# removed by `clear`, which prints its exit summary: packets, losses,
# release lateness); it exits by itself when its namespace is deleted or
# its device removed, taking its rules, pidfile and log with it.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
state=/run/tcpls-netem

ns=${1:?NS}
dev=${2:?DEV}
rate=${3:?RATE, or clear}
delay=${4:--}
loss=${5:--}
tag="tcpls-netem:$ns:$dev"

say() { echo "path.sh: $ns/$dev: $*" >&2; }

# A value that means "leave this out".
none() { case "$1" in - | 0 | 0% | 0ms | 0us | 0s | 0bit | 0mbit | 0kbit | 0gbit) return 0 ;; *) return 1 ;; esac; }

# "PEERNS PEERDEV" when DEV is a veth whose peer is in a named namespace.
peer_of() {
    local line idx pns pdev
    line=$(ip -n "$ns" -o -d link show dev "$dev")
    case "$line" in *" veth "*) ;; *) return 0 ;; esac
    idx=$(sed -n 's/^[0-9]*: [^@:]*@if\([0-9]*\):.*/\1/p' <<<"$line")
    pns=$(sed -n 's/.* link-netns \([^ ]*\) .*/\1/p' <<<"$line")
    if [ -z "$idx" ] || [ -z "$pns" ] || ! ip netns list | grep -q "^$pns\b"; then
        return 0
    fi
    pdev=$(ip -n "$pns" -o link show | sed -n "s/^$idx: \([^@:]*\)[@:].*/\1/p")
    if [ -n "$pdev" ]; then echo "$pns $pdev"; fi
}

# Removes our rules (tagged) from one namespace: leftovers of a tcpls-netem
# that was killed before it could remove them itself.
drop_rules() {
    local n=$1 cmd rule
    ip netns list | grep -q "^$n\b" || return 0
    for cmd in iptables ip6tables; do
        { ip netns exec "$n" "$cmd" -w -t mangle -S 2>/dev/null || true; } |
            { grep -- "--comment \"\?$tag\"\? " || true; } |
            sed -e 's/^-A/-D/' -e 's/"//g' | while read -r rule; do
            # shellcheck disable=SC2086
            ip netns exec "$n" "$cmd" -w -t mangle $rule
        done
    done
}

# Whether PID runs: exists and is no zombie (the process's parent, once
# this script has exited, is init, which may take a while to reap it).
running() {
    local state
    state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$state" != Z ]
}

# Stops one of DEV's tcpls-netem processes (NAME: ingress or egress, where
# it takes the packets), printing its exit summary.
stop_one() {
    local pidfile="$state/$ns.$dev.$1.pid" logfile="$state/$ns.$dev.$1.log" pid
    if [ -f "$pidfile" ]; then
        pid=$(cat "$pidfile")
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = tcpls-netem ]; then
            kill -TERM "$pid"
            for _ in $(seq 100); do
                running "$pid" || break
                sleep 0.05
            done
            if running "$pid"; then
                say "tcpls-netem $pid did not exit; killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$pidfile"
    fi
    if [ -f "$logfile" ]; then
        grep -o 'exit (.*' "$logfile" | sed "s|^|path.sh: $ns/$dev: tcpls-netem $1 |" >&2 || true
        rm -f "$logfile"
    fi
}

clear() {
    stop_one ingress
    stop_one egress
    drop_rules "$ns"
    local peer
    peer=$(peer_of 2>/dev/null || true)
    if [ -n "$peer" ]; then drop_rules "${peer%% *}"; fi
    tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
}

netem_bin() {
    if [ -n "${TCPLS_NETEM:-}" ]; then
        echo "$TCPLS_NETEM"
        return
    fi
    local target=${CARGO_TARGET_DIR:-target}
    case "$target" in /*) ;; *) target="$repo/$target" ;; esac
    if [ ! -x "$target/release/tcpls-netem" ]; then
        say "building tcpls-netem (cargo build --release -p tcpls-netem)"
        (cd "$repo" && cargo build --release -p tcpls-netem >&2)
    fi
    echo "$target/release/tcpls-netem"
}

# Starts one tcpls-netem (NAME RUN_NS HOOK_DEV HOOK SELECT) and waits
# until its rules are in place; on failure, removes everything and exits.
start_one() {
    local name=$1 run_ns=$2 hdev=$3 hook=$4 select=$5 bin pid
    local pidfile="$state/$ns.$dev.$name.pid" logfile="$state/$ns.$dev.$name.log"
    bin=$(netem_bin)
    mkdir -p "$state"
    # setsid: not stopped by the caller's terminal. All three standard
    # streams redirected: a caller reading this script's output to the end
    # must not wait for the background process too. The process removes
    # its pidfile at exit, and its log too when it exits because its
    # namespace or device went away.
    # shellcheck disable=SC2094 # the log is only written, by both
    setsid ip netns exec "$run_ns" "$bin" --dev "$hdev" --hook "$hook" --select "$select" \
        --delay "$delay" --loss "$loss" --netns "$run_ns" --pidfile "$pidfile" \
        --log "$logfile" --tag "$tag" --rt-priority "${NETEM_RT:-10}" -v \
        </dev/null >/dev/null 2>>"$logfile" &
    pid=$!
    for _ in $(seq 100); do
        [ -s "$pidfile" ] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            say "tcpls-netem failed:"
            cat "$logfile" >&2
            clear
            exit 1
        fi
        sleep 0.05
    done
    say "tcpls-netem did not start within 5 s:"
    cat "$logfile" >&2
    clear
    exit 1
}

# The delay line(s): see the header for why there are two on a veth.
start_delay_line() {
    local peer
    none "$delay" && delay=0
    none "$loss" && loss=0
    peer=$(peer_of)
    if [ -n "$peer" ]; then
        start_one ingress "${peer%% *}" "${peer#* }" ingress non-icmp
        start_one egress "$ns" "$dev" egress icmp
    else
        say "not a veth with a peer in a named namespace: delaying on egress (local TCP senders will be slow)"
        start_one egress "$ns" "$dev" egress all
    fi
}

tbf() { # parent...
    tc -n "$ns" qdisc add dev "$dev" "$@" tbf rate "$rate" burst 256kb latency 50ms
}

# clear works when the device or its namespace is gone too (a process
# killed with SIGKILL leaves its pidfile).
if [ "$rate" = clear ]; then
    clear
    exit 0
fi
ip -n "$ns" link show dev "$dev" >/dev/null
clear

if none "$delay" && none "$loss"; then
    if ! none "$rate"; then tbf root; fi
    exit 0
fi

emu=${PATH_EMU:-auto}
netem_args=()
if ! none "$delay"; then netem_args+=(delay "$delay"); fi
if ! none "$loss"; then netem_args+=(loss "$loss"); fi
# Whether the kernel has netem: adding a bare one succeeds. Then the real
# parameters, whose errors are the user's, not a reason to fall back.
if [ "$emu" != nfqueue ] && tc -n "$ns" qdisc add dev "$dev" root handle 1: netem 2>/dev/null; then
    if ! tc -n "$ns" qdisc change dev "$dev" root handle 1: netem "${netem_args[@]}" limit 100000; then
        clear
        exit 1
    fi
    # netem first, then the rate limit as its child.
    if ! none "$rate"; then tbf parent 1:1 handle 10:; fi
    exit 0
fi
if [ "$emu" = netem ]; then
    say "PATH_EMU=netem but this kernel has no netem"
    exit 1
fi
if ! none "$rate"; then tbf root; fi
start_delay_line
