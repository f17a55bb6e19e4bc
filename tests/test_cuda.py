"""The CUDA path (csrc/cuda): every op and both networks on the GPU against torch in
float64 (DESIGN.md's rule, TF32 off), NaN semantics, errors that leave the process
usable, CUDA graphs, and two host threads on one model; and the opt-in TF32
tensor-core path (precision="tf32") against the same references at TF32_TOL.

Every test is marked `cuda` and skipped, with the reason, where alexnet_c cannot use
a GPU (no CUDA build, no driver, no device). The references run on the GPU when
torch has CUDA, else on the CPU; both are float64.
"""
import re
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import alexnet_c as ac
from _subproc import child_env, run_python
from _torch_models import TOL, make_model, max_rel_err


def _skip_reason():
    if not hasattr(ac, "cuda_is_available"):
        return "alexnet_c has no cuda_is_available()"
    if ac.cuda_is_available():
        return None
    why = ac.cuda_unavailable_reason() if hasattr(ac, "cuda_unavailable_reason") else ""
    return f"alexnet_c cannot use CUDA here: {why or 'cuda_is_available() is False'}"


_SKIP = _skip_reason()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

REF_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True, scope="module")
def no_tf32():
    """DESIGN.md: GPU references with TF32 off (float64 ignores it; float32 would not)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def t64(a):
    """A NumPy array (or None) as a float64 tensor on the reference device."""
    return None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float64)).to(REF_DEVICE)


# precision="tf32" rounds both GEMM operands to a 10-bit mantissa (relative error up to
# 2^-11 each): measured on the emulator, 2e-4..3e-4 of max|ref| for one op and up to 8e-4
# for a whole network; the bound leaves room for the hardware's own summation order.
TF32_TOL = 5e-3


def assert_close(ours, ref, what="", tol=TOL):
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32, type(ours)
    ref = ref.detach().cpu() if isinstance(ref, torch.Tensor) else torch.as_tensor(ref)
    assert ours.shape == tuple(ref.shape), (what, ours.shape, tuple(ref.shape))
    err = max_rel_err(ours, ref)
    assert err <= tol, f"{what}: max|ours-ref|/max|ref| = {err:.3g} > {tol}"


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---- ops ---------------------------------------------------------------------

CONV_CASES = [
    # name, input, weight, stride, padding, groups, bias
    ("torchvision.conv1", (2, 3, 224, 224), (64, 3, 11, 11), 4, 2, 1, True),
    ("torchvision.conv2", (2, 64, 27, 27), (192, 64, 5, 5), 1, 2, 1, True),
    ("torchvision.conv3", (1, 192, 13, 13), (384, 192, 3, 3), 1, 1, 1, True),
    ("torchvision.conv4", (3, 384, 13, 13), (256, 384, 3, 3), 1, 1, 1, True),
    ("torchvision.conv5", (1, 256, 13, 13), (256, 256, 3, 3), 1, 1, 1, True),
    ("original.conv1", (1, 3, 227, 227), (96, 3, 11, 11), 4, 0, 1, True),
    ("two-tower conv2, groups=2", (2, 96, 27, 27), (256, 48, 5, 5), 1, 2, 2, True),
    ("groups=3, no bias", (1, 6, 9, 9), (9, 2, 3, 3), 1, 1, 3, False),
    ("non-square", (2, 5, 17, 9), (7, 5, 3, 5), (2, 1), (1, 2), 1, True),
    ("1x1, 130 channels", (3, 8, 6, 5), (130, 8, 1, 1), 1, 0, 1, True),
    ("one output pixel", (1, 4, 5, 5), (3, 4, 5, 5), 1, 0, 1, True),
    ("batch 64 conv3 (big tiles)", (64, 192, 13, 13), (384, 192, 3, 3), 1, 1, 1, True),
]


@pytest.mark.parametrize("name,xs,ws,stride,padding,groups,bias", CONV_CASES,
                         ids=[c[0] for c in CONV_CASES])
def test_conv2d(rng, name, xs, ws, stride, padding, groups, bias):
    x = randn(rng, *xs)
    w = randn(rng, *ws, scale=(2.0 / np.prod(ws[1:])) ** 0.5)
    b = randn(rng, ws[0], scale=0.1) if bias else None
    ours = ac.conv2d(x, w, b, stride, padding, groups=groups, device="cuda")
    ref = F.conv2d(t64(x), t64(w), t64(b), stride, padding, 1, groups)
    assert_close(ours, ref, name)


DILATED_CONV_CASES = [
    # input, weight, stride, padding, dilation, groups
    ((2, 6, 19, 17), (10, 6, 3, 3), 1, 2, 2, 1),
    ((1, 3, 35, 33), (8, 3, 5, 5), 3, 4, (2, 3), 1),
    ((2, 8, 20, 20), (6, 4, 3, 5), (2, 1), (3, 1), (3, 2), 2),
    ((2, 64, 27, 27), (192, 64, 5, 5), 1, 4, 2, 1),      # conv2-sized: the big tiles
]


@pytest.mark.parametrize("precision", ["float32", "tf32"])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", DILATED_CONV_CASES)
def test_conv2d_dilation(rng, xs, ws, stride, padding, dilation, groups, precision):
    x = randn(rng, *xs)
    w = randn(rng, *ws, scale=(2.0 / np.prod(ws[1:])) ** 0.5)
    b = randn(rng, ws[0], scale=0.1)
    ours = ac.conv2d(x, w, b, stride, padding, dilation, groups, device="cuda", precision=precision)
    ref = F.conv2d(t64(x), t64(w), t64(b), stride, padding, dilation, groups)
    assert_close(ours, ref, f"conv2d dilation {dilation}", tol=TOL if precision == "float32" else TF32_TOL)


@pytest.mark.parametrize("xs,k,s,p,ceil", [
    ((2, 64, 55, 55), 3, 2, 0, False),
    ((1, 3, 10, 11), (3, 2), (2, 1), (1, 1), False),
    ((1, 2, 8, 8), 3, 2, 1, True),
    ((2, 256, 13, 13), 3, 2, 0, False),
])
def test_max_pool2d(rng, xs, k, s, p, ceil):
    x = randn(rng, *xs)
    ours = ac.max_pool2d(x, k, s, p, ceil_mode=ceil, device="cuda")
    assert_close(ours, F.max_pool2d(t64(x), k, s, p, ceil_mode=ceil), f"max_pool2d {xs} k{k}")


@pytest.mark.parametrize("xs,k,s,p,d,ceil", [
    ((2, 3, 11, 12), 3, 1, 1, 2, False),
    ((2, 3, 11, 12), 3, 2, 1, (2, 3), True),
    ((1, 2, 10, 9), (2, 3), (1, 2), (1, 1), (3, 2), False),
    ((2, 64, 55, 55), 3, 2, 0, 1, False),
    ((1, 1, 7, 7), 2, 3, 1, 3, True),
    ((1, 2, 5, 6), (1, 2), 1, 0, (2**31 - 1, 2), False),   # one tap high: its dilation is moot
    ((1, 1, 4, 5), 2, 2**31 - 1, 0, 1, False),            # a stride near INT_MAX: one window
    ((1, 1, 1, 1), 2, 1, 1, 2, False),                    # windows wholly in padding
])
def test_max_pool2d_dilation_and_indices(rng, xs, k, s, p, d, ceil):
    # Values with ties (small integers), NaN and a plane of -inf: each makes the index
    # a choice, which must be PyTorch's.
    x = rng.integers(-2, 3, xs).astype(np.float32)
    x.flat[rng.choice(x.size, max(1, x.size // 20), replace=False)] = np.nan
    x[0, 0] = -np.inf
    # PyTorch's CPU kernel is the reference: the index rule is written after it
    ref, ref_idx = F.max_pool2d(torch.from_numpy(x).double(), k, s, p, d, ceil, return_indices=True)
    ours, idx = ac.max_pool2d(x, k, s, p, d, ceil, True, device="cuda")
    assert idx.dtype == np.int64 and idx.shape == ours.shape == tuple(ref.shape)
    np.testing.assert_array_equal(ours, ref.numpy().astype(np.float32))
    np.testing.assert_array_equal(idx, ref_idx.numpy())
    np.testing.assert_array_equal(ac.max_pool2d(x, k, s, p, d, ceil, device="cuda"), ours)


def test_max_pool2d_propagates_nan(rng):
    x = randn(rng, 2, 3, 9, 9)
    x[0, 0, 4, 4] = np.nan
    x[1, 2, 0, 0] = np.nan
    x[1, 1, 3, 3] = -np.inf
    ours = ac.max_pool2d(x, 3, 2, device="cuda")
    ref = F.max_pool2d(torch.from_numpy(x).double(), 3, 2).numpy()
    assert np.array_equal(np.isnan(ours), np.isnan(ref)) and np.isnan(ref).sum() >= 2
    ok = ~np.isnan(ref)
    assert np.array_equal(ours[ok], ref[ok].astype(np.float32))


@pytest.mark.parametrize("xs,out", [
    ((2, 256, 13, 13), 6), ((1, 256, 1, 1), 6), ((2, 3, 10, 7), (4, 3)),
    ((1, 256, 6, 6), 6), ((1, 4, 3, 5), (6, 6)),
])
def test_adaptive_avg_pool2d(rng, xs, out):
    x = randn(rng, *xs)
    ours = ac.adaptive_avg_pool2d(x, out, device="cuda")
    assert_close(ours, F.adaptive_avg_pool2d(t64(x), out), f"adaptive_avg_pool2d {xs}->{out}")


@pytest.mark.parametrize("x", [
    np.array([[[[-396986154, -13478334, -1056408543, -42096007, 1509347698]]]], np.float32),
    np.full((1, 2, 2, 2), 3e38, np.float32),
])
def test_adaptive_avg_pool2d_sums_without_losing_the_mean(x):
    # as on the CPU (test_ops_parity): float32 sums would lose these means
    np.testing.assert_array_equal(ac.adaptive_avg_pool2d(x, 1, device="cuda"),
                                  F.adaptive_avg_pool2d(t64(x), 1).cpu().numpy().astype(np.float32))


@pytest.mark.parametrize("n,i,o,bias", [
    (1, 9216, 4096, True),      # fc1 at batch 1: the weight-streaming kernel
    (3, 4096, 1000, True),
    (8, 4096, 4096, False),
    (16, 100, 64, True),        # two passes of 8 rows
    (5, 37, 11, True),          # I % 4 != 0: the scalar path
    (17, 300, 50, True),        # first batch size on the tiled GEMM
    (64, 512, 256, True),
    (256, 1024, 100, False),
    (2, 4096, 1000, True),      # two rows per pass of the streaming kernel
    (12, 68, 33, True),         # a pass of 8 rows, then one of 4
    (2, 128, 7, True),          # I/4 = 32, 96: a lane's last float4 group ends exactly at
    (3, 384, 9, False),         # the row's end (the bound of the unrolled loads)
    (2, 0, 3, True),            # no inputs: the bias, as in PyTorch
    (3, 0, 5, False),
])
def test_linear(rng, n, i, o, bias):
    x = randn(rng, n, i)
    w = randn(rng, o, i, scale=(1.0 / max(i, 1)) ** 0.5)
    b = randn(rng, o, scale=0.1) if bias else None
    ours = ac.linear(x, w, b, device="cuda")
    assert_close(ours, F.linear(t64(x), t64(w), t64(b)), f"linear {n}x{i}->{o}")


@pytest.mark.parametrize("shape", [(1,), (4099,), (2, 3, 5, 7), (64, 4096)])
def test_relu(rng, shape):
    x = randn(rng, *shape)
    x.flat[0] = np.nan
    if x.size > 3:
        x.flat[1], x.flat[2], x.flat[3] = np.inf, -np.inf, -0.0
    ours = ac.relu(x, device="cuda")
    assert ours.shape == x.shape and ours.dtype == np.float32
    assert np.isnan(ours.flat[0])            # relu(NaN) is NaN, as torch.relu
    rest = ~np.isnan(x)
    assert np.array_equal(ours[rest], np.maximum(x[rest], 0))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim", [((3, 1000), -1), ((2, 5, 7), 1), ((4, 6), 0), ((1, 1), 1)])
def test_softmax(rng, fn, shape, dim):
    x = randn(rng, *shape, scale=3.0)
    # 1e4 overflows exp() unless the max really covers the whole reduced line: at the end
    # of the first line (the last warp's elements) and at the start of the last line
    # (the first warp's), so a maximum over some warps only cannot pass.
    lines = np.moveaxis(x, dim, -1)            # a view: writes land in x
    lines[..., -1].flat[0] = 1e4
    lines[..., 0].flat[-1] = 1e4
    ours = getattr(ac, fn)(x, dim, device="cuda")
    assert_close(ours, getattr(F, fn)(t64(x), dim=dim), f"{fn} {shape} dim={dim}")


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_nan_row(fn):
    x = np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]], np.float32)
    ours = getattr(ac, fn)(x, -1, device="cuda")
    ref = getattr(F, fn)(torch.from_numpy(x).double(), dim=-1).numpy()
    assert np.isnan(ours[0]).all() and np.isnan(ref[0]).all()
    assert_close(ours[1:], torch.from_numpy(ref[1:]), fn)


# ---- whole networks ----------------------------------------------------------

@pytest.fixture(scope="module")
def nets():
    """variant -> (torch float64 reference on REF_DEVICE, state dict of NumPy arrays, alexnet_c CUDA model)."""
    cache = {}

    def get(variant):
        if variant not in cache:
            model = make_model(variant, 1000, seed=7)
            sd = {k: v.numpy().copy() for k, v in model.state_dict().items()}
            ours = ac.AlexNet.from_state_dict(sd).to("cuda")
            assert ours.device == "cuda"
            cache[variant] = (model.double().to(REF_DEVICE), sd, ours)
        return cache[variant]

    return get


def reference(model, x):
    with torch.no_grad():
        return model(t64(x)).cpu()


def assert_topk_agree(ours, ref, k=5):
    """Top-1 and top-5 agree, except where the reference itself has a near tie at the cut."""
    ref = ref.numpy()
    err = np.max(np.abs(ours - ref))
    for row_o, row_r in zip(ours, ref):
        order = np.argsort(-row_r)
        if row_r[order[0]] - row_r[order[1]] > 2 * err:
            assert np.argmax(row_o) == order[0]
        if row_r[order[k - 1]] - row_r[order[k]] > 2 * err:
            assert set(np.argsort(-row_o)[:k]) == set(order[:k])


MODEL_CASES = [
    ("torchvision", 1, 224, 224), ("torchvision", 3, 224, 224),
    ("torchvision", 1, 63, 63), ("torchvision", 3, 63, 63),
    ("torchvision", 1, 256, 320), ("torchvision", 3, 256, 320),
    ("original", 1, 227, 227), ("original", 3, 227, 227),
]


@pytest.mark.parametrize("variant,n,h,w", MODEL_CASES,
                         ids=[f"{v}-N{n}-{h}x{w}" for v, n, h, w in MODEL_CASES])
def test_model_parity(rng, nets, variant, n, h, w):
    ref_model, _, ours_model = nets(variant)
    x = randn(rng, n, 3, h, w)
    ref = reference(ref_model, x)
    # Three calls at one shape: plain launches (a new shape), then capture + replay, then
    # replay; a capture that failed silently would still give the same bits, so count.
    _, replays0 = ours_model._net.cuda_graph_counts()
    outs = [ours_model(x) for _ in range(3)]
    captures, replays = ours_model._net.cuda_graph_counts()
    assert captures >= 1 and replays - replays0 >= 2, (captures, replays0, replays)
    assert_close(outs[0], ref, f"{variant} N={n} {h}x{w}")
    assert_topk_agree(outs[0], ref)
    # The same kernels in the same order: a replayed graph gives the very same bits.
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_model_shape_changes_and_workspace_growth(rng, nets):
    ref_model, _, ours = nets("torchvision")
    for n, h, w in [(1, 63, 63), (1, 63, 63), (4, 256, 320), (1, 63, 63), (2, 100, 80), (2, 100, 80)]:
        x = randn(rng, n, 3, h, w)
        assert_close(ours(x), reference(ref_model, x), f"N={n} {h}x{w}")


def test_original_rejects_other_sizes(nets):
    _, _, ours = nets("original")
    with pytest.raises(ValueError):
        ours(np.zeros((1, 3, 224, 224), np.float32))
    ours(np.zeros((1, 3, 227, 227), np.float32))   # still fine afterwards


def test_load_to_cuda(rng, tmp_path):
    model = make_model("original", 10, seed=3)
    path = tmp_path / "original.pth"
    torch.save(model.state_dict(), path)
    ours = ac.load(path, device="cuda")
    assert ours.device == "cuda" and ours.variant == "original" and ours.num_classes == 10
    x = randn(rng, 2, 3, 227, 227)
    assert_close(ours(x), reference(model.double().to(REF_DEVICE), x), "load(device='cuda')")


def test_load_state_dict_on_a_cuda_model(rng):
    """In place on the GPU: the device and precision stay, the new weights are used."""
    model = make_model("torchvision", 10, seed=4)
    ours = ac.AlexNet(num_classes=10, seed=0, device="cuda")
    x = randn(rng, 1, 3, 96, 96)
    before = ours(x)
    ours.load_state_dict(model.state_dict())
    assert ours.device == "cuda" and ours.precision == "float32"
    assert_close(ours(x), reference(model.double().to(REF_DEVICE), x), "load_state_dict on cuda")
    assert not np.array_equal(ours(x), before)


@pytest.mark.parametrize("bias_shape", [(1, 4), (3, 4), ()])
def test_linear_broadcast_bias(rng, bias_shape):
    x, w, b = randn(rng, 3, 20), randn(rng, 4, 20, scale=0.2), randn(rng, *bias_shape)
    assert_close(ac.linear(x, w, b, device="cuda"), F.linear(t64(x), t64(w)) + t64(b), f"bias {bias_shape}")


def test_cuda_and_cpu_models_agree(rng, nets):
    _, sd, ours = nets("torchvision")
    cpu = ac.AlexNet.from_state_dict(sd)
    x = randn(rng, 2, 3, 224, 224)
    assert_close(ours(x), torch.from_numpy(cpu(x).astype(np.float64)), "cuda vs cpu")


def test_graphs_off_gives_the_same_bits(rng, nets, monkeypatch):
    _, sd, with_graphs = nets("torchvision")
    monkeypatch.setenv("ALEXNET_C_CUDA_GRAPHS", "0")
    plain = ac.AlexNet.from_state_dict(sd).to("cuda")
    x = randn(rng, 1, 3, 224, 224)
    _, replays0 = with_graphs._net.cuda_graph_counts()
    for _ in range(3):
        assert np.array_equal(plain(x), with_graphs(x))
    assert plain._net.cuda_graph_counts() == (0, 0)
    assert with_graphs._net.cuda_graph_counts()[1] - replays0 >= 2


def test_profile_prints_every_layer(rng, nets, monkeypatch, capfd):
    ref_model, sd, _ = nets("torchvision")
    monkeypatch.setenv("ALEXNET_C_CUDA_PROFILE", "1")
    ours = ac.AlexNet.from_state_dict(sd).to("cuda")
    x = randn(rng, 2, 3, 224, 224)
    out = ours(x)
    err = capfd.readouterr().err
    names = re.findall(r"^alexnet_c\.cuda\.layer (\w+) N=2 H=224 W=224 ms=([0-9.]+)$", err, re.M)
    assert [n for n, _ in names] == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5",
                                     "pool5", "fc1", "fc2", "fc3"], err
    assert all(float(ms) >= 0 for _, ms in names)
    assert_close(out, reference(ref_model, x), "profiled forward")


# ---- every GEMM tile shape ----------------------------------------------------

_TILE_CHILD = r"""
import sys
import numpy as np, torch, torch.nn.functional as F
import alexnet_c as ac
precision, tol = sys.argv[1], float(sys.argv[2])
rng = np.random.default_rng(5)
t = lambda a: None if a is None else torch.from_numpy(a).double()
def check(ours, ref, what):
    ref = ref.numpy()
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err <= tol, f"{what}: {err}"
convs = [((2, 3, 67, 67), (64, 3, 11, 11), 4, 2, 1), ((2, 64, 13, 13), (192, 64, 5, 5), 1, 2, 1),
         ((3, 32, 7, 9), (40, 16, 3, 3), 1, 1, 2), ((1, 8, 5, 5), (130, 8, 1, 1), 1, 0, 1)]
