"""images.preprocess/load_batch/predict/iter_predict and categories, against torchvision."""
import functools
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
PIL_Image = pytest.importorskip("PIL.Image")
skdata = pytest.importorskip("skimage.data")
from torch import nn  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from alexnet_c import categories, images  # noqa: E402
from _subproc import child_env, run_python  # noqa: E402

WEIGHTS = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
TV_TRANSFORM = WEIGHTS.transforms()
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket"]


class StandIn:
    """The slice of alexnet_c.AlexNet's interface images.py uses (variant, num_classes,
    __call__), backed by a tiny seeded torch net so the tests stay fast. Like the
    original layout, variant "original" ends in log_softmax and takes only 227x227."""

    def __init__(self, variant="torchvision", num_classes=10, seed=0):
        torch.manual_seed(seed)
        layers = [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, num_classes)]
        if variant == "original":
            layers.append(nn.LogSoftmax(dim=1))
        self.net = nn.Sequential(*layers).eval()
        with torch.no_grad():
            self.net[2].weight.mul_(20.0)       # spread the probabilities: no near-ties
        self.variant, self.num_classes, self.device = variant, num_classes, "cpu"
        self.calls = []

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float32)
        if self.variant == "original" and x.shape[2:] != (227, 227):
            raise ValueError(f"original layout takes 227x227, got {x.shape}")
        self.calls.append(x.shape)
        with torch.no_grad():
            return self.net(torch.from_numpy(x)).numpy()

    def torch_probs(self, x):
        with torch.no_grad():
            out = self.net(torch.from_numpy(np.asarray(x, np.float32))).double()
        return out.exp() if self.variant == "original" else out.softmax(1)


@functools.lru_cache(maxsize=None)
def stand_in(variant="torchvision", num_classes=10):
    return StandIn(variant, num_classes)


@functools.lru_cache(maxsize=None)
def photo(name):
    return getattr(skdata, name)()


def tv(pil):
    return TV_TRANSFORM(pil).numpy()


# ---------------------------------------------------------------- preprocess

@pytest.mark.parametrize("name", PHOTOS)
def test_preprocess_matches_torchvision_on_photos(name):
    a = photo(name)
    ref = tv(PIL_Image.fromarray(a))
    for x in (a, PIL_Image.fromarray(a)):
        out = images.preprocess(x)
        assert out.dtype == np.float32 and out.shape == (3, 224, 224)
        assert np.abs(out - ref).max() <= 1e-5


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_preprocess_path(tmp_path, fmt):
    p = tmp_path / f"img.{fmt.lower()}"
    PIL_Image.fromarray(photo("chelsea")).save(p, format=fmt)
    ref = tv(PIL_Image.open(p).convert("RGB"))
    assert np.abs(images.preprocess(p) - ref).max() <= 1e-5
    assert np.abs(images.preprocess(str(p)) - ref).max() <= 1e-5
    assert np.abs(images.preprocess(p.read_bytes()) - ref).max() <= 1e-5


def test_grayscale_and_rgba():
    gray = photo("camera")                                   # (512, 512) uint8
    ref = tv(PIL_Image.fromarray(gray).convert("RGB"))
    assert np.abs(images.preprocess(gray) - ref).max() <= 1e-5
    assert np.abs(images.preprocess(gray[:, :, None]) - ref).max() <= 1e-5
    assert np.abs(images.preprocess(PIL_Image.fromarray(gray)) - ref).max() <= 1e-5
    rgb = photo("coffee")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    ref = tv(PIL_Image.fromarray(rgba).convert("RGB"))
    assert np.abs(images.preprocess(rgba) - ref).max() <= 1e-5
    assert np.abs(images.preprocess(PIL_Image.fromarray(rgba)) - ref).max() <= 1e-5


