"""Winograd F(2x2, 3x3) (csrc/cpu/winograd.c), the path of 3x3 and 5x5 (four
3x3 blocks) stride-1 convolutions, from batch 4 for AlexNet's 13x13 layers and
from batch 1 for its 27x27 conv2: forced on, against torch
float64 (DESIGN.md's rule) on every ISA and thread count, at shapes that hit
every edge of its tiling (odd outputs, runs cut at 48-tile chunks and at the
micro-kernel's panels, output channels not a multiple of the tile rows, wide
rows); non-finite values must land where PyTorch puts them (the direct path
recomputes such a layer); the mode switch and its environment variable."""
import numpy as np
import pytest
import torch

import alexnet_c as ac
from alexnet_c import _C
from _subproc import child_env, run_python
from _torch_models import make_model

F = torch.nn.functional

from _isa import ISAS, isa, threads, winograd  # noqa: F401  (fixtures)


def conv_in_mode(mode, *args, **kw):
    with winograd(mode):
        return ac.conv2d(*args, **kw)


def models(variant, seed):
    """(alexnet_c model, torch float64 model) with the same seeded weights."""
    tm = make_model(variant, 10, seed=seed)
    return ac.AlexNet.from_state_dict(tm.state_dict()), tm.double()


def ref_conv(x, w, b, padding):
    t = lambda a: None if a is None else torch.from_numpy(a).double()
    return F.conv2d(t(x), t(w), t(b), padding=padding).numpy()


def close(ours, ref, what):
    err = float(np.max(np.abs(ours.astype(np.float64) - ref)))
    tol = 1e-4 * float(np.max(np.abs(ref)))
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    assert err <= tol, f"{what}: max err {err:.3g} > tol {tol:.3g}"


