"""Resources: reference counts, memory that stays flat over many calls, batches too
big for memory (MemoryError, not an OOM kill), empty batches, untouched inputs."""
from __future__ import annotations

import gc
import os
import sys
import textwrap
import tracemalloc
import weakref

import numpy as np
import pytest

import alexnet_c as ac
from _subproc import run_neutral  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(ac.__file__)))
# Under .ci/sanitize.sh, ASan's quarantine holds freed memory back (RSS grows by design):
# only tracemalloc's count, which sees every leaked Python-visible allocation, applies there.
SANITIZED = os.environ.get("ALEXNET_C_SANITIZED") == "1"


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


def _run(script: str, *args, timeout=180):
    return run_neutral([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=_env())


@pytest.fixture(scope="module")
def model():
    return ac.AlexNet(num_classes=1000, seed=21)


@pytest.fixture
def one_thread():
    prev = ac.get_num_threads()
    ac.set_num_threads(1)   # fast on a loaded 2-core machine; leaks do not depend on it
    yield
    ac.set_num_threads(prev)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- reference counts ------------------------------------------------------------

def _op_calls(rng):
    x4 = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    x2 = rng.standard_normal((12, 20))                       # float64: converted (copied) inside
    lw = rng.standard_normal((7, 20)).astype(np.float32)
    lb = rng.standard_normal(7).astype(np.float32)
    return [
        (ac.conv2d, (x4, w, b), dict(stride=2, padding=1)),
        (ac.conv2d, (x4, w, None), dict(_naive=True)),
        (ac.relu, (x4,), {}),
        (ac.relu, (x2,), {}),
        (ac.max_pool2d, (x4, 3), dict(stride=2, padding=1, ceil_mode=True)),
        (ac.adaptive_avg_pool2d, (x4, (5, 11)), {}),
        (ac.linear, (x2, lw, lb), {}),
        (ac.linear, (x2, lw.astype(np.float16), None), dict(_naive=True)),
        (ac.softmax, (x2,), dict(dim=0)),
        (ac.log_softmax, (x4,), dict(dim=1)),
    ]


def test_refcounts_ops(rng):
    for fn, args, kw in _op_calls(rng):
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        before = [sys.getrefcount(a) for a in arrays]
        for _ in range(5):
            out = fn(*args, **kw)
        assert [sys.getrefcount(a) for a in arrays] == before, fn.__name__
        assert sys.getrefcount(out) == 2, fn.__name__   # `out` and getrefcount's argument
        ref = weakref.ref(out)
        del out
        assert ref() is None, f"{fn.__name__}: output leaked"


def test_refcounts_on_errors(rng):
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)   # wrong channel count
    b = rng.standard_normal(5).astype(np.float32)               # wrong bias length
    bad_calls = [
        lambda: ac.conv2d(x, w, b), lambda: ac.conv2d(x, w[:, :1], b), lambda: ac.linear(x, w),
        lambda: ac.linear(x.reshape(4, 25), x.reshape(25, 4), b), lambda: ac.max_pool2d(x, 9),
        lambda: ac.max_pool2d(x, 3, padding=2), lambda: ac.adaptive_avg_pool2d(x, -1),
        lambda: ac.softmax(x, dim=4), lambda: ac.relu(np.array(["a"])),
    ]
    before = [sys.getrefcount(a) for a in (x, w, b)]
    for call in bad_calls:
        for _ in range(3):
            try:
                call()
            except (ValueError, TypeError, IndexError):
                pass
            else:
                raise AssertionError("expected an error")
    assert [sys.getrefcount(a) for a in (x, w, b)] == before


def test_refcounts_model(model, one_thread):
    x = np.random.default_rng(0).standard_normal((1, 3, 63, 63)).astype(np.float32)
    x64 = x.astype(np.float64)
    weights = model._net.weights
    before = [sys.getrefcount(a) for a in (x, x64, weights)] + [sys.getrefcount(w) for w in weights]
    for _ in range(3):
        out = model(x)
        out = model(x64)
        try:
            model(x[:, :2])
        except ValueError:
            pass
    del weights
    weights = model._net.weights
    after = [sys.getrefcount(a) for a in (x, x64, weights)] + [sys.getrefcount(w) for w in weights]
    assert after == before
    assert sys.getrefcount(out) == 2
    ref = weakref.ref(out)
    del out
    assert ref() is None


# ---- memory stays flat -----------------------------------------------------------

