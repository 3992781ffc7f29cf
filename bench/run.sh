#!/usr/bin/env bash
# End-to-end benchmark: TCPLS against plain TCP, OpenSSL and rustls TLS 1.3
# over TCP, and quinn, on loopback, in one run (repetitions interleaved).
# Writes bench/out/bench.{txt,json,png}; extra arguments go to tcpls-bench
# (see `cargo run --release -p tcpls-bench -- --help`), e.g.
#   bench/run.sh --bytes 512M --repeat 5
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
cargo build --release -p tcpls-bench
target/release/tcpls-bench --json "$out/bench.json" --png "$out/bench.png" "$@" | tee "$out/bench.txt"
