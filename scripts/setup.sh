#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: the `openssl`
# command (interop tests run `openssl s_server` and `openssl s_client`) and
# iproute2 (`ip netns`, `tc`: the testbed's network namespaces) and
# iptables (the testbed's fault injection and delay lines), ping (the delay
# line's test), curl (an unmodified application through `tcpls tunnel`),
# nginx (interop), headless Chromium (a browser against `tcpls serve`),
# the DejaVu font (charts) and the eBPF toolchain (below).
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
# eBPF congestion controllers (feature bpf-cc): the libbpf build needs
# libelf and zlib headers, pkg-config and make; bpf/build.sh compiles the
# example controllers with clang and strips them with llvm-strip, against
# libbpf's BPF headers.
[ -f /usr/include/libelf.h ] || need+=(libelf-dev)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v make >/dev/null 2>&1 || need+=(make)
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v llvm-strip >/dev/null 2>&1 || need+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)

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
