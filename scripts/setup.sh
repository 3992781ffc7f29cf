#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: the `openssl`
# command (interop tests run `openssl s_server` and `openssl s_client`) and
# iproute2 (`ip netns`, `tc`: the testbed's network namespaces) and
# iptables (the testbed's fault injection and delay lines), ping (the delay
# line's test), curl (an unmodified application through `tcpls tunnel`),
# nginx (interop), headless Chromium (a browser against `tcpls serve`) and
# the DejaVu font (charts).
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
{ command -v ip && command -v tc; } >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v curl >/dev/null 2>&1 || need+=(curl)
# A TLS server nobody here wrote (interop test of the fallback path).
[ -x /usr/sbin/nginx ] || need+=(nginx)
# A real browser against `tcpls serve` (the plain TLS path).
command -v chromium-headless-shell >/dev/null 2>&1 || need+=(chromium-headless-shell)
# The font of `tcpls plot` and the benchmark's bar chart.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "setup: installing ${need[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
else
    echo "setup: cannot install ${need[*]} without root; tests needing them will skip" >&2
fi
