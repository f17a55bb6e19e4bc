"""The CUDA emulator (csrc/cuda_emu) and the CUDA error paths only it can reach.

- Each check of the emulator fires on a kernel or a runtime call that is wrong in
  exactly that way (csrc/cuda_emu/selftest.cu), and its correct twin passes: a missing
  barrier, in either thread order; a barrier that not every thread reaches; warp
  collectives in a partial warp, after lanes returned, of part of a warp or a width
  below 32; a block larger than the kernel's __launch_bounds__; over 48 KB of
  __shared__ arrays; a read of device memory nothing wrote; for the tensor-core API
  (mma.h), an operand not rounded to TF32, a misaligned tile, lanes that disagree, an
  odd leading dimension and a partial warp; every misuse of the runtime API that the
  emulator refuses (bad arguments and handles, copies whose ends are not where their
  kind says, freed memory, launch limits, unsafe calls during a graph capture and a
  capture ended on the wrong thread), with the runtime's exact text; the host running
  out of memory for fiber stacks or a __shared__ array; bad settings; code that setup.py
  or the headers cannot turn into emulated code. A check that never fires would make
  tests/test_cuda.py's passes under the emulator worthless.
- precision="tf32" on a GPU without TF32 tensor cores (ALEXNET_C_EMU_CC below 80), or
  where the build's code for the GPU is an older arch's PTX (ALEXNET_C_EMU_PTX below 80),
  is a RuntimeError that names the compute capability, and nothing else changes.
- A kernel fault (sticky, as on a GPU) is a RuntimeError with the runtime's text for
  every later CUDA call, while the CPU path goes on; device memory running out is a
  MemoryError and the model works again afterwards. On a real GPU neither can be
  provoked on purpose by our own kernels. The command line reports the latter in one
  line.
- benchmarks/bench_gpu.py runs end to end with torch's CUDA stood in
  (tests/_torch_cuda_standin.py): no CI machine has a GPU, and a mistake in the
  script's own logic should not cost a GPU session its few minutes; so do the two
  programs benchmarks/gpu_check.sh gives compute-sanitizer.

Runs in builds made with ALEXNET_C_CUDA=emulate (.ci/emulated_cuda.sh, .ci/sanitize.sh);
elsewhere skipped with the reason, like every other `cuda`-marked test.
"""
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import alexnet_c as ac
from alexnet_c import _C
from _subproc import child_env, run_python

EMULATED = bool(getattr(_C, "CUDA_EMULATED", 0))
SANITIZED = os.environ.get("ALEXNET_C_SANITIZED") == "1"   # set by .ci/sanitize.sh
ROOT = Path(__file__).resolve().parents[1]   # the source tree: the headers, setup.py
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not EMULATED, reason="alexnet_c was not built with ALEXNET_C_CUDA=emulate")]


def selftest(name, n):
    return _C._emu_selftest(name, n)


def test_barrier_makes_the_rotation_exact():
    expected = np.tile((np.arange(64) + 1) % 64, 3).astype(np.float32)
    assert np.array_equal(selftest("rotate", 192), expected)


_ROTATE_CHILD = """
import numpy as np
from alexnet_c import _C
out = _C._emu_selftest("rotate_without_barrier", 128)
print("nan", int(np.isnan(out).sum()))
ok = np.array_equal(_C._emu_selftest("rotate", 128), np.tile((np.arange(64) + 1) % 64, 2).astype(np.float32))
print("with barrier", ok)
"""


@pytest.mark.parametrize("schedule", ["forward", "reverse"])
def test_missing_barrier_shows_in_either_thread_order(schedule):
    """Without the barrier, some thread reads its neighbour's slot before the
    neighbour has written it (thread 0 in index order, thread 63 in reverse), and
    finds the NaN that each block's shared memory starts with."""
    res = run_python(["-c", _ROTATE_CHILD], env=child_env(ALEXNET_C_EMU_SCHEDULE=schedule))
    assert res.returncode == 0, res.stderr
    nan = int(res.stdout.split("nan ")[1].split()[0])
    assert nan >= 2 and "with barrier True" in res.stdout, res.stdout   # one per block at least