def _growth(run) -> tuple:
    """(bytes traced by tracemalloc, bytes of RSS) that run() leaves behind after a gc."""
    gc.collect()
    tracemalloc.start()
    try:
        traced0, _ = tracemalloc.get_traced_memory()
        rss0 = _rss()
        run()
        gc.collect()
        traced1, _ = tracemalloc.get_traced_memory()
        rss1 = _rss()
    finally:
        tracemalloc.stop()
    return traced1 - traced0, rss1 - rss0


def test_memory_flat_over_200_forward_calls(model, one_thread):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, 3, 63, 63)),                       # float64: copied in C
          rng.standard_normal((1, 3, 63, 63)).astype(np.float32)]   # float32: used in place
    for _ in range(10):
        for x in xs:
            model(x)

    def calls():
        for i in range(200):
            model(xs[i % 2])

    traced, rss = _growth(calls)
    # one leaked output is 4 kB, one leaked input copy 95 kB, one leaked arena 115 kB
    assert traced < 64 * 1024, traced
    assert SANITIZED or rss < 8 * 2**20, rss / 2**20


def test_memory_flat_ops(rng):
    calls = _op_calls(rng)
    for fn, args, kw in calls:
        fn(*args, **kw)

    def run():
        for _ in range(200):
            for fn, args, kw in calls:
                fn(*args, **kw)

    traced, rss = _growth(run)
    assert traced < 64 * 1024, traced
    assert SANITIZED or rss < 8 * 2**20, rss / 2**20


def test_big_op_call_does_not_keep_its_memory():
    """(.ci/sanitize.sh deselects this one: ASan's quarantine keeps freed memory resident.)"""
    x, w = np.ones((1, 1, 1, 1), np.float32), np.ones((1, 1, 1, 1), np.float32)
    ac.conv2d(np.ones((1, 1, 8, 8), np.float32), w, padding=1)   # warm-up: small buffers exist
    gc.collect()
    rss0 = _rss()
    out = ac.conv2d(x, w, padding=4000)     # 8001 x 8001 output: 256 MB; padded input as big
    assert out.shape == (1, 1, 8001, 8001) and out[0, 0, 4000, 4000] == 1 and out[0, 0, 0, 0] == 0
    del out
    gc.collect()
    grown = _rss() - rss0
    assert grown < 64 * 2**20, f"{grown / 2**20:.0f} MB still resident after the call"
    # linear on a large batch packs its input (320 MB here) for the GEMM: freed on return too
    x, w = np.ones((20000, 4096), np.float32), np.ones((16, 4096), np.float32)
    gc.collect()
    rss0 = _rss()
    out = ac.linear(x, w)
    assert out.shape == (20000, 16) and out[0, 0] == out[-1, -1] == 4096
    del out
    gc.collect()
    grown = _rss() - rss0
    assert grown < 64 * 2**20, f"linear: {grown / 2**20:.0f} MB still resident after the call"


# ---- batches that cannot fit -----------------------------------------------------

_HUGE_BATCH = """
    import os, resource, sys
    import numpy as np
    import alexnet_c as ac

    kind, path = sys.argv[1], sys.argv[2]
    m = ac.AlexNet(num_classes=10, seed=0)
    H = W = 63
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    per_image = m._net.arena_bytes(1, H, W)
    N = int(1.25 * ram / per_image) + 1          # activations alone: 1.25 x this machine's RAM
    assert m._net.arena_bytes(N, H, W) > ram
    if kind == "memmap":
        # float32, C-contiguous, aligned: used in place, no copy. A sparse file: nothing is read
        # unless the forward pass really runs.
        with open(path, "wb") as f:
            f.truncate(N * 3 * H * W * 4)
        x = np.memmap(path, dtype=np.float32, mode="r", shape=(N, 3, H, W))
    else:
        # a broadcast batch: 47 kB of real data; a float32 copy of it would be N x 47 kB
        with open("/proc/self/status") as f:
            vm_kb = int(next(line for line in f if line.startswith("VmSize:")).split()[1])
        limit = 3 * 2**30 + vm_kb * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        x = np.broadcast_to(np.zeros((1, 3, H, W), np.float32), (N, 3, H, W))
    try:
        m(x)
    except MemoryError as exc:
        print(type(exc).__name__, "|", exc)
    else:
        print("no error")
    # VmHWM: peak RSS of this process image (ru_maxrss would include the forking parent's)
    with open("/proc/self/status") as f:
        hwm_kb = int(next(line for line in f if line.startswith("VmHWM:")).split()[1])
    print("peak_rss_mb", hwm_kb // 1024)
"""


