"""The CUDA emulator (csrc/cuda_emu) and the CUDA error paths only it can reach.

- Each check of the emulator fires on a kernel that is wrong in exactly that way
  (csrc/cuda_emu/selftest.cu): a missing barrier, in either thread order; a barrier
  that not every thread reaches; a full-mask shuffle in a partial warp; a block
  larger than the kernel's __launch_bounds__; a read of device memory nothing wrote;
  a synchronisation inside a graph capture; and for the tensor-core API (mma.h), an
  operand not rounded to TF32, a misaligned tile and a partial warp. A check that never fires would make tests/test_cuda.py's passes under
  the emulator worthless.
- precision="tf32" on a GPU without TF32 tensor cores (ALEXNET_C_EMU_CC below 80) is a
  RuntimeError that names the compute capability, and nothing else changes.
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

import numpy as np
import pytest

import alexnet_c as ac
from alexnet_c import _C
from _subproc import child_env, run_python

EMULATED = bool(getattr(_C, "CUDA_EMULATED", 0))
SANITIZED = os.environ.get("ALEXNET_C_SANITIZED") == "1"   # set by .ci/sanitize.sh
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


def test_misaligned_float4_load_is_not_silent():
    """A float4 load from an address that is not 16-byte aligned faults on a GPU. The
    emulator declares float4 16-byte aligned, so the sanitizer build's UBSan names it,
    and elsewhere the compiler's aligned vector loads kill the process (SIGSEGV)."""
    code = "from alexnet_c import _C; print(_C._emu_selftest('misaligned_float4', 64)[:3])"
    res = run_python(["-c", code])
    assert res.returncode != 0 and "[1. 2. 3.]" not in res.stdout, res.stdout + res.stderr
    if SANITIZED:
        assert "misaligned address" in res.stderr and "float4" in res.stderr, res.stderr


def test_synchronising_a_capturing_stream_is_refused():
    selftest("sync_in_capture", 4)   # raises unless refused and the capture invalidated


def test_wmma_tile_product_is_exact():
    """A @ B + 1 for the self-test's integer tiles, A[r][k] = r + k, B[k][c] = k - c."""
    r, k, c = np.arange(16)[:, None], np.arange(8), np.arange(16)
    want = ((r + k[None, :]) @ (k[:, None] - c[None, :]) + 1).astype(np.float32)
    assert np.array_equal(selftest("wmma", 256).reshape(16, 16), want)


@pytest.mark.parametrize("name,why", [
    ("wmma_unrounded", "mma_sync: a TF32 operand was not rounded with __float_to_tf32"),
    ("wmma_misaligned", "wmma: a fragment's memory must be 32-byte (256-bit) aligned"),
    ("wmma_half_warp", "full-mask load_matrix_sync in a warp of 16 threads"),
])
def test_wmma_mistakes_are_kernel_faults(name, why):
    code = f"""
from alexnet_c import _C
try:
    _C._emu_selftest({name!r}, 256)
    print("no fault")
except RuntimeError as e:
    print("fault:", e)
"""
    res = run_python(["-c", code])
    assert res.returncode == 0 and "fault:" in res.stdout and "unspecified launch failure" in res.stdout, \
        res.stdout + res.stderr
    assert "kernel fault in wmma_kernel" in res.stderr and why in res.stderr, res.stderr


_OLD_GPU_CHILD = """
import numpy as np, pytest
import alexnet_c as ac
x, w = np.ones((1, 4, 5, 5), np.float32), np.ones((2, 4, 3, 3), np.float32)
msg = "precision='tf32' needs TF32 tensor cores .compute capability 8.0 or newer.*this GPU is 7.5"
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
    res = run_python(["-c", _OLD_GPU_CHILD], env=child_env(ALEXNET_C_EMU_CC="75"))
    assert res.returncode == 0 and "refused" in res.stdout, res.stdout + res.stderr


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
    res = run_python(["-c", "import alexnet_c as ac; print(ac.cuda_is_available(), ac.cuda_unavailable_reason())"],
                     env=child_env(CUDA_VISIBLE_DEVICES="-1"))
    assert res.returncode == 0 and res.stdout.startswith("False no CUDA device found"), res.stdout + res.stderr


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