def test_block_within_its_launch_bound_runs():
    # The twin of the launch_bound fault below: 64 threads, the kernel's bound.
    assert np.array_equal(selftest("launch_bound", 64), np.arange(64, dtype=np.float32))


def test_fresh_device_memory_reads_as_nan():
    assert np.isnan(selftest("fresh_memory", 300)).all()


def test_full_warp_shuffle_sums_each_warp():
    assert np.array_equal(selftest("warp_sum", 96), np.full(96, 496, np.float32))
    # the twin of the warp_kernel faults below: a full __syncwarp, then full shuffles
    assert np.array_equal(selftest("warp", 64), np.full(64, 496, np.float32))


def test_48k_of_shared_arrays_are_allowed():
    # the twin of shared_over_48k below: 48 KB exactly
    assert np.array_equal(selftest("shared", 64), np.ones(64, np.float32))


def test_misaligned_float4_load_is_not_silent():
    """A float4 load from an address that is not 16-byte aligned faults on a GPU. The
    emulator declares float4 16-byte aligned, so the sanitizer build's UBSan names it,
    and elsewhere the compiler's aligned vector loads kill the process (SIGSEGV)."""
    code = "from alexnet_c import _C; print(_C._emu_selftest('misaligned_float4', 64)[:3])"
    res = run_python(["-c", code])
    assert res.returncode != 0 and "[1. 2. 3.]" not in res.stdout, res.stdout + res.stderr
    if SANITIZED:
        assert "misaligned address" in res.stderr and "float4" in res.stderr, res.stderr


# The runtime's texts (cudaGetErrorString), by error name less its cudaError prefix.
_CUDA_TEXT = {
    "InvalidValue": "invalid argument",
    "InvalidDevice": "invalid device ordinal",
    "InvalidConfiguration": "invalid configuration argument",
    "InvalidMemcpyDirection": "invalid copy direction for memcpy",
    "InvalidResourceHandle": "invalid resource handle",
    "IllegalState": "the operation cannot be performed in the present state",
    "NotReady": "device not ready",
    "StreamCaptureUnsupported": "operation not permitted when stream is capturing",
    "StreamCaptureWrongThread": "attempt to terminate a thread-local capture sequence from another thread",
}
# selftest.cu's misuse cases, by the error each must get. A case "x_in_capture" also
# requires the capture to come out invalidated (during_capture there).
_MISUSES = {
    "InvalidValue": [
        "device_count_null", "get_device_null", "attribute_null", "attribute_unknown", "mem_get_info_null",
        "occupancy_null", "func_attributes_null", "occupancy_block_0", "occupancy_block_1025", "occupancy_smem_over_48k",
        "malloc_null", "free_twice", "free_inside", "memcpy_to_freed", "memcpy_h2d_to_host",
        "memcpy_h2d_from_device", "memcpy_d2h_from_host", "memcpy_d2h_to_device", "memcpy_d2d_from_host",
        "memcpy_d2d_to_host", "memcpy_h2h_from_device", "memcpy_h2h_to_device", "memcpy_past_the_end",
        "memcpy_null", "stream_create_null", "stream_create_bad_flags", "capture_bad_mode",
        "end_capture_null_graph", "instantiate_null", "event_create_null", "elapsed_null",
        "launch_dynamic_smem"],
    "InvalidDevice": ["set_device_1", "attribute_device_1"],
    "InvalidMemcpyDirection": ["memcpy_bad_kind"],
    "InvalidConfiguration": [
        "launch_block_0", "launch_block_1025", "launch_block_z_65", "launch_grid_x_0", "launch_grid_x_2p31",
        "launch_grid_y_0", "launch_grid_y_65536", "launch_grid_z_0", "launch_grid_z_65536"],
    "InvalidResourceHandle": [
        "memcpy_async_unknown_stream", "stream_destroy_twice", "stream_sync_unknown", "capture_unknown_stream",
        "end_capture_unknown_stream", "instantiate_destroyed_graph", "graph_destroy_twice",
        "graph_launch_destroyed", "graph_launch_unknown_stream", "graph_exec_destroy_twice",
        "event_destroy_twice", "event_record_unknown", "event_record_unknown_stream", "event_sync_unknown",
        "elapsed_unknown", "launch_unknown_stream"],
    "IllegalState": ["capture_twice", "end_capture_not_capturing"],
    "NotReady": ["elapsed_unrecorded"],
    "StreamCaptureUnsupported": [
        "stream_destroy_capturing", "capture_null_stream", "capture_legacy_stream", "stream_sync_in_capture",
        "legacy_sync_in_capture", "device_sync_in_capture", "malloc_in_capture", "free_in_capture",
        "memcpy_in_capture", "malloc_in_per_thread_capture", "malloc_beside_global_capture"],
    "StreamCaptureWrongThread": ["end_capture_wrong_thread"],
}
# Their correct twins, which must succeed.
_MISUSE_TWINS = ["occupancy_ok", "func_attributes_ok", "memcpy_ok", "end_capture_relaxed_elsewhere_ok", "malloc_in_relaxed_capture_ok",
                 "malloc_beside_thread_local_capture_ok", "malloc_after_a_capturing_thread_exited_ok", "elapsed_ok",
                 "launch_at_limits_ok"]


