#!/usr/bin/env bash
# Builds the example congestion controllers (bpf/*.bpf.c) and the test
# fixtures (bpf/tests/*.bpf.c) into BPF objects a TCPLS peer can ship:
#   bpf/build.sh [OUT_DIR]      (default: target/bpf)
# Needs clang, llvm-strip and libbpf's headers (scripts/setup.sh installs
# them: clang llvm libbpf-dev). Prints each object with its SHA-256, the
# digest a receiver's --accept-cc-programs allowlist names.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../target/bpf}
mkdir -p "$out"
for tool in clang llvm-strip; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "bpf/build.sh: $tool is missing (scripts/setup.sh installs it)" >&2
        exit 1
    }
done
[ -f /usr/include/bpf/bpf_helpers.h ] || {
    echo "bpf/build.sh: libbpf headers are missing (apt-get install libbpf-dev)" >&2
    exit 1
}
arch=$(uname -m)
case $arch in
    x86_64) target_arch=x86 ;;
    aarch64) target_arch=arm64 ;;
    *) target_arch=$arch ;;
esac
multiarch=$(gcc -print-multiarch 2>/dev/null || echo "$arch-linux-gnu")

for src in "$here"/*.bpf.c "$here"/tests/*.bpf.c; do
    name=$(basename "$src" .c)
    obj=$out/$name.o
    # -g makes the BTF that struct_ops needs; llvm-strip -g then drops the
    # DWARF (most of the size) and keeps .BTF.
    clang -O2 -g -Wall -Werror -target bpf -D__TARGET_ARCH_$target_arch \
        -I"$here/include" -I"/usr/include/$multiarch" -c "$src" -o "$obj.tmp"
    llvm-strip -g "$obj.tmp"
    mv "$obj.tmp" "$obj"
    printf '%s  %s (%s bytes)\n' "$(sha256sum "$obj" | cut -d' ' -f1)" "$obj" "$(stat -c %s "$obj")"
done
