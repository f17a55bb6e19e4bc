#!/usr/bin/env bash
# The portable C kernels on another architecture: cross-compiles csrc/cpu with
# tests/c/kernel_check.c for aarch64 and runs it under qemu-user, comparing every
# kernel with its plain reference (no Python needed on the target).
#   Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu qemu-user
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC:-aarch64-linux-gnu-gcc}
QEMU=${QEMU:-qemu-aarch64}
SYSROOT=${SYSROOT:-/usr/aarch64-linux-gnu}
for tool in "$CC" "$QEMU"; do
    command -v "$tool" >/dev/null || { echo "portable_check: $tool not found (apt-get install gcc-aarch64-linux-gnu qemu-user)"; exit 2; }
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# -O3, as setup.py builds the package (at -O2 GCC keeps the generic tile on the stack)
"$CC" -std=c11 -O3 -Wall -Wextra -Werror -fopenmp -Icsrc csrc/cpu/*.c tests/c/kernel_check.c -lm -o "$out/kernel_check"
echo "built with $("$CC" --version | head -1)"
OMP_NUM_THREADS=2 "$QEMU" -L "$SYSROOT" "$out/kernel_check"