@pytest.mark.parametrize("name,error", [(name, error) for error, names in _MISUSES.items() for name in names])
def test_runtime_refuses_misuse_with_its_own_text(name, error):
    with pytest.raises(RuntimeError) as info:
        selftest(name, 1)
    assert str(info.value) == f"_emu_selftest: CUDA error: {name}: {_CUDA_TEXT[error]} (cudaError{error})"
    # not sticky, and nothing left behind (a capture left going would refuse the allocation)
    assert np.array_equal(selftest("warp", 32), np.full(32, 496, np.float32))


@pytest.mark.parametrize("name", _MISUSE_TWINS)
def test_correct_use_of_the_runtime_passes(name):
    selftest(name, 1)


def test_every_misuse_case_is_tested():
    source = ROOT / "csrc" / "cuda_emu" / "selftest.cu"
    if not source.is_file():
        pytest.skip("no source tree beside the tests")
    table = source.read_text().split("const Misuse kMisuses[] = {")[1].split("\n};")[0]
    cases = re.findall(r'^    \{"(\w+)", ', table, re.M)
    assert sorted(cases) == sorted(sum(_MISUSES.values(), _MISUSE_TWINS))


def test_wmma_tile_product_is_exact():
    """A @ B + 1 for the self-test's integer tiles, A[r][k] = r + k, B[k][c] = k - c."""
    r, k, c = np.arange(16)[:, None], np.arange(8), np.arange(16)
    want = ((r + k[None, :]) @ (k[:, None] - c[None, :]) + 1).astype(np.float32)
    assert np.array_equal(selftest("wmma", 256).reshape(16, 16), want)


_SELFTEST_CHILD = """
import sys
from alexnet_c import _C
try:
    _C._emu_selftest(sys.argv[1], int(sys.argv[2]))
    print("no fault")
except RuntimeError as e:
    print("fault:", e)
"""


def assert_kernel_fault(res, kernel, whys):
    """res: _SELFTEST_CHILD's run; one of whys is the emulator's report of the fault."""
    assert res.returncode == 0 and "fault:" in res.stdout and "unspecified launch failure" in res.stdout, \
        res.stdout + res.stderr
    line = rf"alexnet_c CUDA emulator: kernel fault in {kernel}, block \(0,0,0\)( thread \(\d+,0,0\))?: "
    assert re.search(line + "(" + "|".join(map(re.escape, whys)) + ")", res.stderr), res.stderr