def test_batch_too_big_for_memory_raises_memory_error(tmp_path):
    """A batch whose activations exceed the machine's RAM raises MemoryError up front
    (checked before allocating: the process neither grows nor gets OOM-killed)."""
    r = _run(_HUGE_BATCH, "memmap", tmp_path / "huge.f32")
    assert r.returncode == 0, f"exit {r.returncode} (negative: killed by a signal)\n{r.stdout}{r.stderr}"
    lines = r.stdout.splitlines()
    assert lines[0].startswith("MemoryError | AlexNet"), r.stdout + r.stderr
    assert int(lines[1].split()[1]) < 2048, r.stdout   # no huge allocation was touched


def test_broadcast_batch_too_big_raises_before_copying(tmp_path):
    """As above with a broadcast (stride-0) batch: alexnet_c's own check must fire before
    the input is copied. Under a 3 GB address-space limit the copy cannot be made, so
    numpy's allocation failure ('Unable to allocate ...') shows that the copy came first."""
    r = _run(_HUGE_BATCH, "broadcast", tmp_path / "unused")
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}{r.stderr}"
    assert r.stdout.splitlines()[0].startswith("MemoryError | AlexNet"), r.stdout + r.stderr


def test_arena_bytes_overflow_is_refused(model):
    """Sizes whose activation count overflows size_t-like limits raise, never wrap."""
    big = 2**31 - 1
    with pytest.raises((MemoryError, ValueError)):
        model(np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (big, 3, 63, 63), (0, 0, 0, 0)))


# ---- empty batches ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.bool_])
@pytest.mark.parametrize("hw", [(63, 63), (224, 224), (64, 300)])
def test_zero_batch(model, dtype, hw):
    x = np.zeros((0, 3) + hw, dtype)
    out = model(x)
    assert out.shape == (0, 1000) and out.dtype == np.float32 and out.flags.c_contiguous


def test_zero_batch_original_and_small_inputs():
    orig = ac.AlexNet(num_classes=7, variant="original", seed=0)
    assert orig(np.zeros((0, 3, 227, 227), np.float32)).shape == (0, 7)
    with pytest.raises(ValueError):   # still too small / wrong size, even with nothing in it
        ac.AlexNet(num_classes=7, seed=0)(np.zeros((0, 3, 40, 40), np.float32))
    with pytest.raises(ValueError):
        orig(np.zeros((0, 3, 224, 224), np.float32))


def test_zero_size_ops():
    z = np.zeros((0, 4, 6, 6), np.float32)
    assert ac.conv2d(z, np.ones((2, 4, 3, 3), np.float32)).shape == (0, 2, 4, 4)
    assert ac.max_pool2d(z, 2).shape == (0, 4, 3, 3)
    assert ac.adaptive_avg_pool2d(z, 3).shape == (0, 4, 3, 3)
    assert ac.relu(z).shape == z.shape
    assert ac.softmax(z, 1).shape == z.shape
    assert ac.linear(np.zeros((0, 5)), np.ones((3, 5))).shape == (0, 3)
    assert ac.linear(np.zeros((2, 0, 5)), np.ones((3, 5))).shape == (2, 0, 3)


# ---- inputs never modified -------------------------------------------------------

def _layouts(x):
    ro = x.copy()
    ro.flags.writeable = False
    buf = np.zeros(x.nbytes + 1, np.uint8)
    mis = buf[1:].view(np.float32).reshape(x.shape)
    mis[...] = x
    mis_ro = mis.view()
    mis_ro.flags.writeable = False
    return {"C": x.copy(), "readonly": ro, "misaligned": mis, "misaligned_readonly": mis_ro,
            "fortran": np.asfortranarray(x), "float64": x.astype(np.float64),
            "byteswapped": x.astype(">f4"), "reversed": x[::-1].copy()[::-1]}


def test_model_inputs_never_modified(model, one_thread):
    x = np.random.default_rng(3).standard_normal((2, 3, 70, 66)).astype(np.float32)
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    expect = model(x)
    for name, arr in _layouts(x).items():
        before, flags = arr.copy(), (arr.flags.writeable, arr.flags.aligned, arr.strides)
        out = model(arr)
        assert np.array_equal(arr, before, equal_nan=True), name
        assert (arr.flags.writeable, arr.flags.aligned, arr.strides) == flags, name
        assert not np.may_share_memory(out, arr)
        np.testing.assert_array_equal(out, expect, err_msg=name)
        single = model(arr[1])   # unbatched (3, H, W)
        np.testing.assert_array_equal(single, expect[1:2], err_msg=name)


