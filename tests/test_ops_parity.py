"""Every op against torch.nn.functional in float64 (DESIGN.md's parity rule)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import alexnet_c as ac
from _torch_models import TOL, max_rel_err


def t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


CONV_CASES = [
    # (N, C, H, W), (OC, KH, KW), stride, padding, groups, bias
    ((1, 3, 224, 224), (64, 11, 11), 4, 2, 1, True),     # torchvision conv1
    ((2, 3, 227, 227), (96, 11, 11), 4, 0, 1, True),     # original conv1
    ((1, 64, 27, 27), (192, 5, 5), 1, 2, 1, True),       # conv2
    ((3, 192, 13, 13), (384, 3, 3), 1, 1, 1, True),      # conv3
    ((1, 384, 13, 13), (256, 3, 3), 1, 1, 1, False),     # conv4, no bias
    ((2, 8, 17, 11), (6, 3, 5), (2, 1), (1, 2), 2, True),  # groups, non-square
    ((1, 5, 9, 9), (7, 1, 1), 1, 0, 1, True),             # 1x1, odd sizes
    ((1, 4, 6, 6), (5, 6, 6), 1, 0, 1, True),             # kernel == input
    ((2, 6, 10, 10), (6, 3, 3), 3, 1, 6, True),           # depthwise
]


@pytest.mark.parametrize("xs,ws,stride,padding,groups,bias", CONV_CASES)
def test_conv2d(rng, xs, ws, stride, padding, groups, bias):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((ws[0], xs[1] // groups) + ws[1:]).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) if bias else None
    ref = F.conv2d(t64(x), t64(w), None if b is None else t64(b), stride=stride, padding=padding, groups=groups)
    out = ac.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
    assert out.dtype == np.float32 and out.shape == tuple(ref.shape)
    assert max_rel_err(out, ref) <= TOL
    naive = ac.conv2d(x, w, b, stride=stride, padding=padding, groups=groups, _naive=True)
    assert max_rel_err(naive, ref) <= TOL


DILATED_CONV_CASES = [
    # (N, C, H, W), (OC, KH, KW), stride, padding, dilation, groups
    ((2, 6, 19, 17), (10, 3, 3), 1, 2, 2, 1),           # stride 1 with padding: the padded copy
    ((1, 5, 15, 16), (7, 3, 3), 1, 0, 3, 1),            # stride 1, no padding: reads the image itself
    ((1, 3, 35, 33), (8, 5, 5), 3, 4, (2, 3), 1),       # phase-split input, taps of every phase
    ((2, 8, 20, 20), (6, 3, 5), (2, 1), (3, 1), (3, 2), 2),
    ((1, 64, 27, 27), (32, 5, 5), 1, 4, 2, 1),          # conv2-sized, K = 1600
    ((2, 6, 11, 11), (6, 3, 3), 2, 1, 4, 6),            # depthwise; taps past the image
    ((1, 4, 9, 9), (5, 3, 3), 1, 0, 4),                 # the kernel spans the whole input: 1x1 out
]


@pytest.mark.parametrize("case", DILATED_CONV_CASES, ids=lambda c: str(c))
def test_conv2d_dilation(rng, case):
    xs, ws, stride, padding, dilation, *groups = case
    groups = groups[0] if groups else 1
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((ws[0], xs[1] // groups) + ws[1:]).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    ref = F.conv2d(t64(x), t64(w), t64(b), stride, padding, dilation, groups)
    for naive in (False, True):
        out = ac.conv2d(x, w, b, stride, padding, dilation, groups, _naive=naive)
        assert out.shape == tuple(ref.shape)
        assert max_rel_err(out, ref) <= TOL, naive


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")   # torch's, from the reference
@pytest.mark.parametrize("k,dilation", [((3, 3), 2), ((2, 4), (3, 2)), ((4, 3), 1), ((1, 5), (1, 3))])
def test_conv2d_same_with_dilation(rng, k, dilation):
    # 'same' pads dilation*(k-1) in all, the odd one after: an even kernel with an odd
    # dilation pads one more row or column after than before, as PyTorch does.
    x = rng.standard_normal((2, 3, 11, 12)).astype(np.float32)
    w = rng.standard_normal((4, 3) + k).astype(np.float32)
    ref = F.conv2d(t64(x), t64(w), padding="same", dilation=dilation)
    out = ac.conv2d(x, w, padding="same", dilation=dilation)
    assert out.shape == tuple(ref.shape) == (2, 4, 11, 12)
    assert max_rel_err(out, ref) <= TOL


def test_conv2d_unbatched_and_string_padding(rng):
    x = rng.standard_normal((3, 20, 21)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    for padding in ("same", "valid"):
        ref = F.conv2d(t64(x), t64(w), padding=padding)
        out = ac.conv2d(x, w, padding=padding)
        assert out.shape == tuple(ref.shape)
        assert max_rel_err(out, ref) <= TOL


POOL_CASES = [
    ((1, 64, 55, 55), 3, 2, 0, False),
    ((2, 3, 13, 13), 3, 2, 0, True),
    ((1, 2, 10, 11), (3, 2), None, (1, 1), False),
    ((1, 2, 7, 7), 2, 2, 1, True),
    ((1, 1, 6, 6), 3, 3, 1, True),    # ceil_mode: last window must start inside input or left pad
    ((1, 1, 5, 5), 2, 3, 0, True),
    ((2, 3, 8, 9), 4, 1, 2, False),
]


@pytest.mark.parametrize("xs,k,s,p,ceil", POOL_CASES)
def test_max_pool2d(rng, xs, k, s, p, ceil):
    x = rng.standard_normal(xs).astype(np.float32)
    ref = F.max_pool2d(t64(x), k, s, p, ceil_mode=ceil)
    out = ac.max_pool2d(x, k, s, p, ceil_mode=ceil)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_array_equal(out, ref.numpy().astype(np.float32))


DILATED_POOL_CASES = [
    # (N, C, H, W), kernel, stride, padding, dilation, ceil_mode
    ((2, 3, 11, 12), 3, 1, 1, 2, False),
    ((2, 3, 11, 12), 3, 2, 1, (2, 3), True),
    ((1, 2, 10, 9), (2, 3), (1, 2), (1, 1), (3, 2), False),
    ((1, 64, 27, 27), 3, 2, 0, 2, False),
    ((1, 1, 7, 7), 2, 3, 1, 3, True),      # ceil_mode's last window starts in the input
]


@pytest.mark.parametrize("xs,k,s,p,d,ceil", DILATED_POOL_CASES)
def test_max_pool2d_dilation(rng, xs, k, s, p, d, ceil):
    x = rng.standard_normal(xs).astype(np.float32)
    ref = F.max_pool2d(t64(x), k, s, p, d, ceil)
    out = ac.max_pool2d(x, k, s, p, d, ceil)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_array_equal(out, ref.numpy().astype(np.float32))


def _ties_nan_and_neg_inf(rng, shape):
    """Values where the index is a choice: repeated maxima (small integers), NaN (the
    last NaN of a window wins) and planes of -inf (the window's first tap inside the
    plane is reported)."""
    x = rng.integers(-2, 3, shape).astype(np.float32)
    x.flat[rng.choice(x.size, max(1, x.size // 20), replace=False)] = np.nan
    x[0, 0] = -np.inf
    return x


@pytest.mark.parametrize("xs,k,s,p,d,ceil", [(xs, k, s, p, 1, ceil) for xs, k, s, p, ceil in POOL_CASES]
                         + DILATED_POOL_CASES)
def test_max_pool2d_return_indices(rng, xs, k, s, p, d, ceil):
    for x in (rng.standard_normal(xs).astype(np.float32), _ties_nan_and_neg_inf(rng, xs)):
        ref, ref_idx = F.max_pool2d(t64(x), k, s, p, d, ceil, return_indices=True)
        out, idx = ac.max_pool2d(x, k, s, p, d, ceil, True)
        assert idx.dtype == np.int64 and idx.shape == out.shape == tuple(ref.shape)
        np.testing.assert_array_equal(out, ref.numpy().astype(np.float32))
        np.testing.assert_array_equal(idx, ref_idx.numpy())
        # the same values as without indices (AlexNet's 3x3/2 pool has its own vector path)
        np.testing.assert_array_equal(ac.max_pool2d(x, k, s, p, d, ceil), out)


def test_max_pool2d_one_tap_window_ignores_its_dilation(rng):
    # A dilation as large as an int along a window one tap long: nothing to space out,
    # and no loop may step past INT_MAX.
    x = _ties_nan_and_neg_inf(rng, (1, 2, 5, 6))
    ref, ref_idx = F.max_pool2d(t64(x), (1, 2), 1, 0, (2**31 - 1, 2), return_indices=True)
    out, idx = ac.max_pool2d(x, (1, 2), 1, 0, (2**31 - 1, 2), return_indices=True)
    np.testing.assert_array_equal(out, ref.numpy().astype(np.float32))
    np.testing.assert_array_equal(idx, ref_idx.numpy())


def test_max_pool2d_return_indices_unbatched(rng):
    x = _ties_nan_and_neg_inf(rng, (3, 9, 8))
    ref, ref_idx = F.max_pool2d(t64(x), 3, 2, 1, return_indices=True)
    out, idx = ac.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert out.shape == idx.shape == (3, 5, 4)
    np.testing.assert_array_equal(out, ref.numpy().astype(np.float32))
    np.testing.assert_array_equal(idx, ref_idx.numpy())


@pytest.mark.parametrize("xs,size", [((1, 256, 6, 6), 6), ((2, 256, 1, 1), (6, 6)), ((1, 3, 13, 13), 6),
                                     ((1, 2, 7, 10), (3, 4)), ((1, 2, 5, 3), (7, 8)), ((2, 3, 9, 9), (None, 2))])
def test_adaptive_avg_pool2d(rng, xs, size):
    x = rng.standard_normal(xs).astype(np.float32)
    ref = F.adaptive_avg_pool2d(t64(x), size)
    out = ac.adaptive_avg_pool2d(x, size)
    assert out.shape == tuple(ref.shape)
    assert max_rel_err(out, ref) <= TOL


# Windows whose float32 sum would lose the mean: cancellation (int32 values near 1e9 with a
# mean near 7.6e4: torch's float32 kernel is off by 2.5e-4 of it) and overflow (3e38 + 3e38
# is Inf in float32; the mean is finite). Summed in double, both give float32(the float64 mean).
AVG_POOL_HARD = [
    np.array([[[[-396986154, -13478334, -1056408543, -42096007, 1509347698]]]], np.float32),
    np.full((1, 2, 2, 2), 3e38, np.float32),
]


@pytest.mark.parametrize("x", AVG_POOL_HARD)
def test_adaptive_avg_pool2d_sums_without_losing_the_mean(x):
    np.testing.assert_array_equal(ac.adaptive_avg_pool2d(x, 1), F.adaptive_avg_pool2d(t64(x), 1).numpy().astype(np.float32))


@pytest.mark.parametrize("lead,i,o,bias", [((1,), 9216, 4096, True), ((3,), 4096, 1000, True), ((9,), 300, 70, False),
                                         ((64,), 257, 33, True), ((), 17, 5, True), ((2, 3), 12, 7, True)])
def test_linear(rng, lead, i, o, bias):
    x = rng.standard_normal(lead + (i,)).astype(np.float32)
    w = rng.standard_normal((o, i)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    ref = F.linear(t64(x), t64(w), None if b is None else t64(b))
    out = ac.linear(x, w, b)
    assert out.shape == tuple(ref.shape)
    assert max_rel_err(out, ref) <= TOL
    if x.ndim == 2:
        assert max_rel_err(ac.linear(x, w, b, _naive=True), ref) <= TOL


@pytest.mark.parametrize("xs,ws,bs", [((2, 3), (4, 3), (1, 4)), ((2, 3), (4, 3), (2, 4)), ((5, 2, 3), (4, 3), (2, 4)),
                                      ((5, 2, 3), (4, 3), (5, 2, 4)), ((2, 3), (4, 3), (1,)), ((2, 3), (4, 3), (2, 1)),
                                      ((2, 3), (4, 3), ()), ((2, 3), (3,), None), ((4, 2, 3), (3,), None),
                                      ((3,), (3,), None), ((3,), (4, 3), (1, 4)), ((3,), (4, 3), (1,))])
def test_linear_broadcast_bias_and_weight_vector(rng, xs, ws, bs):
    """Forms torch's F.linear takes beyond (out, in) weights and (out,) biases."""
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = None if bs is None else rng.standard_normal(bs)
    ref = F.linear(t64(x), t64(w), None if b is None else t64(b))
    out = ac.linear(x, w, b)
    assert out.dtype == np.float32 and out.shape == tuple(ref.shape)
    assert max_rel_err(out, ref) <= TOL