# As below, which of two whys depends on the thread order: in index order lane 0 has
# returned before the others arrive; in reverse they wait for it, and it never comes.
@pytest.mark.parametrize("name,n,kernel,whys", [
    ("wmma_unrounded", 256, "wmma_kernel", ("mma_sync: a TF32 operand was not rounded with __float_to_tf32",)),
    ("wmma_misaligned", 256, "wmma_kernel", ("wmma: a fragment's memory must be 32-byte (256-bit) aligned",)),
    ("wmma_lanes_disagree", 256, "wmma_kernel", ("wmma: the lanes of a warp passed different pointers, "
                                                 "leading dimensions or layouts to one collective call",)),
    ("wmma_odd_ldm", 256, "wmma_kernel", ("wmma: the leading dimension of a float tile must be a multiple of 4",)),
    ("wmma_half_warp", 256, "wmma_kernel", ("full-mask load_matrix_sync in a warp of 16 threads",)),
    ("warp_width", 32, "warp_kernel", ("the emulator runs full-warp shuffles only (mask 0xffffffff, width 32)",)),
    ("warp_mask", 32, "warp_kernel", ("__syncwarp(): the emulator runs full-warp collectives only (mask 0xffffffff)",)),
    ("warp_after_return", 32, "warp_kernel", ("full-mask __syncwarp() after 1 lanes of the warp returned",
                                              "deadlock: 0 of 32 threads wait at __syncthreads(), 31 at a warp "
                                              "shuffle, 1 have returned")),
    ("warp_share_too_much", 32, "warp_kernel", ("self-test: too much data for warp_share",)),
    ("shared_over_48k", 32, "shared_kernel", ("the block's __shared__ arrays take 49156 bytes; a block may have "
                                              "48 KB of static shared memory",)),
    ("shared_huge", 32, "shared_kernel", ("no host memory for a __shared__ array",)),
])
def test_kernel_mistakes_are_kernel_faults(name, n, kernel, whys):
    assert_kernel_fault(run_python(["-c", _SELFTEST_CHILD, name, str(n)]), kernel, whys)


@pytest.mark.skipif(SANITIZED, reason="ASan's shadow memory needs more address space than the limit leaves")
def test_no_memory_for_the_fiber_stacks_is_a_kernel_fault():
    """1024 threads need 512 MB of stack address space; with 64 MB left, mmap fails."""
    code = ("import resource\nfrom alexnet_c import _C\n_C._emu_selftest('warp', 32)\n"
            "vm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize:')) << 10\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))\n"
            + _SELFTEST_CHILD)
    assert_kernel_fault(run_python(["-c", code, "warp", "1024"]), "warp_kernel", ("no memory for the fibers' stacks",))


@pytest.mark.skipif(not SANITIZED, reason="only AddressSanitizer (.ci/sanitize.sh) sees an overrun")
@pytest.mark.parametrize("name", ["overrun_device", "overrun_shared"])
def test_overrun_is_reported_by_asan(name):
    # The report to stderr, not to sanitize.sh's log folder, whose reports fail the job.
    env = child_env(ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":log_path=stderr")
    res = run_python(["-c", f"from alexnet_c import _C; print(_C._emu_selftest({name!r}, 32))"], env=env)
    assert res.returncode != 0 and "ERROR: AddressSanitizer: heap-buffer-overflow" in res.stderr, \
        res.stdout + res.stderr
    assert "READ of size 4" in res.stderr, res.stderr


def test_bad_emulator_settings_are_named_and_replaced():
    env = child_env(ALEXNET_C_EMU_MEMORY_MB="lots", ALEXNET_C_EMU_CC="49", ALEXNET_C_EMU_SCHEDULE="backwards",
                    ALEXNET_C_EMU_PTX="95")
    res = run_python(["-c", "from alexnet_c import _C; print(_C._emu_selftest('warp', 32)[0])"], env=env)
    assert res.returncode == 0 and res.stdout == "496.0\n", res.stdout + res.stderr
    for text in ("ALEXNET_C_EMU_MEMORY_MB=lots is not an integer in [1, 16777216]; using 16384",
                 "ALEXNET_C_EMU_CC=49 is not an integer in [50, 129]; using 90",
                 "ALEXNET_C_EMU_SCHEDULE=backwards is not forward or reverse; using forward",
                 "ALEXNET_C_EMU_PTX=95 is not an integer in [50, 90]; using 90"):
        assert f"alexnet_c CUDA emulator: {text}\n" in res.stderr, res.stderr


