"""The Python API's contract: input handling, error messages, model state, threads."""
import numpy as np
import pytest

import alexnet_c as ac
from _subproc import child_env, run_python


def test_any_real_dtype_and_layout_gives_same_result(rng):
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    base = ac.conv2d(x, w)
    variants = [x.astype(np.float64), np.asfortranarray(x), x[:, :, ::-1, :][:, :, ::-1, :],
                np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2), x.tolist(),
                x.astype(">f4")]
    for v in variants:
        np.testing.assert_allclose(ac.conv2d(v, w), base, rtol=1e-6, atol=1e-6)
    ints = (x * 10).astype(np.int16)
    np.testing.assert_allclose(ac.conv2d(ints, w), ac.conv2d(ints.astype(np.float32), w), rtol=1e-6)
    assert ac.relu(np.array([True, False])).dtype == np.float32


def test_inputs_are_never_modified(rng):
    x = rng.standard_normal((1, 3, 70, 70)).astype(np.float32)
    x.flags.writeable = False
    w = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    before = x.copy(), w.copy()
    ac.conv2d(x, w, padding=2)
    ac.relu(x)
    ac.max_pool2d(x, 3, 2)
    ac.adaptive_avg_pool2d(x, 6)
    ac.softmax(x, dim=1)
    ac.log_softmax(x, dim=1)
    ac.linear(x.reshape(1, -1)[:, :50], rng.standard_normal((4, 50)))
    m = ac.AlexNet(num_classes=5, seed=0)
    m(x)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(w, before[1])


def test_returns_fresh_float32_arrays(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    y = ac.relu(x)
    assert y.dtype == np.float32 and y is not x and not np.shares_memory(x, y)


@pytest.mark.parametrize("call,needle", [
    (lambda: ac.conv2d(np.zeros((1, 4, 10, 10)), np.zeros((2, 3, 3, 3))), "expected input with 3 channels"),
    (lambda: ac.conv2d(np.zeros((1, 3, 10, 10)), np.zeros((2, 3, 3))), "weight"),
    (lambda: ac.conv2d(np.zeros((1, 1, 3, 10, 10)), np.zeros((2, 3, 3, 3))), "(1, 1, 3, 10, 10)"),
    (lambda: ac.conv2d(np.zeros((1, 3, 2, 2)), np.zeros((2, 3, 5, 5))), "larger than the padded input"),
    (lambda: ac.conv2d(np.zeros((1, 3, 9, 9)), np.zeros((2, 3, 3, 3)), np.zeros(3)), "bias of shape (2,)"),
    (lambda: ac.conv2d(np.zeros((1, 4, 9, 9)), np.zeros((3, 2, 3, 3)), groups=2), "divisible by groups"),
    (lambda: ac.conv2d(np.zeros((1, 3, 9, 9)), np.zeros((2, 3, 3, 3)), stride=0), "stride >= 1"),
    (lambda: ac.max_pool2d(np.zeros((1, 1, 2, 2)), 3), "larger than the padded input"),
    (lambda: ac.max_pool2d(np.zeros((1, 1, 8, 8)), 3, 1, 2), "at most half"),
    (lambda: ac.max_pool2d(np.zeros((8, 8)), 3), "expected a 3-D"),
    (lambda: ac.adaptive_avg_pool2d(np.zeros((1, 1, 8, 8)), -1), "output_size >= (0, 0)"),
    (lambda: ac.linear(np.zeros((2, 5)), np.zeros((3, 4))), "last dimension 4"),
    (lambda: ac.linear(np.zeros((2, 4)), np.zeros((3, 4)), np.zeros(2)), "bias of shape (3,)"),
    (lambda: ac.conv2d(np.zeros((1, 3, 9, 9)), np.zeros((2, 3, 3, 3)), None, 1, 0, 5),
     "conv2d: kernel (3, 3) with dilation (5, 5) spans (11, 11), more than the padded input (9, 9)"),
    (lambda: ac.conv2d(np.zeros((1, 3, 9, 9)), np.zeros((2, 3, 3, 3)), dilation=(1, 0)),
     "dilation >= 1 and groups >= 1, got stride (1, 1), padding (0, 0), dilation (1, 0)"),
    (lambda: ac.max_pool2d(np.zeros((1, 1, 8, 8)), 3, 2, 0, (1, 4)),
     "the window (3, 3) with dilation (1, 4) spans (3, 9), more than the padded input (8, 8)"),
    (lambda: ac.max_pool2d(np.zeros((1, 1, 8, 8)), 3, 2, 0, 0), "dilation >= 1, got kernel_size (3, 3)"),
    # N*OH*OW checked without overflowing: 2**24 * (2**30 + 1)**2 is past 2**63
    (lambda: ac.conv2d(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1)), padding=2**29),
     "at most 2**31-1 output pixels in the batch (N*OH*OW), got 1*1073741825*1073741825"),
    (lambda: ac.conv2d(np.zeros((2**24, 1, 1, 1), np.float32), np.zeros((1, 1, 1, 1)), padding=2**29),
     "(N*OH*OW), got 16777216*1073741825*1073741825"),
    (lambda: ac.conv2d(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1)), padding=2**30),
     "padded input must stay below 2**31"),
    # N*C planes counted in 64 bits (an empty H keeps the array free): past 2**31-1 refused
    (lambda: ac.max_pool2d(np.zeros((2**16, 2**15 + 1, 0, 1), np.float32), 1),
     "max_pool2d: expected at most 2**31-1 planes (N*C), got 2147549184"),
    (lambda: ac.adaptive_avg_pool2d(np.zeros((2**16, 2**15 + 1, 0, 1), np.float32), 1),
     "adaptive_avg_pool2d: expected at most 2**31-1 planes (N*C), got 2147549184"),
    # the shape as given, checked before 'same' pads an even kernel's extra row
    (lambda: ac.conv2d(np.zeros((8, 8)), np.zeros((1, 1, 2, 2)), None, 1, "same"),
     "expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape (8, 8)"),
    (lambda: ac.linear(np.zeros((2, 4)), np.zeros((3, 4)), np.zeros((2, 2))),
     "linear: expected bias of shape (3,) or one that broadcasts to the output shape (2, 3), got shape (2, 2)"),
    # a parameter of torch.nn.functional's taken at its default only
    (lambda: ac.relu(np.zeros(3), True), "relu: inplace=True is not supported"),
])
def test_bad_shapes_raise_value_error_naming_shapes(call, needle):
    with pytest.raises(ValueError) as info:
        call()
    assert needle in str(info.value)


