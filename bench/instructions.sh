#!/usr/bin/env bash
# User-space instructions per GiB moved (both ends), counted by callgrind:
# repeatable whatever else the machine runs, unlike timings. Each line runs
# twice (SMALL and LARGE bytes); the difference removes setup costs.
#   bench/instructions.sh [LINE ...]     (default: tcp openssl rustls tcpls tcpls-acks)
#   BIN=path/to/tcpls-bench bench/instructions.sh ...   (another build, e.g.
#   of an earlier commit, to compare before and after; no build then)
# Kernel work (syscalls, TCP) is not counted: compare with the CPU s/GiB of
# bench/run.sh for that.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
SMALL=${SMALL:-64M}
LARGE=${LARGE:-320M}
lines=("$@")
[ ${#lines[@]} -eq 0 ] && lines=(tcp openssl rustls tcpls tcpls-acks)
if [ -z "${BIN:-}" ]; then
    cargo build --release -p tcpls-bench
    BIN=target/release/tcpls-bench
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count() { # line bytes -> instructions
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" \
        "$BIN" --lines "$1" --bytes "$2" --repeat 1 \
        --handshakes 0 --round-trips 0 -q >/dev/null 2>"$tmp/err" \
        || { cat "$tmp/err" >&2; exit 1; }
    awk '/Collected/ {print $4}' "$tmp/err"
}
to_bytes() { numfmt --from=iec "$1"; }
span=$(( $(to_bytes "$LARGE") - $(to_bytes "$SMALL") ))
printf '%-18s %s\n' line "M instructions per GiB"
for l in "${lines[@]}"; do
    a=$(count "$l" "$SMALL")
    b=$(count "$l" "$LARGE")
    printf '%-18s %d\n' "$l" $(( (b - a) * 1073741824 / span / 1000000 ))
done