@pytest.mark.parametrize("shape", [(50, 80), (300, 7), (256, 256), (224, 1000), (301, 257)])
def test_odd_sizes_match_torchvision(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    assert np.abs(images.preprocess(a) - tv(PIL_Image.fromarray(a))).max() <= 1e-5


# one step of 255 in a channel, after normalisation (the smallest std divides most)
ONE_STEP = 1.0 / 255.0 / min(images.STD) + 1e-5


@pytest.mark.parametrize("shape,crop,resize", [((2, 700), 224, 256), ((700, 3), 224, 256), ((5, 900), 227, 256),
                                               ((1, 400), 224, 200), ((640, 480), 224, 256)])
def test_resize_of_the_crop_region_alone_stays_within_one_step(monkeypatch, shape, crop, resize):
    """The path an image too thin for a whole resize takes, forced on small images here
    (threshold lowered) to compare it with torchvision's whole resize and crop."""
    monkeypatch.setattr(images, "FULL_RESIZE_MAX_PIXELS", 1000)
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    ref = T.Compose([T.Resize(resize, antialias=True), T.CenterCrop(crop), T.ToTensor(),
                     T.Normalize(images.MEAN, images.STD)])(PIL_Image.fromarray(a)).numpy()
    out = images.preprocess(a, resize_size=resize, crop_size=crop)
    assert out.shape == ref.shape == (3, crop, crop)
    assert np.abs(out - ref).max() <= ONE_STEP


def test_thin_strip_is_preprocessed_in_bounded_memory(tmp_path):
    """A 1 x 60000 PNG is a few hundred bytes; resized whole (256 x 15,360,000) it
    would take 11.8 GB. With 3 GiB more address space allowed the crop region alone fits."""
    path = tmp_path / "strip.png"
    strip = np.zeros((1, 60000, 3), np.uint8)
    strip[..., 0], strip[..., 1], strip[..., 2] = 10, 120, 250
    PIL_Image.fromarray(strip).save(path)
    # 3 GiB on top of what the process maps already (under ASan that is terabytes of
    # reserved shadow memory, which an absolute limit would cut off)
    code = ("import resource, sys, numpy as np; "
            "from alexnet_c import images; "
            "vm = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize:')).split()[1]) * 1024; "
            "resource.setrlimit(resource.RLIMIT_AS, (vm + (3 << 30), vm + (3 << 30))); "
            f"x = images.preprocess({str(path)!r}); "
            "print(x.shape, float(np.ptp(x, axis=(1, 2)).max()))")
    res = run_python(["-c", code], env=child_env(OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["(3,", "224,", "224)", "0.0"]


def test_crop_227_matches_torchvision_pipeline():
    a = photo("rocket")
    ref = T.Compose([T.Resize(256, antialias=True), T.CenterCrop(227), T.ToTensor(),
                     T.Normalize(images.MEAN, images.STD)])(PIL_Image.fromarray(a)).numpy()
    out = images.preprocess(a, crop_size=227)
    assert out.shape == (3, 227, 227) and np.abs(out - ref).max() <= 1e-5


def test_preprocess_does_not_modify_input():
    a = photo("astronaut").copy()
    before = a.copy()
    images.preprocess(a)
    assert np.array_equal(a, before)


@pytest.mark.parametrize("bad,exc", [(np.zeros((8, 8, 3), np.float32), TypeError),
                                     (np.zeros((8, 8, 2), np.uint8), ValueError),
                                     (np.zeros((2, 8, 8, 3), np.uint8), ValueError),
                                     (np.zeros((0, 8, 3), np.uint8), ValueError),
                                     (42, TypeError)])
def test_preprocess_rejects(bad, exc):
    with pytest.raises(exc):
        images.preprocess(bad)


def test_missing_pillow_names_extra(monkeypatch):
    for mod in ("PIL", "PIL.Image"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match=r"alexnet_c\[images\]"):
        images.preprocess(np.zeros((8, 8, 3), np.uint8))
    # A preprocessed batch needs no Pillow.
    out = images.predict(stand_in(), np.zeros((3, 224, 224), np.float32), topk=2)
    assert len(out) == 2


def test_load_batch():
    batch = images.load_batch([photo("astronaut"), PIL_Image.fromarray(photo("coffee"))])
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == np.float32
    assert np.abs(batch[1] - tv(PIL_Image.fromarray(photo("coffee")))).max() <= 1e-5
    assert images.load_batch([]).shape == (0, 3, 224, 224)


# ---------------------------------------------------------------- categories

def test_categories_equal_torchvision():
    from alexnet_c.categories import IMAGENET_CATEGORIES
    assert isinstance(IMAGENET_CATEGORIES, tuple)
    assert IMAGENET_CATEGORIES == tuple(WEIGHTS.meta["categories"])
    assert categories.IMAGENET_CATEGORIES is IMAGENET_CATEGORIES
    assert categories.class_names(3) == ("class_0", "class_1", "class_2")
    with pytest.raises(AttributeError):
        categories.NOT_A_NAME


# ---------------------------------------------------------------- predict

def check_prediction(model, pred, x, topk):
    probs = model.torch_probs(x[None] if x.ndim == 3 else x)[0].numpy()
    names = categories.class_names(model.num_classes)
    assert len(pred) == topk
    ps = [p for _, p in pred]
    assert ps == sorted(ps, reverse=True)
    np.testing.assert_allclose(ps, np.sort(probs)[::-1][:topk], rtol=0, atol=1e-6)
    for name, p in pred:
        assert isinstance(name, str) and isinstance(p, float)
        assert abs(probs[names.index(name)] - p) <= 1e-6


def same(a, b):
    """Equal up to float32 batch-size effects in the backend."""
    return ([n for n, _ in a] == [n for n, _ in b]
            and np.allclose([p for _, p in a], [p for _, p in b], rtol=0, atol=1e-6))


def test_predict_single_image_and_list():
    m = stand_in()
    a = photo("chelsea")
    pred = images.predict(m, a, topk=3)
    check_prediction(m, pred, images.preprocess(a), 3)
    assert pred[0][0].startswith("class_")
    both = images.predict(m, [a, PIL_Image.fromarray(photo("coffee"))], topk=3)
    assert len(both) == 2 and same(both[0], pred)
    check_prediction(m, both[1], images.preprocess(photo("coffee")), 3)


def test_predict_float_batches():
    m = stand_in()
    x = images.load_batch([photo("chelsea"), photo("rocket")])
    single = images.predict(m, x[0])
    assert isinstance(single, list) and isinstance(single[0], tuple) and len(single) == 5
    batch = images.predict(m, x)
    assert len(batch) == 2 and same(batch[0], single)
    check_prediction(m, batch[1], x[1], 5)
    assert images.predict(m, torch.from_numpy(x))[1] == batch[1]


def test_predict_imagenet_names():
    m = stand_in("torchvision", 1000)
    pred = images.predict(m, photo("coffee"), topk=5)
    assert all(name in categories.IMAGENET_CATEGORIES for name, _ in pred)
    check_prediction(m, pred, images.preprocess(photo("coffee")), 5)


def test_predict_original_uses_227_and_exp():
    m = StandIn("original", 10)
    pred = images.predict(m, photo("astronaut"), topk=10)
    assert m.calls[-1] == (1, 3, 227, 227)
    check_prediction(m, pred, images.preprocess(photo("astronaut"), crop_size=227), 10)
    assert abs(sum(p for _, p in pred) - 1.0) < 1e-5


@pytest.mark.parametrize("topk,exc", [(0, ValueError), (11, ValueError), (2.0, TypeError)])
def test_predict_bad_topk(topk, exc):
    with pytest.raises(exc):
        images.predict(stand_in(), np.zeros((3, 224, 224), np.float32), topk=topk)


def test_predict_bad_float_shape():
    with pytest.raises(ValueError, match="shape"):
        images.predict(stand_in(), np.zeros((224, 224, 3), np.float32))


# ---------------------------------------------------------------- iter_predict

@pytest.fixture
def folder(tmp_path):
    (tmp_path / "sub").mkdir()
    for i, name in enumerate(["astronaut", "coffee", "chelsea"]):
        PIL_Image.fromarray(photo(name)).resize((120, 100)).save(tmp_path / f"{i}_{name}.png")
    PIL_Image.fromarray(photo("rocket")).resize((90, 130)).save(tmp_path / "sub" / "4_rocket.jpg")
    (tmp_path / "3_broken.jpg").write_bytes(b"this is not a JPEG")
    (tmp_path / "notes.txt").write_text("not an image either, and skipped by extension")
    return tmp_path


def test_iter_predict_folder_with_corrupt_image(folder, capsys):
    m = StandIn()
    out = list(images.iter_predict(m, folder, topk=2, batch_size=2, progress=False))
    names = [p.split("/")[-1] for p, _ in out]
    assert names == ["0_astronaut.png", "1_coffee.png", "2_chelsea.png", "3_broken.jpg",
                     "4_rocket.jpg"]
    bad = dict(zip(names, (r for _, r in out)))["3_broken.jpg"]
    assert isinstance(bad, Exception)
    for (p, r) in out:
        if not p.endswith("broken.jpg"):
            assert len(r) == 2
            check_prediction(m, r, images.preprocess(p), 2)
    assert all(shape[0] <= 2 for shape in m.calls)          # bounded batches
    assert capsys.readouterr().err == ""


def test_iter_predict_glob_list_and_generator(folder):
    m = stand_in()
    by_glob = list(images.iter_predict(m, str(folder / "*.png"), progress=False))
    assert [p.split("/")[-1][0] for p, _ in by_glob] == ["0", "1", "2"]
    paths = [p for p, _ in by_glob]
    assert list(images.iter_predict(m, paths, progress=False)) == by_glob
    assert list(images.iter_predict(m, (p for p in paths), progress=False)) == by_glob
    (p0, r0), = images.iter_predict(m, paths[0], progress=False)
    assert p0 == paths[0] and same(r0, by_glob[0][1])


def test_iter_predict_progress(folder, capsys, monkeypatch):
    list(images.iter_predict(stand_in(), folder, batch_size=4, progress=True))
    assert "5/5" in capsys.readouterr().err                  # tqdm on stderr
    monkeypatch.setitem(sys.modules, "tqdm", None)
    list(images.iter_predict(stand_in(), folder, batch_size=4, progress=True))
    err = capsys.readouterr().err
    assert "alexnet_c[progress]" in err and "100%" in err    # plain fallback


def test_iter_predict_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        images.iter_predict(stand_in(), tmp_path / "missing.jpg")
    with pytest.raises(ValueError):
        images.iter_predict(stand_in(), tmp_path, batch_size=0)
    with pytest.raises(TypeError):
        images.iter_predict(stand_in(), 3)
    assert list(images.iter_predict(stand_in(), tmp_path, progress=False)) == []


def test_predict_with_alexnet_c_model():
    """The real model: same top-k as torchvision's AlexNet holding its weights."""
    import alexnet_c
    m = alexnet_c.AlexNet(num_classes=10, seed=0)
    net = torchvision.models.alexnet(num_classes=10).eval()
    net.load_state_dict({k: torch.tensor(np.array(v)) for k, v in m.state_dict().items()})
    x = images.preprocess(photo("chelsea"))
    with torch.no_grad():
        probs = net(torch.from_numpy(x[None])).double().softmax(1)[0].numpy()
    pred = images.predict(m, photo("chelsea"), topk=3)
    np.testing.assert_allclose([p for _, p in pred], np.sort(probs)[::-1][:3], rtol=0, atol=1e-5)
    assert [n for n, _ in pred] == [f"class_{i}" for i in np.argsort(-probs)[:3]]
