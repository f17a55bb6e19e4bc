#!/usr/bin/env bash
# The portable C kernels, the fast path on CPUs that are not x86, on aarch64 under
# qemu-user: benchmarks/portable_check.sh, whose status is this job's. The cross
# compiler, its libc and qemu come from Debian's packages; where they cannot be
# installed (not root, no Debian mirror) this prints that the check did NOT run and
# why, and leaves the job's status alone: that is no fault of the code.
set -uo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
LOG=${TMPDIR:-/tmp}/alexnet_c_ci_portable_apt.log
have_tools() {
    command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null \
        && [ -e /usr/aarch64-linux-gnu/include/stdio.h ]
}
if ! have_tools; then
    export DEBIAN_FRONTEND=noninteractive
    { timeout 300 apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" \
        || { timeout 300 apt-get update -q \
             && timeout 300 apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; }; } >"$LOG" 2>&1
fi
if ! have_tools; then
    echo "portable: the aarch64 check did NOT run: could not install ${PACKAGES[*]} ($(tail -n 1 "$LOG" 2>/dev/null))"
    exit 0
fi
out=$(bash benchmarks/portable_check.sh 2>&1)
status=$?
echo "$out"
if [ "$status" -eq 0 ] && ! grep -q "kernel_check: OK, [1-9][0-9]* checks, 1 ISA path(s), best generic" <<<"$out"; then
    echo "portable: the check ran but did not report the generic path's checks" >&2
    status=1
fi
exit "$status"