# (N, C, H, W, OC, K, pad)
CASES = [
    (1, 192, 13, 13, 384, 3, 1),  # AlexNet conv3 at batch 1: 49 tiles, one chunk and one tile
    (5, 24, 13, 13, 40, 3, 1),    # 245 tiles: chunks cut inside tile rows and images; OC=40 not a multiple of 6
    (2, 7, 10, 11, 17, 3, 2),     # pad 2, odd output width 13, OC=17
    (1, 3, 5, 3, 9, 3, 0),        # no padding: a 3x1 output, one column tiles
    (2, 4, 1, 1, 3, 3, 1),        # 1x1 input: every patch but its centre is padding
    (2, 3, 30, 97, 5, 3, 1),      # 49 tiles per row: runs cut at the 48-tile chunk
    (1, 1, 3, 3, 1, 3, 0),        # a single output, C = OC = 1
    (3, 33, 8, 8, 8, 3, 1),       # 16 tiles per image, chunks of whole images
    (1, 260, 7, 7, 20, 3, 1),     # C = 260 deep
    (1, 64, 27, 27, 192, 5, 2),   # AlexNet conv2: 196 tiles, depth 4 x 64
    (2, 5, 11, 9, 7, 5, 2),       # 5x5, odd sizes: the blocks past the kernel read padding
    (1, 3, 5, 5, 4, 5, 0),        # 5x5 without padding: a single output
    (3, 6, 6, 14, 9, 5, 1),       # pad 1: the last block row reads past the image
    (1, 2, 2, 3, 3, 5, 2),        # input smaller than the kernel
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_winograd_matches_torch(isa, threads, case):
    N, C, H, W, OC, K, p = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((OC, C, K, K)).astype(np.float32)
    b = rng.standard_normal(OC).astype(np.float32)
    ref = ref_conv(x, w, b, p)
    close(conv_in_mode("on", x, w, b, padding=p), ref, f"winograd {isa}")
    close(conv_in_mode("on", x, w, None, padding=p), ref_conv(x, w, None, p), f"winograd no bias {isa}")


def test_winograd_is_the_path_taken(isa):
    """on and off round differently: the results differ in the last bits, so
    the tests above did run the Winograd code (and off the direct one)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 64, 13, 13)).astype(np.float32)
    w = rng.standard_normal((32, 64, 3, 3)).astype(np.float32)
    on, off = conv_in_mode("on", x, w, None, padding=1), conv_in_mode("off", x, w, None, padding=1)
    assert not np.array_equal(on, off)
    close(on, off.astype(np.float64), "on vs off")
    assert np.array_equal(conv_in_mode("auto", x, w, None, padding=1), on)   # 4 x 49 tiles: auto takes it
    w5 = rng.standard_normal((32, 64, 5, 5)).astype(np.float32)
    on, off = conv_in_mode("on", x, w5, None, padding=2), conv_in_mode("off", x, w5, None, padding=2)
    assert not np.array_equal(on, off)
    close(on, off.astype(np.float64), "5x5 on vs off")


def test_other_shapes_never_take_it():
    """Stride 2, 7x7, 1x1, non-square kernels and groups keep the direct path even when forced on."""
    rng = np.random.default_rng(4)
    for xs, ws, kw in [((2, 4, 13, 13), (6, 4, 3, 3), dict(stride=2, padding=1)),
                       ((2, 4, 13, 13), (6, 4, 7, 7), dict(padding=3)),
                       ((2, 4, 13, 13), (6, 4, 1, 1), dict()),
                       ((2, 4, 13, 13), (6, 4, 3, 5), dict(padding=1)),
                       ((2, 4, 13, 13), (6, 2, 3, 3), dict(padding=1, groups=2))]:
        x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
        assert np.array_equal(conv_in_mode("on", x, w, None, **kw), conv_in_mode("off", x, w, None, **kw))


def specials_match(out, ref):
    for pred in (np.isnan, np.isposinf, np.isneginf):
        assert np.array_equal(pred(out), pred(ref)), f"{pred.__name__} positions differ"
    fin = np.isfinite(ref)
    if fin.any():
        assert np.abs(out[fin].astype(np.float64) - ref[fin]).max() <= 1e-4 * np.abs(ref[fin]).max()


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("where", ["corner", "edge", "middle", "two"])
def test_nonfinite_input_falls_back_to_direct(isa, where, k):
    """inf - inf inside B^T d B would put NaN where PyTorch has +-Inf: such a
    call is recomputed directly, so the positions match torch exactly."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 8, 13, 13)).astype(np.float32)
    w = rng.standard_normal((16, 8, k, k)).astype(np.float32)
    spots = {"corner": [(0, 0, 0, 0)], "edge": [(1, 2, 12, 5)], "middle": [(2, 3, 6, 6)],
             "two": [(3, 1, 4, 4), (3, 1, 4, 6)]}[where]
    for i, s in enumerate(spots):
        x[s] = np.inf if i % 2 == 0 else -np.inf
    x[0, 5, 7, 7] = np.nan
    specials_match(conv_in_mode("on", x, w, None, padding=k // 2), ref_conv(x, w, None, k // 2))


def test_overflow_in_the_transform_falls_back(isa):
    """Finite inputs near FLT_MAX: d0 - d2 overflows in B^T d B where the direct
    sum does not; the call is recomputed directly."""
    x = np.zeros((4, 1, 13, 13), np.float32)
    x[:, 0, ::2, :] = 3e38
    x[:, 0, 1::2, :] = -3e38
    w = np.zeros((2, 1, 3, 3), np.float32)
    w[:, 0, 1, 1] = 1.0
    out = conv_in_mode("on", x, w, None, padding=1)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, x[:, [0, 0]])


def test_nonfinite_weights_use_the_direct_path(isa):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 5, 13, 13)).astype(np.float32)
    w = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    w[2, 1, 0, 2] = np.inf
    w[4, 0, 1, 1] = np.nan
    specials_match(conv_in_mode("on", x, w, None, padding=1), ref_conv(x, w, None, 1))


