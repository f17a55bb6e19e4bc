#!/usr/bin/env bash
# GPU check: build alexnet_c with CUDA, run tests/test_cuda.py, then benchmark the CUDA
# path against PyTorch. One script for a lent GPU machine (no package index there):
#
#   bash benchmarks/gpu_check.sh            # logs + JSON to $OUT, else benchmarks/results
#
# Steps and time limits (25 + 120 + 10 + 130 + 90 + 100 s: the script ends within 8 minutes):
#   1. build in place, CUDA on, sm_90 only unless ALEXNET_C_CUDA_ARCHS says otherwise
#   2. pytest tests/test_cuda.py (-m cuda)
#   3. compute-sanitizer memcheck over small calls of every kernel and a graph-replayed
#      forward, then racecheck and synccheck over one small call of each kernel that
#      uses shared memory or barriers: the shared-memory hazards that the CPU emulator
#      (csrc/cuda_emu), which CI runs these kernels on, cannot see (skipped where
#      compute-sanitizer is missing or cannot use the GPU)
#   4. benchmarks/bench_gpu.py --per-layer
# Exit status: 0 only when the build, the tests and the benchmark all succeeded; a failed
# test run still lets the benchmark run, so one lease yields both.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RESULTS=${OUT:-$ROOT/benchmarks/results}
mkdir -p "$RESULTS"
export ALEXNET_C_CUDA=1
export ALEXNET_C_CUDA_ARCHS=${ALEXNET_C_CUDA_ARCHS:-90}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
# setup.py finds nvcc through CUDA_HOME first: point it at the toolkit when unset.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi

status=0
step() { printf '\n==== %s (%ds)\n' "$1" "$SECONDS"; }

step "machine"
{
    timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi failed"
    timeout 15 "$PY" -c "import sys, numpy, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
    command -v nvcc >/dev/null && nvcc --version | tail -n 2
} 2>&1 | tee "$RESULTS/machine.txt"

step "build (ALEXNET_C_CUDA_ARCHS=$ALEXNET_C_CUDA_ARCHS)"
if timeout 120 "$PY" setup.py build_ext --inplace >"$RESULTS/build.log" 2>&1; then
    grep -iE "warning|error" "$RESULTS/build.log" | grep -v SetuptoolsDeprecationWarning | head -n 20
    echo "build ok"
else
    tail -n 40 "$RESULTS/build.log"
    echo "BUILD FAILED (full log: build.log)"
    exit 1
fi
timeout 10 "$PY" -c "import alexnet_c as ac; print('cuda_is_available:', ac.cuda_is_available(), ac.cuda_unavailable_reason())"

step "tests/test_cuda.py"
timeout 130 "$PY" -m pytest -q -rs -m cuda tests/test_cuda.py -p no:cacheprovider 2>&1 | tee "$RESULTS/test_cuda.log"
test_rc=${PIPESTATUS[0]}
[ "$test_rc" -eq 0 ] || { echo "TESTS FAILED (status $test_rc)"; status=1; }

step "compute-sanitizer memcheck"
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -n 1 || true)
# Some machines (gVisor) run compute-sanitizer but fail every allocation under it
# ("Device not supported", error 999): a one-call probe first, so that such a machine
# says "could not run here" instead of counting our calls as failures.
# (Status 3 is a memcheck finding, reported below like any other.)
if [ -n "$SANITIZER" ]; then
    timeout 15 "$SANITIZER" --tool memcheck --error-exitcode 3 "$PY" -c \
        "import numpy as np, alexnet_c as ac; ac.relu(np.ones(4, np.float32), device='cuda')" \
        >"$RESULTS/sanitizer_probe.log" 2>&1
    probe_rc=$?
    if [ "$probe_rc" -ne 0 ] && [ "$probe_rc" -ne 3 ]; then
        tail -n 5 "$RESULTS/sanitizer_probe.log"
        echo "compute-sanitizer cannot run a CUDA call here (status $probe_rc): memcheck skipped (not counted as a failure)"
        SANITIZER=
    fi
fi
if [ -n "$SANITIZER" ]; then
    cat >"$RESULTS/sanitize_calls.py" <<'PYEOF'
# Small calls of every CUDA kernel (each GEMM tile through the cost model's choices),
# then a whole forward three times (plain, captured, replayed), under memcheck.
import numpy as np
import alexnet_c as ac
rng = np.random.default_rng(0)
f = lambda *s: rng.standard_normal(s).astype(np.float32)
ac.conv2d(f(1, 3, 19, 21), f(8, 3, 5, 5), f(8), 2, 1, device="cuda")                # small tile
ac.conv2d(f(2, 16, 13, 13), f(64, 8, 3, 3), f(64), 1, 1, groups=2, device="cuda")   # groups
ac.conv2d(f(32, 64, 13, 13), f(192, 64, 3, 3), None, 1, 1, device="cuda")          # bigger tiles
for n in (1, 3, 8, 12, 40):
    ac.linear(f(n, 68), f(33, 68), f(33), device="cuda")
