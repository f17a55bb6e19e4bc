"""Every CPU ISA path (generic, avx2, avx512 where this CPU has them) against
torch float64 and against the naive C references, at shapes that hit every tile
edge: M, N, K not multiples of the micro-kernel tiles (4x16, 6x16, 8x48), K
below and above the depth block, column tiles straddling two images, batch 1, 3,
9 and 64 for the FC path, groups=2, strides and paddings. DESIGN.md's rule:
max|ours - ref| <= 1e-4 * max|ref|."""
import numpy as np
import pytest

import alexnet_c as ac
from alexnet_c import _C

import torch
F = torch.nn.functional

from _isa import ISAS, isa, threads  # noqa: F401  (fixtures)


def close(ours, ref, what):
    ref = np.asarray(ref, dtype=np.float64)
    err = float(np.max(np.abs(ours.astype(np.float64) - ref))) if ref.size else 0.0
    tol = 1e-4 * float(np.max(np.abs(ref))) if ref.size else 0.0
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    assert err <= tol, f"{what}: max err {err:.3g} > tol {tol:.3g}"


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# (N, C, H, W, OC, K, stride, pad, groups[, dilation])
CONV_CASES = [
    (1, 3, 35, 35, 64, 11, 4, 2, 1),      # conv1-like: stride 4, 3 channels, M=64 (12 does not divide)
    (2, 3, 31, 31, 96, 11, 4, 0, 1),      # original conv1: no padding, 2 images
    (1, 64, 15, 15, 192, 5, 1, 2, 1),     # K=1600 > depth block, N=225 not a multiple of 32
    (3, 24, 13, 13, 40, 3, 1, 1, 1),      # 169 columns per image: tiles straddle images
    (1, 5, 9, 7, 7, 3, 1, 0, 1),          # tiny: M=7, K=45 < every block, non-square
    (2, 8, 10, 11, 20, 3, 2, 1, 2),       # groups=2, stride 2, odd output width
    (1, 300, 5, 5, 13, 1, 1, 0, 1),       # 1x1, K=300 not a multiple of anything
    (1, 4, 12, 12, 6, 5, 3, 2, 2),        # groups=2 with 3 output channels per group, stride 3
    (64, 16, 6, 6, 12, 3, 1, 1, 1),       # batch 64 through the column split
    (2, 260, 7, 7, 17, 3, 1, 1, 1),       # K=2340 > 2048: two equal depth blocks, C re-read
    (2, 6, 19, 17, 10, 3, 1, 2, 1, 2),    # dilation 2: the padded copy, rows two apart
    (1, 3, 35, 33, 8, 5, 3, 4, 1, 2),     # dilation 2 on the phase-split input: every phase
    (1, 3, 20, 176, 8, 11, 4, 2, 1),      # stride 4, wide rows: 64-column blocks inside and at both ends
    (1, 2, 9, 133, 4, 3, 4, 0, 1),        # stride 4 unpadded: inside from column 0, a 2-lane last block
    (1, 96, 7, 9, 130, 5, 1, 2, 1),       # 63 columns, 2-4 panels: 2 threads split A's rows too,
                                          # into uneven groups, the last A panel partial, K in 2 blocks
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
def test_conv2d(isa, threads, case):
    N, C, H, W, OC, K, s, p, g, *d = case
    d = d[0] if d else 1
    rng = np.random.default_rng(hash(case) % 2**32)
    x, w, b = rand(rng, N, C, H, W), rand(rng, OC, C // g, K, K), rand(rng, OC)
    ref = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                   torch.from_numpy(b).double(), s, p, d, g).numpy()
    ours = ac.conv2d(x, w, b, s, p, d, g)
    close(ours, ref, f"conv2d {isa}")
    naive = ac.conv2d(x, w, b, s, p, d, g, _naive=True)
    close(naive, ref, "conv2d naive")
    close(ours, naive.astype(np.float64), f"conv2d {isa} vs naive")


def test_conv2d_no_bias(isa):
    rng = np.random.default_rng(5)
    x, w = rand(rng, 2, 7, 9, 9), rand(rng, 33, 7, 3, 3)
    ref = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), None, 1, 1).numpy()
    close(ac.conv2d(x, w, None, 1, 1), ref, f"conv2d no bias {isa}")


# (N, In, Out): batch 1/2/3 stream the weights in place (5 on AVX-512 too, in input-row
# groups of 3 + 2, only the first prefetching); 7 (AVX2), 8/9 (AVX-512
# too) and 16/64 (every ISA) go through the packed GEMM with W^T packed per call; In not a
# multiple of 16/8 exercises the masked / scalar tails and of the 16x16
# transposes, In > 2048 two depth blocks, Out not a multiple of 48 partial panels.
LINEAR_CASES = [(1, 9216, 37), (3, 100, 7), (9, 1030, 101), (64, 333, 45), (2, 5, 3),
                (1, 17, 1), (8, 2051, 66), (64, 1500, 130), (7, 1, 9), (16, 4099, 97),
                (17, 0, 5), (12, 31, 1), (1, 21, 12), (5, 40, 19)]


@pytest.mark.parametrize("case", LINEAR_CASES, ids=lambda c: "x".join(map(str, c)))
def test_linear(isa, threads, case):
    N, In, Out = case
    rng = np.random.default_rng(N * 1000 + In)
    x, w, b = rand(rng, N, In), rand(rng, Out, In), rand(rng, Out)
    ref = F.linear(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                   torch.from_numpy(b).double()).numpy()
    ours = ac.linear(x, w, b)
    close(ours, ref, f"linear {isa}")
    naive = ac.linear(x, w, b, _naive=True)
    close(naive, ref, "linear naive")


