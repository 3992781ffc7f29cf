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
cargo publish --workspace --dry-run --allow-dirty
