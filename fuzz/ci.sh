#!/usr/bin/env bash
# Builds the fuzz crate and runs every target briefly, coverage-guided, on
# the committed seeds (fuzz/seeds/<target>/) and regression inputs
# (fuzz/regressions/<target>/, where there are any), failing on the first
# crash. Not part of CI (a cold cargo-fuzz build takes over 12 minutes
# there): CI's `cargo test --workspace` runs crates/tcpls-fuzz's
# fuzz_smoke test instead (the same target bodies on the seeds and blind
# mutations of them). The long campaign is run by hand (see README.md and
# docs/security.md).
#
#   fuzz/ci.sh            # 20 s per target
#   FUZZ_SECONDS=30 fuzz/ci.sh
#
# Needs cargo-fuzz (installed if missing) and a stable toolchain:
# RUSTC_BOOTSTRAP=1 unlocks the nightly-only flags cargo-fuzz passes.
set -euo pipefail

cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Longest input per target: the session targets take programs and record
# flights, the codec targets are small.
declare -A max_len=(
    [frames]=4096
    [extensions]=512
    [record_header]=16
    [join_probe]=4096
    [session_recv]=20000
    [session_multi]=4096
)

start=$(date +%s)
cargo fuzz build
for t in frames extensions record_header join_probe session_recv session_multi; do
    # A scratch corpus per run, so CI does not depend on (or grow) the
    # git-ignored fuzz/corpus/; the seeds are read, never written.
    work=$(mktemp -d)
    echo "== $t (${seconds}s)"
    # libFuzzer exits non-zero on a crash, leak, timeout or OOM; the
    # reproducer goes to fuzz/artifacts/<t>/.
    dirs=("seeds/$t")
    if [ -d "regressions/$t" ]; then dirs+=("regressions/$t"); fi
    if ! cargo fuzz run "$t" "$work" "${dirs[@]}" -- \
        -max_total_time="$seconds" -max_len="${max_len[$t]}" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>"$work.log"; then
        tail -n 60 "$work.log"
        echo "fuzz target $t failed; see fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^#[0-9]+.*DONE' "$work.log" || true
    rm -rf "$work" "$work.log"
done
echo "fuzz CI: all targets passed in $(($(date +%s) - start)) s"