def test_op_inputs_never_modified():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    for name, arr in _layouts(x).items():
        wl = _layouts(w)[name]
        snapshot = [(a, a.copy()) for a in (arr, wl)]
        outs = [ac.conv2d(arr, wl, padding=1), ac.relu(arr), ac.max_pool2d(arr, 3, 1, 1),
                ac.adaptive_avg_pool2d(arr, 4), ac.softmax(arr, 1), ac.log_softmax(arr, -1),
                ac.linear(arr, wl.reshape(6, 36)[:, :9])]
        for a, before in snapshot:
            assert np.array_equal(a, before), name
            for out in outs:
                assert not np.may_share_memory(out, a), name


# ---- silent wrong answers on huge shapes -----------------------------------------

_CONV_PLANE_OVERFLOW = """
    import sys
    import numpy as np
    import alexnet_c as ac
    # A (1, 1, 46341, 46341) image and a 1x1 kernel: a 46341 x 46341 output plane, 2**31 + 4633
    # elements. The image is a sparse file (8.6 GB of address space, one real page: float32,
    # C-contiguous, so used in place) whose first pixel is 2; the output is 8.6 GB of untouched
    # address space. out = 3 * x + 5: 11 at the first pixel, 5 everywhere else.
    path = sys.argv[1]
    S = 46341
    with open(path, "wb") as f:
        f.truncate(S * S * 4)
        f.write(np.float32(2.0).tobytes())
    x = np.memmap(path, dtype=np.float32, mode="r", shape=(1, 1, S, S))
    w = np.full((1, 1, 1, 1), 3.0, np.float32)
    b = np.full(1, 5.0, np.float32)
    try:
        out = ac.conv2d(x, w, b)
    except (ValueError, MemoryError) as exc:
        print("refused |", type(exc).__name__, exc)
    else:
        print("values", out[0, 0, 0, 0], out[0, 0, -1, -1])
"""


def test_conv2d_huge_output_plane_is_right_or_refused(tmp_path):
    r = _run(_CONV_PLANE_OVERFLOW, tmp_path / "plane.f32", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.strip()
    assert out.startswith("refused") or out == "values 11.0 5.0", out


_POOL_PLANES_OVERFLOW = """
    import sys
    import numpy as np
    import alexnet_c as ac
    # (2**16, 2**15 + 1, 1, 1): N * C = 2**31 + 2**16 planes of one pixel. A sparse file
    # (8.6 GB of address space, one real page) holds it; the first pixel is 7.
    path, op = sys.argv[1], sys.argv[2]
    N, C = 2**16, 2**15 + 1
    with open(path, "wb") as f:
        f.truncate(N * C * 4)
        f.write(np.float32(7.0).tobytes())
    x = np.memmap(path, dtype=np.float32, mode="r", shape=(N, C, 1, 1))
    fn = {"max_pool2d": lambda: ac.max_pool2d(x, 1), "adaptive_avg_pool2d": lambda: ac.adaptive_avg_pool2d(x, 1)}
    try:
        out = fn[op]()
    except (ValueError, MemoryError) as exc:
        print("refused |", type(exc).__name__, exc)
    else:
        print("values", out[0, 0, 0, 0], out[-1, -1, 0, 0])
"""


@pytest.mark.parametrize("op", ["max_pool2d", "adaptive_avg_pool2d"])
def test_pool_more_than_int_max_planes_is_right_or_refused(tmp_path, op):
    r = _run(_POOL_PLANES_OVERFLOW, tmp_path / "planes.f32", op, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.strip()
    assert out.startswith("refused") or out == "values 7.0 0.0", out


_POOL_WIDE_OUTPUT = """
    import sys
    import numpy as np
    import alexnet_c as ac
    # A (1, 1, 1, 2**31 - 1) row (a sparse file: 8.6 GB of address space, one real page),
    # window (1, 2), padding (0, 1), stride 1: 2**31 output pixels, one more than the input has.
    path = sys.argv[1]
    W = 2**31 - 1
    with open(path, "wb") as f:
        f.truncate(W * 4)
    x = np.memmap(path, dtype=np.float32, mode="r", shape=(1, 1, 1, W))
    try:
        ac.max_pool2d(x, (1, 2), 1, (0, 1))
    except ValueError as exc:
        print(exc)
"""


def test_pool_output_wider_than_int_max_is_refused(tmp_path):
    r = _run(_POOL_WIDE_OUTPUT, tmp_path / "row.f32")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == ("max_pool2d: expected an output size of at most 2**31-1 each way, "
                                "got (1, 2147483648)"), r.stdout
