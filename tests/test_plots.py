"""plots: real PNG files, opened again with Pillow; feature maps checked against torch."""
import functools
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytest.importorskip("matplotlib")
PIL_Image = pytest.importorskip("PIL.Image")
import torch.nn.functional as F  # noqa: E402

import alexnet_c  # noqa: E402
from alexnet_c import plots  # noqa: E402


class StandIn:
    """variant/num_classes/state_dict() of alexnet_c.AlexNet, from a seeded torch model."""

    def __init__(self, variant="torchvision"):
        torch.manual_seed(0)
        if variant == "torchvision":
            self.net = torchvision.models.alexnet(num_classes=10).eval()
        else:   # only features.* matter for the plots; the original's conv stack
            self.net = torch.nn.Module()
            self.net.features = torch.nn.Sequential(
                torch.nn.Conv2d(3, 96, 11, 4, 0), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2),
                torch.nn.Conv2d(96, 256, 5, 1, 2), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2),
                torch.nn.Conv2d(256, 384, 3, 1, 1), torch.nn.ReLU(),
                torch.nn.Conv2d(384, 384, 3, 1, 1), torch.nn.ReLU(),
                torch.nn.Conv2d(384, 256, 3, 1, 1), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2))
        self.variant, self.num_classes, self.device = variant, 10, "cpu"

    def state_dict(self):
        return {k: v.detach().numpy().copy() for k, v in self.net.state_dict().items()}


@functools.lru_cache(maxsize=None)
def stand_in(variant="torchvision"):
    return StandIn(variant)


def _t(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


TORCH_OPS = {
    "conv2d": lambda x, w, b=None, stride=1, padding=0, groups=1: F.conv2d(
        _t(x), _t(w), None if b is None else _t(b), stride=stride, padding=padding,
        groups=groups).numpy(),
    "relu": lambda x: F.relu(_t(x)).numpy(),
    "max_pool2d": lambda x, kernel_size, stride=None, padding=0, ceil_mode=False: F.max_pool2d(
        _t(x), kernel_size, stride, padding, ceil_mode=ceil_mode).numpy(),
}


@pytest.fixture
def ops(monkeypatch):
    """alexnet_c's ops where the extension is built; torch stand-ins until then."""
    for name, fn in TORCH_OPS.items():
        if not hasattr(alexnet_c, name):
            monkeypatch.setattr(alexnet_c, name, fn, raising=False)


def assert_png(path):
    with PIL_Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 0 and im.size[1] > 0
        return im.size


@pytest.mark.parametrize("variant", ["torchvision", "original"])
def test_plot_filters(tmp_path, variant):
    out = plots.plot_filters(stand_in(variant), tmp_path / "filters.png")
    assert out == str(tmp_path / "filters.png")
    w, h = assert_png(out)
    assert w > h        # 64 -> 4 x 16 grid, 96 -> 6 x 16 (the paper's figure 3)


def test_plot_filters_constant_filter_and_figure():
    sd = stand_in().state_dict()
    sd["features.0.weight"][0] = 0.0
    fake = type("M", (), {"variant": "torchvision", "state_dict": lambda self: sd})()
    fig = plots.plot_filters(fake)          # path=None: the Figure itself
    assert fig.__class__.__name__ == "Figure"


@pytest.mark.parametrize("layer", [0, 3, 5, "conv5", "features.12", "pool1", "pool5"])
def test_feature_maps_match_torch(ops, layer):
    m = stand_in()
    x = np.random.default_rng(0).standard_normal((3, 100, 120)).astype(np.float32)
    maps = plots.feature_maps(m, x, layer)
    idx = {"conv5": 10, "features.12": 12, "pool1": 2, "pool5": 12}.get(layer, layer)
    with torch.no_grad():
        ref = m.net.features[:idx + 1](_t(x)[None])[0].numpy()
    assert maps.shape == ref.shape
    np.testing.assert_allclose(maps, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_plot_feature_maps_png(ops, tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    out = plots.plot_feature_maps(stand_in(), img, "conv2", tmp_path / "maps.png", max_maps=16)
    assert_png(out)
    out = plots.plot_feature_maps(stand_in("original"), img, 0, tmp_path / "orig.png",
                                  max_maps=8)
    assert_png(out)


@pytest.mark.parametrize("layer,exc", [(13, ValueError), (-1, ValueError), ("conv6", ValueError), ("pool3", ValueError),
                                       ("fc1", ValueError), (1.5, TypeError)])
def test_bad_layer(layer, exc):
    with pytest.raises(exc):
        plots.feature_maps(stand_in(), np.zeros((3, 64, 64), np.float32), layer)


def test_plot_layer_times(tmp_path):
    rows = [("conv1", 2.5, 3.0), ("relu1", 0.1, 0.2), ("pool1", 0.4, 0.3), ("fc6", 5.0, 4.0),
            ("zero", 0.0, 0.1)]
    out = plots.plot_layer_times(rows, tmp_path / "times.png")
    assert_png(out)
    with pytest.raises(ValueError):
        plots.plot_layer_times([], tmp_path / "empty.png")
    with pytest.raises(ValueError):
        plots.plot_layer_times([("x", float("nan"), 1.0)], tmp_path / "nan.png")


def test_missing_matplotlib_names_extra(monkeypatch, tmp_path):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match=r"alexnet_c\[plot\]"):
        plots.plot_layer_times([("conv1", 1.0, 1.0)], tmp_path / "t.png")


def test_pyplot_backend_untouched(tmp_path):
    import matplotlib
    before = matplotlib.get_backend()
    plots.plot_layer_times([("conv1", 1.0, 2.0)], tmp_path / "t.png")
    assert matplotlib.get_backend() == before