def test_bad_types_raise_type_error():
    # A bool in dilation's place is a ceil_mode given by position, as alexnet_c's
    # max_pool2d once took it: refused, never read as dilation 1.
    with pytest.raises(TypeError, match="dilation must be an int, got bool"):
        ac.max_pool2d(np.zeros((1, 1, 8, 8)), 3, 2, 0, True)
    with pytest.raises(TypeError, match="real-valued") as info:
        ac.relu(np.zeros(3, dtype=np.complex64))
    assert str(info.value).endswith("got dtype complex64")
    with pytest.raises(TypeError, match="real-valued"):
        ac.relu(np.array(["a", "b"]))
    with pytest.raises(TypeError):
        ac.conv2d(np.zeros((1, 3, 9, 9)), np.zeros((2, 3, 3, 3)), stride=1.5)
    with pytest.raises(TypeError):
        ac.AlexNet(num_classes=4, seed=0)(object())


@pytest.mark.parametrize("call,message", [
    (lambda: ac.conv2d(None, np.zeros((1, 1, 1, 1))), "conv2d: input must be a real-valued array"),
    (lambda: ac.conv2d(np.zeros((1, 1, 3, 3)), "w"), "conv2d: weight must be a real-valued array"),
    (lambda: ac.max_pool2d("abc", 2), "max_pool2d: input must be a real-valued array"),
    (lambda: ac.adaptive_avg_pool2d(None, 2), "adaptive_avg_pool2d: input must be a real-valued array"),
    (lambda: ac.linear(None, np.zeros((2, 3))), "linear: input must be a real-valued array"),
    (lambda: ac.linear(np.zeros((1, 3)), np.zeros((2, 3)), np.zeros(2, complex)), "linear: bias must be a real"),
    # an even kernel's 'same' padding pads in Python first: the dtype is checked before it
    (lambda: ac.conv2d(np.ones((1, 1, 3, 3), complex), np.ones((1, 1, 2, 2)), None, 1, "same"),
     "conv2d: input must be a real-valued array (bool, int or float), got dtype complex128"),
    (lambda: ac.conv2d(np.array([[[["1", "2"], ["3", "4"]]]]), np.ones((1, 1, 2, 2)), None, 1, "same"),
     "conv2d: input must be a real-valued array"),
    # bool flags as torch's parser takes them: a truthy string is not ceil_mode=True
    (lambda: ac.max_pool2d(np.ones((1, 1, 5, 5)), 3, 2, 0, 1, "no"), "max_pool2d: ceil_mode must be a bool, got str"),
    (lambda: ac.max_pool2d(np.ones((1, 1, 5, 5)), 3, 2, 0, 1, None), "max_pool2d: ceil_mode must be a bool, got NoneType"),
    (lambda: ac.max_pool2d(np.ones((1, 1, 5, 5)), 3, return_indices=1),
     "max_pool2d: return_indices must be a bool, got int"),
])
def test_unusable_arguments_raise_type_error_before_any_shape_check(call, message):
    with pytest.raises(TypeError) as info:
        call()
    assert str(info.value).startswith(message)


