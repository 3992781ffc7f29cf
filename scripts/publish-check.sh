#!/usr/bin/env bash
# Checks that the publishable crates (tcpls-proto, tcpls, tcpls-cli)
# package and build from their packaged sources alone (`cargo publish
# --dry-run`: nothing is uploaded). Needs the crates.io index: skips, with
# a printed reason, where it cannot be reached.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! curl -sf -o /dev/null --max-time 10 https://index.crates.io/config.json; then
    echo "SKIP: publish check: the crates.io index cannot be reached"
    exit 0
fi
# The check builds the packaged crates as registry crates, which cargo
# takes to never change under one version: a second run would reuse the
# first run's unpacked sources and compiled artifacts. Clear both.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rm -rf "$cargo_home"/registry/src/-*/tcpls-* target/package
cargo clean -q -p tcpls-proto -p tcpls -p tcpls-cli
cargo publish --workspace --dry-run --allow-dirty