ac.linear(f(5, 37), f(9, 37), None, device="cuda")
ac.conv2d(f(2, 6, 19, 17), f(10, 6, 3, 3), f(10), 1, 2, 2, device="cuda")         # dilated loader
ac.conv2d(f(2, 6, 19, 17), f(10, 6, 3, 3), f(10), 1, 2, 2, device="cuda", precision="tf32")
ac.max_pool2d(f(2, 4, 13, 13), 3, 2, 1, device="cuda")
ac.max_pool2d(f(2, 4, 13, 13), 3, 2, 1, 2, True, True, device="cuda")                # dilation, indices
ac.adaptive_avg_pool2d(f(2, 4, 5, 7), 6, device="cuda")
ac.relu(f(1027), device="cuda")
ac.softmax(f(3, 1000), -1, device="cuda")
ac.log_softmax(f(2, 5, 7), 1, device="cuda")
ac.conv2d(f(2, 16, 13, 13), f(64, 8, 3, 3), f(64), 1, 1, groups=2, device="cuda", precision="tf32")
ac.linear(f(40, 68), f(33, 68), f(33), device="cuda", precision="tf32")
m = ac.AlexNet(num_classes=10).to("cuda")
for precision, calls in (("float32", 3), ("tf32", 2)):   # plain, captured (, replayed)
    m.to("cuda", precision=precision)
    for _ in range(calls):
        m(f(1, 3, 63, 63))
print("sanitize calls done")
PYEOF
    timeout 45 "$SANITIZER" --tool memcheck --error-exitcode 3 --print-limit 20 \
        "$PY" "$RESULTS/sanitize_calls.py" >"$RESULTS/sanitizer.log" 2>&1
    san_rc=$?
    tail -n 25 "$RESULTS/sanitizer.log"
    rm -f "$RESULTS/sanitize_calls.py"
    judge() {   # judge TOOL STATUS LOG LIMIT
        if [ "$2" -eq 0 ]; then
            echo "$1 clean"
        elif [ "$2" -eq 3 ] || grep -qE "ERROR SUMMARY: [1-9]|Traceback" "$3"; then
            echo "${1^^} FAILED (status $2)"; status=1
        elif [ "$2" -eq 124 ]; then
            echo "$1 did not finish within $4 s (not counted as a failure)"
        else
            echo "compute-sanitizer could not run $1 here (status $2; not counted as a failure)"
        fi
    }
    judge memcheck "$san_rc" "$RESULTS/sanitizer.log" 45
    # One small call per kernel with shared memory or barriers: the tiled GEMM (a conv and
    # a batch-40 linear) in both precisions (the TF32 kernel's epilogue patch is a
    # write-after-read hazard within a warp that the emulator cannot see), the streaming
    # linear kernel's warp shuffles, softmax's block reductions.
    RACE_CALLS='import numpy as np, alexnet_c as ac
rng = np.random.default_rng(0)
f = lambda *s: rng.standard_normal(s).astype(np.float32)
ac.conv2d(f(1, 8, 9, 9), f(16, 8, 3, 3), f(16), 1, 1, device="cuda")
ac.linear(f(40, 64), f(33, 64), f(33), device="cuda")
ac.conv2d(f(1, 8, 9, 9), f(40, 8, 3, 3), f(40), 1, 1, device="cuda", precision="tf32")
ac.linear(f(40, 64), f(33, 64), f(33), device="cuda", precision="tf32")
ac.linear(f(3, 68), f(33, 68), None, device="cuda")
ac.softmax(f(2, 1000), -1, device="cuda")
print("race calls done")'
    for tool in racecheck synccheck; do
        timeout 15 "$SANITIZER" --tool "$tool" --error-exitcode 3 --print-limit 10 \
            "$PY" -c "$RACE_CALLS" >"$RESULTS/$tool.log" 2>&1
        tool_rc=$?
        tail -n 8 "$RESULTS/$tool.log"
        judge "$tool" "$tool_rc" "$RESULTS/$tool.log" 15
    done
else
    echo "compute-sanitizer not found: skipped"
fi

step "benchmark"
timeout 100 "$PY" benchmarks/bench_gpu.py --per-layer --out "$RESULTS" 2>&1 | tee "$RESULTS/bench_gpu.log"
bench_rc=${PIPESTATUS[0]}
[ "$bench_rc" -eq 0 ] || { echo "BENCHMARK FAILED (status $bench_rc)"; status=1; }

step "done, status $status"
exit $status