for xs, ws, s, p, g in convs + [((2, 16, 15, 14), (70, 16, 3, 3), 1, 2, 1)]:
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) * 0.1).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    d = 2 if xs == (2, 16, 15, 14) else 1   # the last: dilated taps through every tile
    check(ac.conv2d(x, w, b, s, p, d, g, device="cuda", precision=precision),
          F.conv2d(t(x), t(w), t(b), s, p, d, g), xs)
for n, i, o in [(40, 300, 70), (130, 64, 129)]:
    x = rng.standard_normal((n, i)).astype(np.float32)
    w = (rng.standard_normal((o, i)) * 0.1).astype(np.float32)
    check(ac.linear(x, w, None, device="cuda", precision=precision), F.linear(t(x), t(w)), (n, i, o))
print("tile ok")
"""


@pytest.mark.parametrize("precision", ["float32", "tf32"])
@pytest.mark.parametrize("tile", ["large", "medium", "small"])
def test_every_gemm_tile(tile, precision):
    """The cost model picks one tile per shape; ALEXNET_C_CUDA_TILE (read once per
    process) forces each in a child, so all three kernels of each precision are checked."""
    tol = TOL if precision == "float32" else TF32_TOL
    res = run_python(["-c", _TILE_CHILD, precision, str(tol)], env=child_env(ALEXNET_C_CUDA_TILE=tile))
    assert res.returncode == 0 and "tile ok" in res.stdout, res.stdout + res.stderr


def test_gemm_tile_choice_skips_a_grid_too_tall():
    """2**21 + 1 outputs need 65537 rows of 32-row tiles, past grid.y's 65535, while the
    128-row tile needs 16385: the cost model preferred the small tile at 17 rows and
    refused the call; it now takes a tile whose grid fits."""
    o = 2**21 + 1
    x = (np.arange(17, dtype=np.float32) / 7)[:, None]
    w = (np.arange(o, dtype=np.float32) % 13)[:, None]   # exact products: bits, not a tolerance
    y = ac.linear(x, w, device="cuda")
    assert np.array_equal(y, x @ w.T)


# ---- precision="tf32": the tensor-core GEMMs ---------------------------------

@pytest.mark.parametrize("name,xs,ws,stride,padding,groups,bias", CONV_CASES,
                         ids=[c[0] for c in CONV_CASES])
def test_conv2d_tf32(rng, name, xs, ws, stride, padding, groups, bias):
    x = randn(rng, *xs)
    w = randn(rng, *ws, scale=(2.0 / np.prod(ws[1:])) ** 0.5)
    b = randn(rng, ws[0], scale=0.1) if bias else None
    ours = ac.conv2d(x, w, b, stride, padding, groups=groups, device="cuda", precision="tf32")
    ref = F.conv2d(t64(x), t64(w), t64(b), stride, padding, 1, groups)
    assert_close(ours, ref, name, tol=TF32_TOL)


@pytest.mark.parametrize("n,i,o,bias", [(17, 300, 50, True), (64, 512, 256, True), (256, 1024, 100, False),
                                        (40, 9216, 64, True), (33, 7, 5, True), (20, 0, 3, True)])
def test_linear_tf32(rng, n, i, o, bias):
    x = randn(rng, n, i)
    w = randn(rng, o, i, scale=(1.0 / max(i, 1)) ** 0.5)
    b = randn(rng, o, scale=0.1) if bias else None
    ours = ac.linear(x, w, b, device="cuda", precision="tf32")
    assert_close(ours, F.linear(t64(x), t64(w), t64(b)), f"linear tf32 {n}x{i}->{o}", tol=TF32_TOL)


def test_linear_tf32_small_batch_is_the_float32_kernel(rng):
    """Up to 16 rows the weight-streaming kernel runs in either precision (it is bound by
    memory, where tensor cores gain nothing): the very same bits."""
    x, w = randn(rng, 16, 4096), randn(rng, 1000, 4096, scale=1 / 64)
    assert np.array_equal(ac.linear(x, w, device="cuda", precision="tf32"), ac.linear(x, w, device="cuda"))


# TF32 keeps 10 of float32's 23 mantissa bits, rounding to nearest with ties away from
# zero (cvt.rna). With K = 64 products of 1 * v the exact sum is 64 * tf32(v), integers
# or halves that any summation order gives exactly; float32 would give 64 * v.
_ROUNDING = [(1 + 2.0 ** -12, 64.0),                      # below half an ulp (2^-10): down
             (1 + 2.0 ** -11, 64.0 * (1 + 2.0 ** -10)),   # a tie: away from zero, not to even
             (-(1 + 2.0 ** -11), -64.0 * (1 + 2.0 ** -10)),
             (1 + 3 * 2.0 ** -12, 64.0 * (1 + 2.0 ** -10))]


@pytest.mark.parametrize("v,want", _ROUNDING)
def test_tf32_rounds_both_operands_to_nearest_away(v, want):
    ones, vals = np.ones((1, 64, 1, 1), np.float32), np.full((1, 64, 1, 1), v, np.float32)
    for x, w, what in [(ones, vals, "weight"), (vals, ones, "input")]:
        got = ac.conv2d(x, w, device="cuda", precision="tf32")
        assert got.ravel().tolist() == [want], (what, v, got.ravel())
        assert ac.conv2d(x, w, device="cuda").ravel().tolist() == [np.float32(64 * np.float32(v))]
    x, w = np.ones((20, 64), np.float32), np.full((3, 64), v, np.float32)   # 20 rows: the GEMM
    assert (ac.linear(x, w, device="cuda", precision="tf32") == want).all()


TF32_MODEL_CASES = [("torchvision", 1, 224, 224), ("original", 1, 227, 227),
                    ("torchvision", 20, 63, 63)]   # 20 rows: the FC layers on the GEMM too


@pytest.mark.parametrize("variant,n,h,w", TF32_MODEL_CASES,
                         ids=[f"{v}-N{n}-{h}x{w}" for v, n, h, w in TF32_MODEL_CASES])
def test_model_tf32(rng, nets, variant, n, h, w):
    ref_model, sd, _ = nets(variant)
    ours = ac.AlexNet.from_state_dict(sd, device="cuda", precision="tf32")
    assert ours.precision == "tf32" and ours.device == "cuda"
    assert "(device): cuda (tf32)" in repr(ours)
    x = randn(rng, n, 3, h, w)
    ref = reference(ref_model, x)
    outs = [ours(x) for _ in range(2)]   # plain launches, then a captured graph
    assert ours._net.cuda_graph_counts() == (1, 1)
    assert_close(outs[0], ref, f"tf32 {variant} N={n} {h}x{w}", tol=TF32_TOL)
    assert_topk_agree(outs[0], ref)
    assert np.array_equal(outs[0], outs[1])


def test_switching_precision_keeps_the_weights_and_drops_the_graph(rng, nets):
    ref_model, sd, fp32 = nets("torchvision")
    x = randn(rng, 1, 3, 224, 224)
    want = fp32(x)
    m = ac.AlexNet.from_state_dict(sd).to("cuda")
    assert m.precision == "float32"
    assert np.array_equal(m(x), want) and np.array_equal(m(x), want)   # graph captured
    m.to("cuda", precision="tf32")
    tf32 = m(x)
    assert m.precision == "tf32" and not np.array_equal(tf32, want)
    assert_close(tf32, reference(ref_model, x), "tf32 after switching", tol=TF32_TOL)
    m.to("cuda")                                   # None keeps the precision
    assert m.precision == "tf32" and np.array_equal(m(x), tf32)
    m.cuda(precision="float32")
    assert m.precision == "float32"
    assert np.array_equal(m(x), want) and np.array_equal(m(x), want)
    assert m._net.cuda_graph_counts()[0] == 3      # one graph per precision change
    m.to("cpu")
    assert m.precision == "float32" and m.device == "cpu"
    m.to("cuda")                                   # a fresh upload starts at float32
    assert m.precision == "float32" and np.array_equal(m(x), want)


def test_load_with_tf32(rng, tmp_path):
    model = make_model("original", 10, seed=3)
    path = tmp_path / "original.pth"
    torch.save(model.state_dict(), path)
    ours = ac.load(path, device="cuda", precision="tf32")
    assert ours.precision == "tf32"
    x = randn(rng, 1, 3, 227, 227)
    assert_close(ours(x), reference(model.double().to(REF_DEVICE), x), "load tf32", tol=TF32_TOL)


# ---- errors leave the process usable ------------------------------------------

def _fill_gpu(leave_bytes):
    """A torch tensor that takes all but about leave_bytes of free GPU memory, or None."""
    free, _ = torch.cuda.mem_get_info()
    for slack in (0, 64 << 20, 256 << 20, 1 << 30):
        size = free - leave_bytes - slack
        if size <= 0:
            return None
        try:
            return torch.empty(size, dtype=torch.uint8, device="cuda")
        except RuntimeError:
            continue
    return None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="filling the GPU needs torch with CUDA")
def test_out_of_memory_then_recovers(rng, nets):
    _, _, model = nets("torchvision")
    x_op = randn(rng, 64 << 20)            # 256 MB: relu needs that much on the device
    x_net = randn(rng, 64, 3, 224, 224)    # batch 64 grows the net's workspace past what is left
    hog = _fill_gpu(48 << 20)
    if hog is None:
        pytest.skip("could not fill the GPU's memory")
    try:
        if torch.cuda.mem_get_info()[0] > (200 << 20):
            pytest.skip("the GPU kept too much memory free to force an allocation failure")
        with pytest.raises(MemoryError, match="(?i)out of memory"):
            ac.relu(x_op, device="cuda")
        with pytest.raises(MemoryError, match="(?i)out of memory"):
            model(x_net)
    finally:
        del hog
        torch.cuda.empty_cache()
    assert np.array_equal(ac.relu(x_op, device="cuda"), np.maximum(x_op, 0))
    small = randn(rng, 1, 3, 224, 224)
    assert_close(model(small), torch.from_numpy(ac.AlexNet.from_state_dict(model.state_dict())(small)
                                                .astype(np.float64)), "after OOM")
    assert model(x_net).shape == (64, 1000)


def test_no_visible_device_is_reported_not_crashed():
    code = ("import numpy as np, alexnet_c as ac\n"
            "assert not ac.cuda_is_available()\n"
            "print('reason:', ac.cuda_unavailable_reason())\n"
            "try:\n    ac.relu(np.ones(3, np.float32), device='cuda')\n"
            "except RuntimeError as e:\n    print('raised:', e)\n"
            "print(ac.relu(np.array([-1, 2], np.float32)))\n")
    res = run_python(["-c", code], env=child_env(CUDA_VISIBLE_DEVICES=""))
    assert res.returncode == 0, res.stderr
    assert "reason: " in res.stdout and "raised: " in res.stdout and "[0. 2.]" in res.stdout, res.stdout


# ---- threads -------------------------------------------------------------------

def _in_two_threads(reps, error_of):
    """Threads k = 0 and 1 each compute error_of(k) reps times at once; every error
    above TOL and every exception is reported."""
    errors = []

    def work(k):
        try:
            for _ in range(reps):
                err = error_of(k)
                if err > TOL:
                    errors.append((k, err))
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_two_threads_one_model(rng, nets):
    """Two host threads on one CUDA model, at different shapes so that each call also
    re-plans the workspace and the graph: the net's mutex must serialise them."""
    ref_model, _, model = nets("torchvision")
    xs = [randn(rng, 2, 3, 224, 224), randn(rng, 1, 3, 63, 63)]
    refs = [reference(ref_model, x) for x in xs]
    _in_two_threads(4, lambda k: max_rel_err(model(xs[k]), refs[k]))