@pytest.mark.parametrize("variant,hw", [("torchvision", 224), ("original", 227)])
def test_model_with_winograd(isa, variant, hw):
    """Batch 4 takes Winograd in conv2-5 under auto (4 x 196 and 4 x 49 tiles);
    on, off and auto all agree with torchvision in float64, on differs from off."""
    rng = np.random.default_rng(8)
    ours, ref_model = models(variant, 2)
    x = rng.standard_normal((4, 3, hw, hw)).astype(np.float32)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x).double()).numpy()
    outs = {}
    for mode in ("on", "off", "auto"):
        with winograd(mode):
            outs[mode] = ours(x)
        close(outs[mode], ref, f"{variant} winograd {mode} {isa}")
    assert not np.array_equal(outs["on"], outs["off"])
    assert np.array_equal(outs["auto"], outs["on"])
    # batch 1: too few tiles to share between threads, auto keeps the direct path
    with winograd("auto"):
        one_auto = ours(x[:1])
    with winograd("off"):
        assert np.array_equal(one_auto, ours(x[:1]))


def test_model_nonfinite_input_with_winograd():
    """A NaN and an Inf in a batch-4 input reach conv3-5: those layers fall back
    and every image's NaN/Inf positions are torch's."""
    rng = np.random.default_rng(9)
    ours, ref_model = models("torchvision", 3)
    x = rng.standard_normal((4, 3, 224, 224)).astype(np.float32)
    x[1, 0, 100, 100] = np.nan
    x[2, 2, 5, 200] = np.inf
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x).double()).numpy()
    with winograd("on"):
        out = ours(x)
    specials_match(out, ref)
    assert np.isfinite(out[[0, 3]]).all()


def test_mode_switch():
    with winograd("auto"):   # restores the mode the suite runs in afterwards
        for mode in ("off", "on", "auto"):
            _C.set_winograd(mode)
            assert _C.get_winograd() == mode
        with pytest.raises(ValueError, match="expected 'off', 'on' or 'auto', got 'yes'"):
            _C.set_winograd("yes")
        assert _C.get_winograd() == "auto"


@pytest.mark.parametrize("value,mode,warns", [("off", "off", False), ("on", "on", False), ("", "auto", False),
                                              ("fast", "auto", True)])
def test_environment_variable(value, mode, warns):
    code = "import warnings; warnings.simplefilter('always'); import alexnet_c._C as c; print(c.get_winograd())"
    p = run_python(["-c", code], env=child_env(ALEXNET_C_WINOGRAD=value), timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == mode
    assert ("ALEXNET_C_WINOGRAD=fast is not one of off, on, auto" in p.stderr) == warns


def test_model_nonfinite_weight_keeps_the_direct_path():
    """An Inf in conv3's weights: that layer's Winograd weights are not finite,
    so it stays on the direct path (for good), and the output's NaN, +Inf and
    -Inf sit where torch's do (by then every logit is one of them)."""
    rng = np.random.default_rng(10)
    tm = make_model("torchvision", 10, seed=4)
    with torch.no_grad():
        tm.features[6].weight[5, 7, 1, 1] = float("inf")
    ours, ref_model = ac.AlexNet.from_state_dict(tm.state_dict()), tm.double()
    x = rng.standard_normal((4, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x).double()).numpy()
    with winograd("on"):
        specials_match(ours(x), ref)
        specials_match(ours(x), ref)   # the second call: the layer is marked, not retried


def test_first_winograd_calls_race():
    """The Winograd weights are packed on a layer's first Winograd call: four
    threads making that call at once on one model all get the same result."""
    import threading
    ours, _ = models("torchvision", 5)
    x = np.random.default_rng(11).random((4, 3, 224, 224), dtype=np.float32)
    outs = [None] * 4
    barrier = threading.Barrier(4)

    def run(i):
        barrier.wait()
        outs[i] = ours(x)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    assert np.array_equal(outs[0], ours(x))
