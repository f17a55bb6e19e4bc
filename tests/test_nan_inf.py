"""NaN and Inf: where they land in every op's and the whole model's output is where
PyTorch puts them, and alexnet_c never turns on flush-to-zero / denormals-are-zero."""
from __future__ import annotations

import copy
import os
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import alexnet_c as ac
from _subproc import run_neutral  # noqa: E402
from _torch_models import TOL, make_model

SCALE = float(os.environ.get("ALEXNET_C_PROPERTY_SCALE", "1"))
SPECIALS = np.array([np.nan, np.inf, -np.inf])


def _settings(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None,
                    derandomize=os.environ.get("CI") == "true",
                    suppress_health_check=[HealthCheck.too_slow], print_blob=True)


def inject(seed: int, shape, dtype="float32", frac=0.1, zeros=0.0) -> np.ndarray:
    """N(0,1) values with about `frac` of them NaN, +Inf or -Inf (and `zeros` of them 0)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x[rng.random(shape) < zeros] = 0.0
    hit = rng.random(shape) < frac
    x[hit] = rng.choice(SPECIALS, size=int(hit.sum()))
    return np.asarray(x).astype(dtype)


def ref64(a) -> torch.Tensor:
    return torch.from_numpy(np.array(np.asarray(a, dtype=np.float32), dtype=np.float64))


def same_specials(out: np.ndarray, ref: torch.Tensor, exact: bool = False) -> None:
    """NaN, +Inf and -Inf at the same positions; the finite rest within the parity rule."""
    r = ref.numpy()
    assert out.shape == r.shape and out.dtype == np.float32
    for name, pred in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        mismatch = pred(out) != pred(r)
        assert not mismatch.any(), (f"{name} positions differ at {np.argwhere(mismatch)[:5].tolist()}: "
                                    f"ours {out[mismatch][:5]}, torch {r[mismatch][:5]}")
    fin = np.isfinite(r)
    if fin.any():
        if exact:
            np.testing.assert_array_equal(out[fin], r[fin].astype(np.float32))
        else:
            scale = np.abs(r[fin]).max() or 1.0
            assert np.abs(out[fin].astype(np.float64) - r[fin]).max() <= TOL * scale


float_dtypes = st.sampled_from(["float16", "float32", "float64"])
seeds = st.integers(0, 2**32 - 1)
fracs = st.sampled_from([0.02, 0.1, 0.5])


# ---- ops -------------------------------------------------------------------------

@_settings(40)
@given(seed=seeds, dt=float_dtypes, frac=fracs, N=st.integers(1, 2), groups=st.integers(1, 2),
       cg=st.integers(1, 3), ocg=st.integers(1, 3), H=st.integers(3, 10), W=st.integers(3, 10),
       K=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 1), dilation=st.integers(1, 2),
       bias=st.booleans(), where=st.sampled_from(["input", "weight", "bias", "all"]),
       zeros=st.sampled_from([0.0, 0.3]), naive=st.booleans())
def test_conv2d_specials(seed, dt, frac, N, groups, cg, ocg, H, W, K, stride, padding, dilation, bias, where,
                         zeros, naive):
    C, OC = cg * groups, ocg * groups
    if dilation * (K - 1) + 1 > min(H, W) + 2 * padding:
        dilation = 1
    fx = frac if where in ("input", "all") else 0.0
    fw = frac if where in ("weight", "all") else 0.0
    fb = frac if where in ("bias", "all") else 0.0
    x = inject(seed, (N, C, H, W), dt, fx, zeros)
    w = inject(seed + 1, (OC, cg, K, K), "float32", fw, zeros)   # zeros: 0 * Inf must give NaN
    b = inject(seed + 2, (OC,), "float32", fb) if bias or where == "bias" else None
    ref = F.conv2d(ref64(x), ref64(w), None if b is None else ref64(b), stride=stride, padding=padding,
                   dilation=dilation, groups=groups)
    same_specials(ac.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
                            _naive=naive), ref)


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("naive", [False, True])
def test_conv2d_naive_padding_times_special_weight(special, naive):
    x = np.ones((1, 1, 3, 3), np.float32)
    w = np.ones((1, 1, 2, 2), np.float32)
    w[0, 0, 0, 0] = special
    ref = F.conv2d(ref64(x), ref64(w), padding=1)   # first row and column: 0 * special = NaN
    same_specials(ac.conv2d(x, w, padding=1, _naive=naive), ref)


@_settings(30)
@given(seed=seeds, dt=float_dtypes, frac=fracs, shape=st.lists(st.integers(1, 6), min_size=0, max_size=4))
def test_relu_specials(seed, dt, frac, shape):
    x = inject(seed, tuple(shape), dt, frac)
    same_specials(ac.relu(x), F.relu(ref64(x)), exact=True)


def test_relu_specials_exact():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, -1.0, 1.0], np.float32)
    out = ac.relu(x)
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == 0 and out[5] == 0 and out[6] == 1


@_settings(40)
@given(seed=seeds, dt=float_dtypes, frac=fracs, N=st.integers(1, 2), C=st.integers(1, 3),
       H=st.integers(1, 9), W=st.integers(1, 9), k=st.integers(1, 3), stride=st.integers(1, 3),
       padding=st.integers(0, 1), dilation=st.integers(1, 2), ceil_mode=st.booleans())
def test_max_pool2d_specials(seed, dt, frac, N, C, H, W, k, stride, padding, dilation, ceil_mode):
    padding = min(padding, k // 2)
    x = inject(seed, (N, C, H, W), dt, frac)
    try:
        ref, ref_idx = F.max_pool2d(ref64(x), k, stride, padding, dilation, ceil_mode, return_indices=True)
    except RuntimeError:
        return   # output would be empty; test_properties checks that both refuse
    same_specials(ac.max_pool2d(x, k, stride, padding, dilation, ceil_mode), ref, exact=True)
    out, idx = ac.max_pool2d(x, k, stride, padding, dilation, ceil_mode, return_indices=True)
    same_specials(out, ref, exact=True)
    np.testing.assert_array_equal(idx, ref_idx.numpy())   # NaN: the last of its window


def test_max_pool2d_all_neg_inf_window():
    x = np.full((1, 1, 4, 4), -np.inf, np.float32)
    for padding in (0, 1):
        out = ac.max_pool2d(x, 3, 1, padding)
        ref = F.max_pool2d(torch.from_numpy(x), 3, 1, padding)
        assert np.all(np.isneginf(out)) and out.shape == tuple(ref.shape)
    # one window all -inf, its neighbour with a finite value, one with NaN
    y = np.full((1, 1, 2, 6), -np.inf, np.float32)
    y[0, 0, 0, 3] = 5.0
    y[0, 0, 1, 5] = np.nan
    out = ac.max_pool2d(y, 2)
    assert np.isneginf(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == 5.0 and np.isnan(out[0, 0, 0, 2])
    # the indices: the window's first place, the 5, the NaN; and as torch gives them
    out, idx = ac.max_pool2d(y, 2, return_indices=True)
    assert idx.tolist() == [[[[0, 3, 11]]]]
    assert idx.tolist() == F.max_pool2d(torch.from_numpy(y), 2, return_indices=True)[1].tolist()


@_settings(30)
@given(seed=seeds, dt=float_dtypes, frac=fracs, N=st.integers(1, 2), C=st.integers(1, 2),
       H=st.integers(1, 9), W=st.integers(1, 9), oh=st.integers(1, 10), ow=st.integers(1, 10))
def test_adaptive_avg_pool2d_specials(seed, dt, frac, N, C, H, W, oh, ow):
    x = inject(seed, (N, C, H, W), dt, frac)
    same_specials(ac.adaptive_avg_pool2d(x, (oh, ow)), F.adaptive_avg_pool2d(ref64(x), (oh, ow)))


@_settings(40)
@given(seed=seeds, dt=float_dtypes, frac=fracs, lead=st.sampled_from([(), (1,), (3,), (12,), (2, 5)]),
       In=st.integers(1, 70), Out=st.integers(1, 20), bias=st.booleans(), zeros=st.sampled_from([0.0, 0.3]),
       where=st.sampled_from(["input", "weight", "bias", "all"]), naive=st.booleans())
def test_linear_specials(seed, dt, frac, lead, In, Out, bias, zeros, where, naive):
    x = inject(seed, lead + (In,), dt, frac if where in ("input", "all") else 0.0, zeros)
    w = inject(seed + 1, (Out, In), "float32", frac if where in ("weight", "all") else 0.0, zeros)
    b = inject(seed + 2, (Out,), "float32", frac if where in ("bias", "all") else 0.0) \
        if bias or where == "bias" else None
    ref = F.linear(ref64(x), ref64(w), None if b is None else ref64(b))
    same_specials(ac.linear(x, w, b, _naive=naive), ref)


@_settings(40)
@given(seed=seeds, dt=float_dtypes, frac=st.sampled_from([0.05, 0.2, 0.6, 1.0]), log=st.booleans(),
       shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), data=st.data())
def test_softmax_specials(seed, dt, frac, log, shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = inject(seed, tuple(shape), dt, frac)
    ref = (F.log_softmax if log else F.softmax)(ref64(x), dim=dim)
    same_specials((ac.log_softmax if log else ac.softmax)(x, dim=dim), ref)


@pytest.mark.parametrize("row", [[-np.inf, -np.inf, -np.inf], [np.inf, 1.0, 2.0], [np.inf, np.inf, 0.0],
                                 [-np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0], [1e30, -1e30, 0.0]])
@pytest.mark.parametrize("fn,tfn", [(ac.softmax, F.softmax), (ac.log_softmax, F.log_softmax)])
def test_softmax_special_rows(row, fn, tfn):
    x = np.array([row], np.float32)
    same_specials(fn(x, dim=1), tfn(ref64(x), dim=1))


# ---- the whole model -----------------------------------------------------------

@pytest.fixture(scope="module")
def models():
    torch_model = make_model("torchvision", 10, seed=3)
    return ac.AlexNet.from_state_dict(torch_model.state_dict()), copy.deepcopy(torch_model).double()


@pytest.mark.parametrize("special,count", [(np.nan, 1), (np.inf, 1), (-np.inf, 1), (np.inf, 40), (None, 40)])
def test_model_specials(models, special, count):
    ours, ref_model = models
    rng = np.random.default_rng(count)
    x = rng.standard_normal((3, 3, 67, 70)).astype(np.float32)
    # image 0 untouched (must stay finite), image 1 hit in one corner, image 2 hit anywhere
    for img in (1, 2):
        for _ in range(count):
            c, h, w = rng.integers(3), rng.integers(8 if img == 1 else 67), rng.integers(8 if img == 1 else 70)
            x[img, c, h, w] = rng.choice(SPECIALS) if special is None else special
    with torch.no_grad():
        ref = ref_model(ref64(x))
    out = ours(x)
    assert np.isfinite(out[0]).all()
    same_specials(out, ref)


def test_model_specials_large_batch(models):
    """9 images (the classifier's packed-GEMM path): one image's NaN/Inf stay in its row."""
    ours, ref_model = models
    rng = np.random.default_rng(9)
    x = rng.standard_normal((9, 3, 63, 63)).astype(np.float32)
    x[4, 1, 30, 30] = np.nan
    x[7, 0, 0, 0] = np.inf
    with torch.no_grad():
        ref = ref_model(ref64(x))
    out = ours(x)
    same_specials(out, ref)
    clean = [i for i in range(9) if i not in (4, 7)]
    assert np.isfinite(out[clean]).all()


def test_model_special_weights():
    """NaN/Inf in the weights: the logits that they reach are NaN/Inf as in PyTorch."""
    torch_model = make_model("torchvision", 6, seed=4)
    with torch.no_grad():
        torch_model.classifier[6].weight[2, 17] = float("nan")
        torch_model.classifier[6].bias[4] = float("inf")
        torch_model.classifier[6].bias[5] = float("-inf")
    ours = ac.AlexNet.from_state_dict(torch_model.state_dict())
    x = np.random.default_rng(5).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = copy.deepcopy(torch_model).double()(ref64(x))
    out = ours(x)
    same_specials(out, ref)
    assert np.isnan(out[:, 2]).all() and np.isposinf(out[:, 4]).all() and np.isneginf(out[:, 5]).all()
    with torch.no_grad():   # a NaN in conv1 reaches every logit
        torch_model.features[0].weight[0, 0, 5, 5] = float("nan")
        ref = copy.deepcopy(torch_model).double()(ref64(x))
    same_specials(ac.AlexNet.from_state_dict(torch_model.state_dict())(x), ref)


# ---- no flush-to-zero / denormals-are-zero -------------------------------------

def test_subnormals_survive_kernels():
    prev = ac.get_num_threads()
    ac.set_num_threads(2)   # worker threads too: their MXCSR must be the default
    try:
        tiny = np.float32(1e-20)
        assert ac.relu(np.array([1e-45], np.float32))[0] == np.float32(1e-45)
        for rows in (2, 16):   # streaming path and packed GEMM path
            x = np.full((rows, 64), tiny, np.float32)
            w = np.full((32, 64), tiny, np.float32)
            out = ac.linear(x, w)
            expect = np.float32(64 * 1e-40)   # subnormal: FTZ/DAZ would give 0
            assert 0 < expect < np.finfo(np.float32).tiny
            np.testing.assert_allclose(out, expect, rtol=1e-3)
        x = np.full((2, 4, 9, 9), tiny, np.float32)
        w = np.full((8, 4, 3, 3), tiny, np.float32)
        out = ac.conv2d(x, w)
        np.testing.assert_allclose(out, np.float32(36e-40), rtol=1e-3)
        assert ac.adaptive_avg_pool2d(np.full((1, 1, 3, 3), 1e-45, np.float32), 1)[0, 0, 0, 0] > 0
    finally:
        ac.set_num_threads(prev)


_FTZ_SCRIPT = textwrap.dedent("""
    import numpy as np

    def check(where):
        t = np.float32(1e-45)                      # smallest subnormal
        assert t != 0, where + ": np.float32(1e-45) == 0"
        assert t > 0 and t * np.float32(2) == np.float32(2.8e-45), where + ": denormals-are-zero (DAZ) is on"
        assert np.float32(1e-38) / np.float32(4) != 0, where + ": flush-to-zero (FTZ) is on"
        a = np.full(1000, 1e-38, np.float32)       # vectorised numpy loops see the same MXCSR
        assert (a / np.float32(4) > 0).all(), where + ": FTZ in vector code"
        assert np.float64(5e-324) != 0, where + ": float64 subnormal flushed"

    check("before import")
    import alexnet_c as ac
    check("after import alexnet_c")
    ac.set_num_threads(2)
    m = ac.AlexNet(num_classes=10, seed=0)
    m(np.random.default_rng(0).standard_normal((2, 3, 63, 63)).astype(np.float32))
    ac.conv2d(np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32))
    ac.linear(np.ones((12, 30), np.float32), np.ones((7, 30), np.float32))
    ac.softmax(np.ones((4, 5), np.float32))
    check("after a forward pass")
    print("ok")
""")


def test_no_ftz_daz_in_a_fresh_process():
    """In a fresh interpreter (without torch): no FTZ/DAZ after import nor after forward passes."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(ac.__file__))]
                                                       + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    r = run_neutral([sys.executable, "-c", _FTZ_SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_no_ftz_daz_in_this_process():
    m = ac.AlexNet(num_classes=5, seed=1)
    m(np.zeros((1, 3, 63, 63), np.float32))
    assert np.float32(1e-45) != 0
    assert np.float32(1e-38) / np.float32(4) != 0
    assert np.float32(1e-45) * np.float32(2) == np.float32(2.8e-45)