def test_relu(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(ac.relu(x), F.relu(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("fn,tfn", [(ac.softmax, F.softmax), (ac.log_softmax, F.log_softmax)])
@pytest.mark.parametrize("shape,dim", [((3, 1000), -1), ((2, 5, 4), 1), ((4, 3), 0), ((7,), 0), ((2, 3, 4, 5), -2)])
def test_softmax_family(rng, fn, tfn, shape, dim):
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    ref = tfn(t64(x), dim=dim)
    out = fn(x, dim=dim)
    assert max_rel_err(out, ref) <= TOL


@pytest.mark.parametrize("fn,tfn", [(ac.softmax, F.softmax), (ac.log_softmax, F.log_softmax)])
def test_softmax_stable_for_large_inputs(fn, tfn):
    x = np.array([[1e4, 0.0, -1e4, 1e4 - 1.0], [-1e4, -1e4 + 2, -1e4, -1e4]], dtype=np.float32)
    out = fn(x, dim=1)
    assert np.isfinite(out).all()
    assert max_rel_err(out, tfn(t64(x), dim=1)) <= TOL


def test_positional_arguments_mean_what_they_mean_in_torch(rng):
    # F.conv2d(input, weight, bias, stride, padding, dilation, groups) and
    # F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode): the same
    # call, positionally, gives the same result.
    x = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    ref = F.conv2d(t64(x), t64(w), t64(b), 1, 1, 1, 2).numpy()
    assert max_rel_err(ac.conv2d(x, w, b, 1, 1, 1, 2), ref) <= TOL
    for args in [(3, 2, 0, 1), (3, 2, 0, 1, True), (3, 2, 1, 1, False), (2, None, 0, 1, True)]:
        ref = F.max_pool2d(t64(x), *args).numpy()
        ours = ac.max_pool2d(x, *args)
        assert ours.shape == ref.shape, args
        assert max_rel_err(ours, ref) <= TOL
    ref = F.conv2d(t64(x), t64(w), t64(b), 2, 3, 2, 2).numpy()
    assert max_rel_err(ac.conv2d(x, w, b, 2, 3, 2, 2), ref) <= TOL
    for args in [(3, 1, 1, 2), (3, 1, 1, 2, True), (3, 2, 1, (2, 1), False, True)]:
        ref = F.max_pool2d(t64(x), *args)
        ours = ac.max_pool2d(x, *args)
        if len(args) == 6:   # return_indices
            (ref, ref_idx), (ours, idx) = ref, ours
            assert np.array_equal(idx, ref_idx.numpy()), args
        assert ours.shape == tuple(ref.shape), args
        assert max_rel_err(ours, ref) <= TOL
    assert np.array_equal(ac.relu(x, False), np.maximum(x, 0))
    assert ac.max_pool2d(x, 3, dilation=1, return_indices=False).shape == (2, 4, 3, 3)