# What setup.py (emulator_source) cannot rewrite, and the headers' own refusals of code
# that reaches the compiler unrewritten or that the emulator cannot run.
@pytest.mark.parametrize("source,why", [
    ("k <<< 1, 1 >>> ;", "a kernel launch the emulator build cannot rewrite"),
    ("__global__ void __launch_bounds__(64) k(float *p);", "a __launch_bounds__ the emulator build cannot rewrite"),
    ("__shared__ float s;", "a __shared__ declaration the emulator build cannot rewrite"),
    ("__shared__ __align__(128) float s[4];", "the emulator aligns shared arrays to 64 bytes, not 128"),
    ("/* __shared__ s; __launch_bounds__; k<<<1, 1>>> */ // __shared__\n__shared__ float s[4];", None),
])
def test_setup_refuses_what_it_cannot_rewrite(tmp_path, source, why):
    import importlib.util
    if not (ROOT / "setup.py").is_file():
        pytest.skip("no source tree beside the tests")
    spec = importlib.util.spec_from_file_location("alexnet_c_setup", ROOT / "setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    (tmp_path / "k.cu").write_text(source)
    if why is None:   # the twin: words in comments are no code
        assert "block_shared<float[4]>" in setup.emulator_source(str(tmp_path / "k.cu"))
        return
    with pytest.raises(RuntimeError, match=re.escape(why)):
        setup.emulator_source(str(tmp_path / "k.cu"))


_MMA = "#include <mma.h>\nusing namespace nvcuda::wmma;\n"


@pytest.mark.parametrize("language,source,why", [
    ("c++", "__global__ void k(float *p) { __shared__ float s[4]; s[0] = *p; }",
     "acn_emu_shared_declaration_not_rewritten_by_setup_py"),
    ("c++", "__global__ void __launch_bounds__(64) k(float *p) { *p = 0; }",
     "acn_emu_launch_bounds_not_rewritten_by_setup_py"),
    ("c++", '__global__ void k(float *p) { *p = 0; }\nvoid f() { ::acn_emu::Launch(1, 1).of(k, "k")(nullptr, 1); }',
     "kernel launched with the wrong argument count"),
    ("c++", "__global__ void k(double *p) { *p = __shfl_xor_sync(0xffffffffu, *p, 1); }", "32-bit shuffles only"),
    ("c++", _MMA + "void f(const float *p) { fragment<matrix_a, 16, 16, 8, precision::tf32> a; load_matrix_sync(a, p, 8); }",
     "a matrix_a / matrix_b fragment is row_major or col_major"),
    ("c++", _MMA + "fragment<matrix_a, 16, 16, 16, precision::tf32, row_major> a;",
     "incomplete type|undefined template"),   # g++'s words | clang's
    ("c", "", "the CUDA emulator is C++ (it compiles the .cu sources as C++17)"),
])
def test_code_the_emulator_cannot_run_does_not_compile(language, source, why):
    cxx = shlex.split(os.environ.get("CXX", "g++"))   # as setup.py compiles the emulator
    if not (ROOT / "csrc" / "cuda_emu").is_dir() or not shutil.which(cxx[0]):
        pytest.skip("no source tree beside the tests, or no C++ compiler")
    res = subprocess.run(cxx + ["-std=c++17" if language == "c++" else "-std=c11", "-fsyntax-only",
                                "-I", str(ROOT / "csrc" / "cuda_emu"), "-x", language, "-"],
                         input="#include <cuda_runtime.h>\n" + source + "\n", capture_output=True, text=True)
    assert res.returncode != 0 and any(text in res.stderr for text in why.split("|")), res.stderr


# argv[1]: the refusal's text, a regular expression
_TF32_REFUSED_CHILD = """
import sys
import numpy as np, pytest
import alexnet_c as ac
x, w = np.ones((1, 4, 5, 5), np.float32), np.ones((2, 4, 3, 3), np.float32)
msg = sys.argv[1]
with pytest.raises(RuntimeError, match=msg):
    ac.conv2d(x, w, device="cuda", precision="tf32")
with pytest.raises(RuntimeError, match=msg):
    ac.linear(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), device="cuda", precision="tf32")
m = ac.AlexNet(num_classes=5, seed=0)
with pytest.raises(RuntimeError, match=msg):
    m.to("cuda", precision="tf32")
assert m.device == "cpu" and m.precision == "float32"    # a failed move changes nothing
m.to("cuda")
with pytest.raises(RuntimeError, match=msg):
    m.to("cuda", precision="tf32")
assert m.device == "cuda" and m.precision == "float32"
y = np.random.default_rng(0).standard_normal((1, 3, 63, 63)).astype(np.float32)
assert np.allclose(m(y), ac.AlexNet(num_classes=5, seed=0)(y), rtol=1e-4, atol=1e-5)
assert np.array_equal(ac.conv2d(x, w, device="cuda"), ac.conv2d(x, w))
print("refused")
"""


def test_tf32_needs_compute_capability_8():
    msg = "precision='tf32' needs TF32 tensor cores .compute capability 8.0 or newer.*this GPU is 7.5"
    res = run_python(["-c", _TF32_REFUSED_CHILD, msg], env=child_env(ALEXNET_C_EMU_CC="75"))
    assert res.returncode == 0 and "refused" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("ptx,refused", [("75", True), ("80", False)])
def test_tf32_needs_code_built_for_compute_capability_8(ptx, refused):
    """A build whose code for the GPU is an older arch's PTX (ALEXNET_C_CUDA_ARCHS=75 on
    an H200: the driver JIT-compiles compute_75) has TF32 kernels without a body; it is
    refused from cudaFuncGetAttributes' ptxVersion, not run into an unwritten output.
    compute_80 code on the same GPU is fine."""
    msg = ("precision='tf32' needs device code built for compute capability 8.0 or newer; this build runs "
           "compute_75 code on this GPU .9.0.: rebuild with ALEXNET_C_CUDA_ARCHS including 90")
    code = _TF32_REFUSED_CHILD if refused else (
        "import numpy as np, alexnet_c as ac\n"
        "x, w = np.ones((1, 4, 5, 5), np.float32), np.ones((2, 4, 3, 3), np.float32)\n"
        "assert np.allclose(ac.conv2d(x, w, device='cuda', precision='tf32'), ac.conv2d(x, w), rtol=5e-3)\n"
        "print('accepted')\n")
    res = run_python(["-c", code, msg], env=child_env(ALEXNET_C_EMU_CC="90", ALEXNET_C_EMU_PTX=ptx))
    want = "refused" if refused else "accepted"
    assert res.returncode == 0 and want in res.stdout, res.stdout + res.stderr


def test_unknown_selftest_is_a_value_error():
    with pytest.raises(ValueError, match="unknown self-test"):
        selftest("no such test", 4)


_FAULT_CHILD = """
import sys
import numpy as np
import alexnet_c as ac
name, n = sys.argv[1], int(sys.argv[2])
x = np.random.default_rng(0).standard_normal((1, 3, 63, 63)).astype(np.float32)
cpu = ac.AlexNet(num_classes=10, seed=0)
before = cpu(x)
gpu = ac.AlexNet(num_classes=10, seed=0).to("cuda")
assert np.allclose(gpu(x), before, rtol=1e-4, atol=1e-5)
try:
    ac._C._emu_selftest(name, n)
    print("no fault")
except RuntimeError as e:
    print("fault:", e)
later = [lambda: ac.relu(np.ones(3, np.float32), device="cuda"), lambda: gpu(x),
         lambda: ac.AlexNet(num_classes=10, seed=0).to("cuda"),
         lambda: ac.conv2d(x, np.ones((2, 3, 3, 3), np.float32), device="cuda")]
for call in later:
    try:
        call()
        print("later: no error")
    except RuntimeError as e:
        print("later:", e)
assert np.array_equal(cpu(x), before)
assert np.array_equal(ac.relu(np.array([-1, 2], np.float32)), [0, 2])
print("cpu ok")
"""


# Which check fires first depends on the thread order (ALEXNET_C_EMU_SCHEDULE): in index
# order the waiting threads come first, in reverse the returned ones; either is the fault.
@pytest.mark.parametrize("name,n,whys", [
    ("divergent_barrier", 32, ("deadlock: 16 of 32 threads wait at __syncthreads()",
                               "__syncthreads() after 16 of the block's 32 threads returned")),
    ("barrier_after_return", 32, ("__syncthreads() after 1 of the block's 32 threads returned",
                                  "deadlock: 31 of 32 threads wait at __syncthreads()")),
    ("warp_sum", 48, ("full-mask shuffle in a warp of 16 threads",)),
    ("launch_bound", 65, ("launched with 65 threads per block, above its __launch_bounds__ of 64",)),
])
def test_kernel_fault_is_sticky_and_the_cpu_path_goes_on(name, n, whys):
    res = run_python(["-c", _FAULT_CHILD, name, str(n)])
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "fault: _emu_selftest: CUDA error: " in out and "unspecified launch failure" in out, out
    assert out.count("later: ") == 4 and "later: no error" not in out, out
    assert out.count("unspecified launch failure (cudaErrorLaunchFailure)") == 5, out
    assert "cpu ok" in out
    assert f"alexnet_c CUDA emulator: kernel fault in {name}_kernel" in res.stderr, res.stderr
    assert any(why in res.stderr for why in whys), res.stderr


_OOM_CHILD = """
import numpy as np
import alexnet_c as ac
rng = np.random.default_rng(0)
m = ac.AlexNet(num_classes=1000, seed=0)
gpu = ac.AlexNet.from_state_dict(m.state_dict()).to("cuda")     # 244 MB of weights fit in 400
small = rng.standard_normal((1, 3, 63, 63)).astype(np.float32)
assert np.allclose(gpu(small), m(small), rtol=1e-4, atol=1e-5)
big = np.zeros((160, 3, 224, 224), np.float32)                   # the input alone: 96 MB
for what, call in [("relu", lambda: ac.relu(np.ones(64 << 20, np.float32), device="cuda")),
                   ("model", lambda: gpu(big)),
                   ("second model", lambda: ac.AlexNet(num_classes=1000, seed=1).to("cuda"))]:
    try:
        call()
        print(what, "no error")
    except ac.CudaOutOfMemoryError as e:
        assert isinstance(e, MemoryError) and isinstance(e, RuntimeError)
        print(what, "oom:", e)
assert np.array_equal(ac.relu(np.array([-1, 2], np.float32), device="cuda"), [0, 2])
assert np.allclose(gpu(small), m(small), rtol=1e-4, atol=1e-5)
print("recovered")
"""


def test_device_out_of_memory_then_recovers():
    res = run_python(["-c", _OOM_CHILD], env=child_env(ALEXNET_C_EMU_MEMORY_MB="400"))
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for what in ("relu", "model", "second model"):
        assert f"{what} oom: " in out, out
    assert out.count("out of memory (cudaErrorMemoryAllocation)") == 3, out
    assert "recovered" in out


def test_emulated_device_can_be_hidden():
    # and every runtime call below the Python layer's check says so (a self-test's first)
    code = ("import alexnet_c as ac; print(ac.cuda_is_available(), ac.cuda_unavailable_reason())\n"
            "try:\n    ac._C._emu_selftest('warp', 32)\nexcept RuntimeError as e:\n    print(e)")
    res = run_python(["-c", code], env=child_env(CUDA_VISIBLE_DEVICES="-1"))
    assert res.returncode == 0 and res.stdout.startswith("False no CUDA device found"), res.stdout + res.stderr
    assert res.stdout.splitlines()[1] == ("_emu_selftest: no usable CUDA device: self-test output: "
                                          "no CUDA-capable device is detected (cudaErrorNoDevice)"), res.stdout


def test_cli_reports_device_memory_running_out(tmp_path):
    from PIL import Image
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "img.png")
    ac.AlexNet(num_classes=1000, seed=0).save(tmp_path / "w.safetensors")   # 244 MB on the device
    res = run_python(["-m", "alexnet_c", "predict", str(tmp_path / "img.png"), "--weights",
                      str(tmp_path / "w.safetensors"), "--device", "cuda"],
                     env=child_env(ALEXNET_C_EMU_MEMORY_MB="100"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.startswith("alexnet-c predict: error: CudaOutOfMemoryError: "), res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr


_BENCH_GPU_CHILD = """
import runpy, sys
sys.path.insert(0, {tests!r})
import _torch_cuda_standin  # noqa: F401
sys.argv = ["bench_gpu.py", "--batches", "1", "--tf32-batches", "1", "--reps", "1", "--per-layer",
            "--out", {out!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


def test_bench_gpu_runs_end_to_end(tmp_path):
    # benchmarks/bench_gpu.py needs torch with CUDA, which no CI machine has: with torch's
    # device stood in (tests/_torch_cuda_standin.py) it runs here on the emulator, so that
    # a GPU session's few minutes are not lost to a mistake in the script's own logic.
    import json
    from pathlib import Path
    tests = Path(__file__).resolve().parent
    script = tests.parent / "benchmarks" / "bench_gpu.py"
    code = _BENCH_GPU_CHILD.format(tests=str(tests), out=str(tmp_path), script=str(script))
    res = run_python(["-c", code], timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    rows = {(r["variant"], r["precision"]): r for r in report["networks"]}
    assert set(rows) == {(v, p) for v in ("torchvision", "original") for p in ("float32", "tf32")}
    for (variant, precision), r in rows.items():
        assert r["batch"] == 1 and r["ours_ms"] > 0 and r["torch_device_ms"] > 0, r
        assert r["max_rel_diff_vs_torch_fp32"] <= (1e-4 if precision == "float32" else 5e-3), r
        if precision == "tf32":
            assert 0 < r["max_rel_diff_vs_float32"] <= 5e-3, r
    for key, want in [("torchvision-N1", {"avgpool"}), ("original-N1", {"log_softmax"})]:
        layers = {row["layer"]: row for row in report["layers"][key]}
        names = {f"conv{i}" for i in range(1, 6)} | {"pool1", "pool2", "pool5", "fc1", "fc2", "fc3", "total"}
        assert names <= set(layers), (key, sorted(layers))
        for name, row in layers.items():   # both sides timed every layer, under the same names
            assert row["ours_ms"] > 0 and row["torch_ms"] and row["torch_ms"] > 0, (key, row)
    assert "precision='tf32' against PyTorch" in res.stdout and "per layer, original N=1" in res.stdout


def test_gpu_check_sanitizer_calls_run(tmp_path):
    # benchmarks/gpu_check.sh hands two Python programs to compute-sanitizer (memcheck's
    # calls of every kernel, racecheck's and synccheck's small calls): run them here, so
    # that a typo in them shows in CI rather than as a "finding" on a lent GPU.
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh").read_text()
    memcheck = re.search(r"<<'PYEOF'\n(.*?)\nPYEOF\n", text, re.S)
    race = re.search(r"\n    RACE_CALLS='(.*?)'\n", text, re.S)
    assert memcheck and race, "gpu_check.sh's sanitizer programs were not found"
    for name, program, done in [("memcheck", memcheck.group(1), "sanitize calls done"),
                                ("race", race.group(1), "race calls done")]:
        res = run_python(["-c", program])
        assert res.returncode == 0 and res.stdout.strip().endswith(done), (name, res.stdout + res.stderr)
