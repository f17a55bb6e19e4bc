"""Both whole networks against torch/torchvision in float64, weights through a real torch.save file.

Each test also reports the max relative error of every layer (run pytest with -s to see it)."""
import numpy as np
import pytest
import torch

import alexnet_c as ac
from _torch_models import TOL, make_model, max_rel_err


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(variant, num_classes) -> (torch model in float64, path of its torch.save'd state dict)."""
    cache = {}

    def get(variant, num_classes):
        key = (variant, num_classes)
        if key not in cache:
            model = make_model(variant, num_classes, seed=num_classes)
            path = tmp_path_factory.mktemp("ckpt") / f"{variant}_{num_classes}.pth"
            torch.save(model.state_dict(), path)
            cache[key] = (model.double(), path)
        return cache[key]

    return get


def layer_errors(model_t, model_c, x):
    """Per-layer max relative error, running alexnet_c's ops on alexnet_c's own weights."""
    sd = model_c.state_dict()
    rows, xt, xc = [], torch.from_numpy(x.astype(np.float64)), x
    for i, layer in enumerate(model_t.features):
        with torch.no_grad():
            xt = layer(xt)
        if isinstance(layer, torch.nn.Conv2d):
            xc = ac.conv2d(xc, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], layer.stride, layer.padding)
        elif isinstance(layer, torch.nn.ReLU):
            xc = ac.relu(xc)
        else:
            xc = ac.max_pool2d(xc, layer.kernel_size, layer.stride)
        rows.append((f"features.{i} {type(layer).__name__}", max_rel_err(xc, xt)))
    if hasattr(model_t, "avgpool"):
        with torch.no_grad():
            xt = model_t.avgpool(xt)
        xc = ac.adaptive_avg_pool2d(xc, 6)
        rows.append(("avgpool", max_rel_err(xc, xt)))
    xt, xc = torch.flatten(xt, 1), xc.reshape(xc.shape[0], -1)
    for i, layer in enumerate(model_t.classifier):
        with torch.no_grad():
            xt = layer(xt)
        if isinstance(layer, torch.nn.Linear):
            xc = ac.linear(xc, sd[f"classifier.{i}.weight"], sd[f"classifier.{i}.bias"])
        elif isinstance(layer, torch.nn.ReLU):
            xc = ac.relu(xc)
        else:
            continue   # Dropout: identity at inference
        rows.append((f"classifier.{i} {type(layer).__name__}", max_rel_err(xc, xt)))
    return rows


CASES = [
    ("torchvision", 1000, 1, 224, 224),
    ("torchvision", 1000, 3, 224, 224),
    ("torchvision", 1000, 1, 227, 227),
    ("torchvision", 10, 3, 256, 320),
    ("torchvision", 10, 1, 63, 63),
    ("torchvision", 1000, 3, 63, 63),
    ("original", 1000, 1, 227, 227),
    ("original", 1000, 3, 227, 227),
    ("original", 37, 3, 227, 227),
]


@pytest.mark.parametrize("variant,num_classes,n,h,w", CASES)
def test_model_matches_torch(saved, variant, num_classes, n, h, w):
    model_t, path = saved(variant, num_classes)
    model_c = ac.load(path)
    assert (model_c.variant, model_c.num_classes) == (variant, num_classes)
    x = np.random.default_rng(n * h + w).standard_normal((n, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        ref = model_t(torch.from_numpy(x).double())
    out = model_c(x)
    assert out.dtype == np.float32 and out.shape == (n, num_classes)
    err = max_rel_err(out, ref)
    rows = layer_errors(model_t, model_c, x)
    print(f"\n{variant} {num_classes} classes, input {(n, 3, h, w)}: whole model max rel err {err:.2e}")
    for name, e in rows:
        print(f"  {name:28s} {e:.2e}")
    assert err <= TOL
    assert all(e <= TOL for _, e in rows), rows
    top_ref = torch.topk(ref, min(5, num_classes), dim=1).indices.numpy()
    top_ours = np.argsort(-out, axis=1, kind="stable")[:, :min(5, num_classes)]
    np.testing.assert_array_equal(top_ours[:, 0], top_ref[:, 0])
    for a, b in zip(top_ours, top_ref):
        assert set(a) == set(b)


def test_from_state_dict_with_tensors_and_unbatched(saved):
    model_t, _ = saved("torchvision", 10)
    model_c = ac.AlexNet.from_state_dict(model_t.float().state_dict())
    model_t.double()
    x = np.random.default_rng(5).standard_normal((3, 80, 96))   # float64, unbatched
    with torch.no_grad():
        ref = model_t(torch.from_numpy(x)[None])
    out = model_c(x)
    assert out.shape == (1, 10)
    assert max_rel_err(out, ref) <= TOL


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_from_state_dict_and_load_state_dict_take_tensors_numpy_lacks(saved, dtype):
    """bfloat16 has no NumPy dtype: its tensors are cast to float32, as torch's load_state_dict does."""
    model_t, _ = saved("torchvision", 10)
    sd = {k: v.to(dtype) for k, v in model_t.state_dict().items()}
    expected = {k: v.float().numpy() for k, v in sd.items()}
    for model_c in (ac.AlexNet.from_state_dict(sd), ac.AlexNet(num_classes=10, seed=0)):
        model_c.load_state_dict(sd)
        for k, v in model_c.state_dict().items():
            np.testing.assert_array_equal(v, expected[k])


def test_original_log_softmax_output(saved):
    model_t, path = saved("original", 37)
    out = ac.load(path)(np.random.default_rng(2).standard_normal((2, 3, 227, 227)).astype(np.float32))
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, rtol=1e-5)
    assert (out <= 0).all()


def test_default_init_matches_pytorch_distribution():
    m = ac.AlexNet(num_classes=10, seed=3)
    sd = m.state_dict()
    w = sd["features.3.weight"]
    bound = 1 / np.sqrt(64 * 5 * 5)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(float(w.mean())) < 0.05 * bound
    b = sd["classifier.6.bias"]
    assert np.abs(b).max() <= 1 / np.sqrt(4096)
    same = ac.AlexNet(num_classes=10, seed=3).state_dict()
    assert all(np.array_equal(sd[k], same[k]) for k in sd)
    other = ac.AlexNet(num_classes=10, seed=4).state_dict()
    assert not np.array_equal(sd["features.0.weight"], other["features.0.weight"])