def test_two_threads_ops(rng):
    """Op calls from two threads at once, each on its own per-thread stream."""
    xs = [randn(rng, 4, 64, 27, 27) for _ in range(2)]
    w = randn(rng, 192, 64, 5, 5, scale=0.05)
    refs = [F.conv2d(t64(x), t64(w), None, 1, 2) for x in xs]
    _in_two_threads(5, lambda k: max_rel_err(ac.conv2d(xs[k], w, None, 1, 2, device="cuda"), refs[k].cpu()))


# ---- the command line -----------------------------------------------------------

@pytest.mark.parametrize("precision,limit", [("float32", "0.0001"), ("tf32", "0.005")])
def test_cli_check_on_cuda(precision, limit):
    res = run_python(["-m", "alexnet_c", "check", "--device", "cuda", "--precision", precision,
                      "--batch", "2", "--size", "96"], timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"CUDA ({precision}" in res.stdout and f"(limit {limit})" in res.stdout, res.stdout
    assert ("on the CPU emulator" in res.stdout) == bool(ac._C.CUDA_EMULATED), res.stdout
    assert res.stdout.rstrip().endswith("PASS"), res.stdout


def test_cli_predict_on_cuda(tmp_path):
    import json
    from PIL import Image
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(image)
    cpu = ac.AlexNet(num_classes=1000, seed=0)
    cpu.save(tmp_path / "w.safetensors")
    probs = ac.softmax(cpu(ac.preprocess(str(image))[None]), dim=1)[0]
    reported = {}
    for precision, rtol in [("float32", 1e-4), ("tf32", 2e-2)]:
        res = run_python(["-m", "alexnet_c", "predict", str(image), "--weights", str(tmp_path / "w.safetensors"),
                          "--device", "cuda", "--precision", precision, "--topk", "5", "--json"])
        assert res.returncode == 0, res.stdout + res.stderr
        got = json.loads(res.stdout)["predictions"]
        assert len(got) == 5
        for row in got:   # each reported probability is the CPU's for that category
            i = ac.IMAGENET_CATEGORIES.index(row["category"])
            assert row["probability"] == pytest.approx(float(probs[i]), rel=rtol), (precision, row)
        reported[precision] = got
    assert [r["category"] for r in reported["float32"]] == [c for c, _ in cpu.predict(str(image), topk=5)]
    assert reported["tf32"] != reported["float32"]   # --precision reached the GPU