def test_numpy_bools_are_flags():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    out, idx = ac.max_pool2d(x, 2, 2, 0, 1, np.bool_(True), np.True_)
    assert out.shape == idx.shape == (1, 1, 3, 3)


def test_softmax_dim_out_of_range():
    with pytest.raises(IndexError, match="out of range"):
        ac.softmax(np.zeros((2, 3)), dim=2)
    # past the C int range too: the same IndexError, not the C parser's OverflowError
    with pytest.raises(IndexError) as info:
        ac.log_softmax(np.zeros((2, 3)), dim=-2**40)
    assert str(info.value) == "log_softmax: dim -1099511627776 out of range for a 2-D input (expected -2..1)"
    # and past int64, where only the C layer sees the whole value
    with pytest.raises(IndexError) as info:
        ac.softmax(np.zeros((4,)), dim=2**70 + 1)
    assert str(info.value) == "softmax: dim 1180591620717411303425 out of range for a 1-D input (expected -1..0)"
    with pytest.raises(IndexError) as info:
        ac.softmax(np.float32(3.0), dim=1)
    assert str(info.value) == "softmax: dim 1 out of range for a 0-D input (expected -1..0)"


_X = np.zeros((1, 1, 4, 4))


@pytest.mark.parametrize("call,message", [
    (lambda: ac.conv2d(_X, np.zeros((1, 1, 1, 1)), stride=(1, 2**31)),
     "conv2d: expected stride within -2**31..2**31-1, got 2147483648"),
    (lambda: ac.conv2d(_X, np.zeros((1, 1, 1, 1)), padding=-2**31 - 1),
     "conv2d: expected padding within -2**31..2**31-1, got -2147483649"),
    (lambda: ac.conv2d(_X, np.zeros((1, 1, 1, 1)), dilation=2**40),
     "conv2d: expected dilation within -2**31..2**31-1, got 1099511627776"),
    (lambda: ac.conv2d(_X, np.zeros((1, 1, 1, 1)), groups=2**33),
     "conv2d: expected groups within -2**31..2**31-1, got 8589934592"),
    (lambda: ac.max_pool2d(_X, 2**31), "max_pool2d: expected kernel_size within -2**31..2**31-1, got 2147483648"),
    (lambda: ac.max_pool2d(_X, 2, np.int64(2**40)),
     "max_pool2d: expected stride within -2**31..2**31-1, got 1099511627776"),
    (lambda: ac.adaptive_avg_pool2d(_X, (None, -2**40)),
     "adaptive_avg_pool2d: expected output_size within -2**31..2**31-1, got -1099511627776"),
    (lambda: ac.set_num_threads(2**70), "set_num_threads: expected 1..4096 threads, got 1180591620717411303424"),
    (lambda: ac.set_num_threads(np.int64(0)), "set_num_threads: expected 1..4096 threads, got 0"),
])
def test_int_arguments_past_c_int_range_raise_value_error(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_model_input_checks():
    tv = ac.AlexNet(num_classes=3, seed=0)
    with pytest.raises(ValueError, match="at least 63x63"):
        tv(np.zeros((1, 3, 62, 100), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tv(np.zeros((1, 4, 64, 64), np.float32))
    orig = ac.AlexNet(num_classes=3, variant="original", seed=0)
    with pytest.raises(ValueError, match="227x227"):
        orig(np.zeros((1, 3, 224, 224), np.float32))
    assert orig(np.zeros((2, 3, 227, 227), np.float32)).shape == (2, 3)
    # the range the message states is the range that works, as in torch: 227-258 each way
    assert orig(np.zeros((1, 3, 258, 227), np.float32)).shape == (1, 3)
    for bad in [(226, 227), (227, 259)]:
        with pytest.raises(ValueError, match="any H and W from 227 to 258"):
            orig(np.zeros((1, 3) + bad, np.float32))
    assert tv(np.zeros((0, 3, 224, 224), np.float32)).shape == (0, 3)
    with pytest.raises(ValueError, match="variant"):
        ac.AlexNet(variant="resnet")
    with pytest.raises(ValueError, match="num_classes"):
        ac.AlexNet(num_classes=0)


def test_state_dict_roundtrip_and_readonly():
    m = ac.AlexNet(num_classes=7, variant="original", seed=1)
    sd = m.state_dict()
    assert list(sd)[:2] == ["features.0.weight", "features.0.bias"]
    assert list(sd)[-1] == "classifier.4.bias" and sd["classifier.4.weight"].shape == (7, 4096)
    with pytest.raises(ValueError):
        sd["features.0.weight"][0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        sd["features.0.weight"].flags.writeable = True
    m2 = ac.AlexNet.from_state_dict(sd)
    assert (m2.variant, m2.num_classes) == ("original", 7)
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227)).astype(np.float32)
    np.testing.assert_array_equal(m(x), m2(x))


def test_from_state_dict_copies_its_input():
    sd = {k: v.copy() for k, v in ac.AlexNet(num_classes=4, seed=2).state_dict().items()}
    m = ac.AlexNet.from_state_dict(sd)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    y = m(x)
    sd["classifier.6.bias"][:] += 100
    np.testing.assert_array_equal(m(x), y)


def test_from_state_dict_reports_missing_unexpected_and_shapes():
    sd = dict(ac.AlexNet(num_classes=4, seed=2).state_dict())
    del sd["features.3.bias"]
    sd["features.0.weight"] = np.zeros((64, 3, 5, 5), np.float32)
    sd["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ac.WeightsError) as info:
        ac.AlexNet.from_state_dict(sd)
    msg = str(info.value)
    assert "features.3.bias" in msg and "extra.weight" in msg and "(64, 3, 11, 11)" in msg
    with pytest.raises(ac.WeightsError, match="not an AlexNet"):
        ac.AlexNet.from_state_dict({"fc.weight": np.zeros((2, 2))})
    assert issubclass(ac.WeightsError, ValueError)


def test_data_parallel_prefix_is_accepted():
    sd = {"module." + k: v for k, v in ac.AlexNet(num_classes=4, seed=2).state_dict().items()}
    assert ac.AlexNet.from_state_dict(sd).num_classes == 4


@pytest.mark.parametrize("sd", [{1: np.zeros(2)}, {"classifier.1.weight": np.zeros((2, 2)), 2: np.zeros(2)}])
def test_state_dict_keys_must_be_strings(sd):
    with pytest.raises(ac.WeightsError, match="expected str keys"):
        ac.AlexNet.from_state_dict(sd)
    with pytest.raises(ac.WeightsError, match="expected str keys"):
        ac.AlexNet(num_classes=4, seed=0).load_state_dict(sd)


def test_load_state_dict_in_place():
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227)).astype(np.float32)
    source = ac.AlexNet(num_classes=4, variant="original", seed=2)
    m = ac.AlexNet(num_classes=4, variant="original", seed=3)
    before = m(x)
    keys = m.load_state_dict({k: v.copy() for k, v in source.state_dict().items()})
    assert keys == ([], []) and keys.missing_keys == [] and keys.unexpected_keys == []
    np.testing.assert_array_equal(m(x), source(x))
    assert not np.array_equal(m(x), before)
    # strict=False: what fits is loaded, the rest stays; the keys left out are returned
    m = ac.AlexNet(num_classes=4, variant="original", seed=3)
    conv1 = source.state_dict()["features.0.weight"]
    keys = m.load_state_dict({"module.features.0.weight": conv1, "module.extra": np.zeros(1)}, strict=False)
    assert keys.unexpected_keys == ["extra"] and len(keys.missing_keys) == 15
    assert "features.0.weight" not in keys.missing_keys
    np.testing.assert_array_equal(m.state_dict()["features.0.weight"], conv1)
    fresh = ac.AlexNet(num_classes=4, variant="original", seed=3).state_dict()
    for name in keys.missing_keys:
        np.testing.assert_array_equal(m.state_dict()[name], fresh[name])


def test_load_state_dict_refuses_what_does_not_fit_and_changes_nothing():
    m = ac.AlexNet(num_classes=4, seed=3)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    before = m(x)
    full = dict(ac.AlexNet(num_classes=4, seed=1).state_dict())
    partial = {k: v for k, v in full.items() if k != "features.3.bias"}
    with pytest.raises(ac.WeightsError, match=r"missing keys \['features.3.bias'\]"):
        m.load_state_dict(partial)
    with pytest.raises(ac.WeightsError, match="unexpected keys"):
        m.load_state_dict({**full, "extra": np.zeros(1)})
    # another num_classes or a wrong shape is an error even with strict=False
    other = dict(ac.AlexNet(num_classes=5, seed=1).state_dict())
    with pytest.raises(ac.WeightsError, match=r"classifier.6.weight: expected shape \(4, 4096\), got \(5, 4096\)"):
        m.load_state_dict(other, strict=False)
    with pytest.raises(ac.WeightsError, match="features.0.weight: expected shape"):
        m.load_state_dict({"features.0.weight": np.zeros(3)}, strict=False)
    with pytest.raises(ac.WeightsError, match="expected a real-valued array"):
        m.load_state_dict({**full, "features.0.bias": np.zeros(64, complex)})
    with pytest.raises(TypeError, match="strict must be a bool"):
        m.load_state_dict(full, strict=None)
    np.testing.assert_array_equal(m(x), before)


def test_module_habits_of_pytorch():
    m = ac.AlexNet(num_classes=4, seed=0)
    assert m.eval() is m and m.train(False) is m and m.training is False
    with pytest.raises(ValueError, match="inference only"):
        m.train()
    names = [n for n, _ in m.named_parameters()]
    assert names == list(m.state_dict())
    params = list(m.parameters())
    assert len(params) == 16 and sum(p.size for p in params) == m.parameters_count()
    assert all(p.dtype == np.float32 and not p.flags.writeable for p in params)
    assert m.to("cpu:0") is m and m.device == "cpu"


def test_conv2d_weights_per_output_channel_fit_an_int(tmp_path):
    """C/groups*KH*KW is the GEMM's K, an int: past 2**31-1 a ValueError, not a wrong
    result. The arrays are sparse files (8.6 GB of address space each, nothing read)."""
    cg = 2**31 // 9 + 1
    arrays = []
    for name, shape in [("x", (1, cg, 3, 3)), ("w", (1, cg, 3, 3))]:
        path = tmp_path / f"{name}.f32"
        with open(path, "wb") as f:
            f.truncate(int(np.prod(shape)) * 4)
        arrays.append(np.memmap(path, dtype=np.float32, mode="r", shape=shape))
    with pytest.raises(ValueError) as info:
        ac.conv2d(*arrays)
    assert str(info.value) == ("conv2d: expected at most 2**31-1 weights per output channel "
                               f"(C/groups*KH*KW), got {cg}*3*3")


def test_net_init_cannot_be_entered_twice():
    """A generator of weights that initialises the same Net: the first init stays."""
    weights = list(ac.AlexNet(num_classes=10, seed=0)._net.weights)
    net = ac._C.Net.__new__(ac._C.Net)

    def inner_then_weights():
        net.__init__(0, 10, weights)
        yield from weights
    with pytest.raises(RuntimeError, match="already initialised"):
        net.__init__(0, 10, inner_then_weights())
    x = np.zeros((1, 3, 64, 64), np.float32)
    np.testing.assert_array_equal(net.forward(x), ac.AlexNet.from_state_dict(
        dict(zip(ac.AlexNet(num_classes=10, seed=0).state_dict(), weights)))(x))


def test_num_threads_roundtrip():
    old = ac.get_num_threads()
    try:
        ac.set_num_threads(1)
        assert ac.get_num_threads() == 1
        with pytest.raises(ValueError):
            ac.set_num_threads(0)
        for bad, name in [(True, "bool"), (2.0, "float"), ("2", "str"), (None, "NoneType")]:
            with pytest.raises(TypeError) as info:
                ac.set_num_threads(bad)
            assert str(info.value) == f"set_num_threads: expected an int, got {name}"
        assert ac.get_num_threads() == 1
    finally:
        ac.set_num_threads(old)


_NO_CUDA_CHECKS = """
import numpy as np
import pytest
import alexnet_c as ac
assert not ac.cuda_is_available()
assert ac.cuda_unavailable_reason()
with pytest.raises(RuntimeError, match="CUDA is not available"):
    ac.relu(np.zeros(3), device="cuda")
with pytest.raises(RuntimeError, match="CUDA is not available"):
    ac.conv2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), device="cuda", precision="tf32")
m = ac.AlexNet(num_classes=2, seed=0)
with pytest.raises(RuntimeError, match="CUDA is not available"):
    m.to("cuda")
with pytest.raises(RuntimeError, match="CUDA is not available"):
    m.to("cuda", precision="tf32")
assert m.device == "cpu"
with pytest.raises(ValueError, match="device"):
    m.to("tpu")
print("checked")
"""


def test_cuda_unavailable_is_explained():
    """Where CUDA cannot be used, asking for it says why. Where it can (a GPU, or the
    emulator build), the same checks run in a child that sees no device."""
    if not ac.cuda_is_available():
        exec(_NO_CUDA_CHECKS, {})
        return
    res = run_python(["-c", _NO_CUDA_CHECKS], env=child_env(CUDA_VISIBLE_DEVICES=""))
    assert res.returncode == 0 and "checked" in res.stdout, res.stdout + res.stderr


def test_model_pickles(tmp_path):
    import pickle
    m = ac.AlexNet(num_classes=3, seed=9)
    m2 = pickle.loads(pickle.dumps(m))
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(m(x), m2(x))


_STAGES = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
_FC = ["fc1", "fc2", "fc3"]


@pytest.mark.parametrize("variant, size, stages", [
    ("torchvision", (224, 224), _STAGES + _FC),
    ("torchvision", (256, 320), _STAGES + ["avgpool"] + _FC),
    ("original", (227, 227), _STAGES + _FC + ["log_softmax"]),
])
def test_profile_times_every_stage_of_the_real_forward(variant, size, stages):
    m = ac.AlexNet(variant=variant, num_classes=11, seed=3)
    x = np.random.default_rng(0).standard_normal((2, 3) + size).astype(np.float32)
    out, times = m._net.profile(x)
    np.testing.assert_array_equal(out, m(x))   # the same forward, bit for bit
    assert [name for name, _ in times] == stages
    assert all(isinstance(s, float) and s > 0 for _, s in times)
    ms = m.profile(x, repeat=3)
    assert list(ms) == stages and all(v > 0 for v in ms.values())
    with pytest.raises(ValueError, match="repeat must be >= 1, got 0"):
        m.profile(x, repeat=0)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        m.profile(np.zeros((2, 4, 224, 224), np.float32))
    # an empty batch runs no stage: every time it reports is 0 (it once read stack garbage)
    out, times = m._net.profile(np.zeros((0, 3) + size, np.float32))
    assert out.shape == (0, 11) and times and all(s == 0.0 for _, s in times)
    assert [name for name, _ in times] == [n for n in stages if n not in ("avgpool", "log_softmax")]


def test_precision_is_checked_on_every_build():
    """precision='tf32' is a CUDA mode: on the CPU it is refused, not ignored, and a
    name that is neither 'float32' nor 'tf32' is an error everywhere."""
    x, w = np.ones((1, 2, 3, 3), np.float32), np.ones((1, 2, 3, 3), np.float32)
    np.testing.assert_array_equal(ac.conv2d(x, w, precision="float32"), ac.conv2d(x, w))
    with pytest.raises(ValueError, match="precision='tf32' is a CUDA tensor-core mode"):
        ac.conv2d(x, w, precision="tf32")
    with pytest.raises(ValueError, match="precision='tf32' is a CUDA tensor-core mode"):
        ac.linear(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), precision="tf32")
    for bad in ("fp16", "TF32", None, 32):
        with pytest.raises(ValueError, match="precision must be 'float32' or 'tf32', got"):
            ac.conv2d(x, w, precision=bad)
    m = ac.AlexNet(num_classes=3, seed=0)
    assert m.precision == "float32" and "(device): cpu\n" in repr(m)
    with pytest.raises(ValueError, match="precision='tf32' is a CUDA tensor-core mode"):
        m.to("cpu", precision="tf32")
    with pytest.raises(ValueError, match="precision='tf32' is a CUDA tensor-core mode"):
        ac.AlexNet(num_classes=3, seed=0, precision="tf32")
    with pytest.raises(ValueError, match="precision must be"):
        ac.AlexNet.from_state_dict(m.state_dict(), precision="half")
    assert m.precision == "float32" and m.device == "cpu"
    m.to("cpu", precision="float32")


def test_cuda_graph_counts_on_cpu():
    # The CUDA graph counters of tests/test_cuda.py exist on every build; a CPU net has none.
    m = ac.AlexNet(seed=0)
    m(np.zeros((1, 3, 63, 63), np.float32))
    assert m._net.cuda_graph_counts() == (0, 0)