def test_relu_nan_through_paths(isa):
    # conv's fused ReLU runs only in the net; here NaN must survive the GEMM epilogue.
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    w = np.ones((13, 1, 1, 1), np.float32)
    out = ac.conv2d(x, w)
    assert np.isnan(out[:, :, 1, 1]).all() and not np.isnan(out[:, :, 0, 0]).any()


# AlexNet's 3x3/2 pool has its own vector rows: widths 3..71 cover a single
# output column, masked tails of 1..15 and several 16-wide blocks; 55 and 27
# are pool1 and pool2, and a height of 13 is pool5.
@pytest.mark.parametrize("h,w", [(3, 3), (5, 4), (7, 33), (9, 34), (13, 13), (27, 27), (11, 55), (3, 71)])
def test_max_pool_3x3s2(isa, threads, h, w):
    rng = np.random.default_rng(h * 100 + w)
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    x.flat[rng.choice(x.size, 12, replace=False)] = [np.nan, np.inf, -np.inf, 0.0, -0.0, np.nan,
                                                      1e30, -1e30, np.nan, 0.0, -0.0, np.inf]
    ref = F.max_pool2d(torch.from_numpy(x), 3, 2).numpy()
    out = ac.max_pool2d(x, 3, 2)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)   # exact: NaN where torch has NaN, equal elsewhere
    np.testing.assert_array_equal(np.signbit(out), np.signbit(ref), err_msg=f"max_pool {isa}: sign of zero")


def _torch_model(variant, state):
    from alexnet_c.reference import torch_alexnet
    m = torch_alexnet(variant, 10)
    m.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return m.double().eval()


_REFS = {}


def _model_and_ref(variant, hw, batch, seed):
    """(alexnet_c model, input, torch float64 logits), computed once for all ISAs."""
    key = (variant, hw, batch, seed)
    if key not in _REFS:
        m = ac.AlexNet(num_classes=10, variant=variant, seed=seed)
        tm = _torch_model(variant, m.state_dict())
        x = np.random.default_rng(batch).random((batch, 3, hw, hw), dtype=np.float32)
        with torch.no_grad():
            ref = tm(torch.from_numpy(x).double()).numpy()
        _REFS[key] = (m, x, ref)
    return _REFS[key]


# Full size at batch 1; batch 3 and 9 (FC streaming vs tiled inputs) at the smallest input.
@pytest.mark.parametrize("variant,hw,batch", [("torchvision", 224, 1), ("original", 227, 1),
                                              ("torchvision", 67, 3), ("torchvision", 67, 9)])
def test_whole_model(isa, variant, hw, batch):
    m, x, ref = _model_and_ref(variant, hw, batch, 1)
    ours = m(x)
    close(ours, ref, f"{variant} {hw} batch {batch} {isa}")
    assert (np.argsort(-ours, 1)[:, :5] == np.argsort(-ref, 1)[:, :5]).all()


def test_model_survives_isa_switch():
    # Conv weights are packed for the ISA active when the net was built; a later
    # switch must still give right answers (per-call packing).
    before = _C.get_isa()[0]
    m = ac.AlexNet(num_classes=10, seed=2)
    tm = _torch_model("torchvision", m.state_dict())
    x = np.random.default_rng(0).random((2, 3, 99, 99), dtype=np.float32)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x).double()).numpy()
    try:
        for name in ISAS:
            _C.set_isa(name)
            close(m(x), ref, f"after switching to {name}")
    finally:
        _C.set_isa(before)


# The portable path at batch 64 is slow; the smaller batches cover it.
@pytest.mark.parametrize("isa", [i for i in ISAS if i != "generic"], indirect=True)
def test_batch64_model(isa):
    m, x, ref = _model_and_ref("torchvision", 63, 64, 3)
    close(m(x), ref, f"batch 64 {isa}")


# (shape, dim): contiguous rows (the vectorised AVX-512 path: D not a multiple of 16,
# D < 16, D = 1) and strided rows (the scalar path).
SOFTMAX_CASES = [((64, 1000), 1), ((3, 17), -1), ((5, 7), 1), ((4, 1), 1), ((2, 33, 5), 1), ((6, 9), 0)]


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-dim{c[1]}")
def test_softmax(isa, threads, case, log):
    shape, dim = case
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    x = rand(rng, *shape) * 30.0
    ours = (ac.log_softmax if log else ac.softmax)(x, dim=dim)
    ref = (F.log_softmax if log else F.softmax)(torch.from_numpy(x).double(), dim=dim).numpy()
    close(ours, ref, f"{'log_' if log else ''}softmax {isa}")


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_special_values(isa, log):
    """NaN anywhere -> NaN row; -inf entries -> 0 / -inf; an all -inf row -> NaN; +inf; 1e4."""
    rows = np.full((6, 37), 0.5, np.float32)
    rows[0, 20] = np.nan
    rows[1, ::3] = -np.inf
    rows[2, :] = -np.inf
    rows[3, 5] = np.inf
    rows[4, :] = np.linspace(-1e4, 1e4, 37)
    rows[5, :] = np.linspace(-200, 0, 37)      # outputs down to the subnormal range
    ours = (ac.log_softmax if log else ac.softmax)(rows, dim=1)
    ref = (F.log_softmax if log else F.softmax)(torch.from_numpy(rows).double(), dim=1).numpy().astype(np.float32)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(ours) & (ours > 0), np.isinf(ref) & (ref > 0))
    np.testing.assert_array_equal(np.isinf(ours) & (ours < 0), np.isinf(ref) & (ref < 0))
    np.testing.assert_array_equal(ours == 0, ref == 0)
    finite = np.isfinite(ref) & (np.abs(ref) > 1e-30)
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-5, atol=0)
