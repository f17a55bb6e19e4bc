#!/usr/bin/env bash
# The CUDA path without a GPU: csrc/cuda built for the CPU emulator (ALEXNET_C_CUDA=emulate,
# csrc/cuda_emu), then tests/test_cuda.py (every CUDA kernel and the device-resident net
# against torch in float64) and tests/test_cuda_emulator.py (the emulator's own checks and
# the CUDA error paths), once per thread order of the emulator: index order and reverse,
# so that a missing barrier shows whichever thread would read too early.
#
# What this proves and what it does not: the kernels' arithmetic, indexing, bounds,
# barriers, shuffles, graph capture and error handling are right as the CUDA programming
# model defines them. Speed, occupancy and anything a real GPU does beyond the model
# need one: benchmarks/gpu_check.sh.
#
# Usage: bash .ci/emulated_cuda.sh [extra pytest arguments]
#   EMU_SCHEDULES="forward reverse"   the thread orders to run (ALEXNET_C_EMU_SCHEDULE)
#   EMU_KEEP=1                        keep the temporary tree (its path is printed)
# Runtime: ~9 min on 2 cores (build ~40 s, ~250 s per order). No GPU or network needed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
# shellcheck source=scratch_tree.sh
source "$ROOT/.ci/scratch_tree.sh"
scratch_tree alexnet_c_emulated_cuda "${EMU_KEEP:-0}"

cd "$WORK"
echo "emulated_cuda: building in $WORK"
ALEXNET_C_CUDA=emulate "$PYTHON" setup.py -q build_ext --inplace >"$WORK/build.log" 2>&1 || {
    cat "$WORK/build.log"; echo "emulated_cuda: build failed" >&2; exit 1; }
# The emulator objects compile with -Wall -Wextra: a warning there is a finding too.
if grep -E "(warning|error):" "$WORK/build.log" | grep -v SetuptoolsDeprecationWarning; then
    echo "emulated_cuda: the build has warnings (above)" >&2
    exit 1
fi

# This tree's build comes first, ahead of any pip-installed alexnet_c; the tests' child
# processes inherit the path.
export PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"
got="$(cd / && "$PYTHON" -c 'import alexnet_c as ac; from alexnet_c import _C; import os
print(os.path.dirname(_C.__file__), _C.CUDA_EMULATED, ac.cuda_is_available())')"
if [[ "$got" != "$WORK/alexnet_c 1 True" ]]; then
    echo "emulated_cuda: expected the emulator build of $WORK/alexnet_c with CUDA available, got: $got" >&2
    exit 1
fi

status=0
for schedule in ${EMU_SCHEDULES:-forward reverse}; do
    echo "emulated_cuda: pytest, thread order $schedule"
    start=$SECONDS
    set +e
    ALEXNET_C_EMU_SCHEDULE="$schedule" "$PYTHON" -m pytest -q -p no:cacheprovider -rs \
        tests/test_cuda.py tests/test_cuda_emulator.py "$@"
    rc=$?
    set -e
    echo "emulated_cuda: thread order $schedule: pytest exit status $rc after $((SECONDS - start)) s"
    [[ $rc -eq 0 ]] || status=$rc
done
exit $status
