"""summary/summary_string/model_repr/summary_html against torchsummary and torch's repr."""
import contextlib
import functools
import importlib
import io
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
torchsummary = pytest.importorskip("torchsummary")
from hypothesis import given, settings, strategies as st  # noqa: E402

# The package exports a function named `summary` too; take the module itself.
S = importlib.import_module("alexnet_c.summary")


AlexNet = importlib.import_module("alexnet_c.reference")._original_class()


@functools.lru_cache(maxsize=None)
def torch_model(variant, num_classes):
    if variant == "torchvision":
        return torchvision.models.alexnet(num_classes=num_classes)
    return AlexNet(num_classes)


def torchsummary_text(variant, num_classes, size, batch_size=-1):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), torch.no_grad():
        torchsummary.summary(torch_model(variant, num_classes), tuple(size),
                             batch_size=batch_size, device="cpu")
    return buf.getvalue()


def model(variant="torchvision", num_classes=1000, device="cpu"):
    return SimpleNamespace(variant=variant, num_classes=num_classes, device=device)


CASES = [
    ("torchvision", 1000, (3, 224, 224), -1),
    ("torchvision", 1000, (3, 256, 320), -1),
    ("torchvision", 1000, (3, 63, 63), -1),
    ("torchvision", 10, (3, 224, 224), -1),
    ("torchvision", 10, (3, 256, 320), -1),
    ("torchvision", 1000, (3, 224, 224), 4),
    ("original", 1000, (3, 227, 227), -1),
    ("original", 10, (3, 227, 227), -1),
]


@pytest.mark.parametrize("variant,num_classes,size,batch_size", CASES)
def test_summary_string_matches_torchsummary(variant, num_classes, size, batch_size):
    text, (total, trainable) = S.summary_string(model(variant, num_classes), size, batch_size)
    assert text == torchsummary_text(variant, num_classes, size, batch_size)
    n = sum(p.numel() for p in torch_model(variant, num_classes).parameters())
    assert total == trainable == n


@settings(max_examples=8, deadline=None)
@given(h=st.integers(63, 300), w=st.integers(63, 300))
def test_summary_matches_torchsummary_any_size(h, w):
    text, _ = S.summary_string(model(), (3, h, w))
    assert text == torchsummary_text("torchvision", 1000, (3, h, w))


def test_summary_prints_and_returns_counts(capsys):
    counts = S.summary(model(), (3, 224, 224))
    assert counts == (61_100_840, 61_100_840)
    ref = torchsummary_text("torchvision", 1000, (3, 224, 224))
    assert capsys.readouterr().out == ref
    S.summary(model(), (3, 224, 224), device="cpu")         # torchsummary's keyword
    assert capsys.readouterr().out == ref
    with pytest.raises(ValueError, match="device"):
        S.summary(model(), (3, 224, 224), device="tpu")


def test_original_param_count_from_design():
    _, counts = S.summary_string(model("original"), (3, 227, 227))
    assert counts == (62_378_344, 62_378_344)


def test_input_size_as_list_and_numpy_ints():
    np = pytest.importorskip("numpy")
    ref, _ = S.summary_string(model(), (3, 224, 224))
    assert S.summary_string(model(), [3, 224, 224])[0] == ref
    assert S.summary_string(model(), np.array([3, 224, 224]).tolist())[0] == ref
    assert S.summary_string(model(), tuple(np.int64(v) for v in (3, 224, 224)))[0] == ref
    assert S.summary_string(model(), [(3, 224, 224)])[0] == ref


@pytest.mark.parametrize("size", [(3, 62, 224), (3, 224, 62), (3, 10, 10)])
def test_too_small_names_minimum(size):
    with pytest.raises(ValueError, match="63"):
        S.summary_string(model(), size)


def test_original_needs_227():
    with pytest.raises(ValueError, match="227"):
        S.summary_string(model("original"), (3, 224, 224))
    # Sizes whose last pool is still 6x6 are what torch itself accepts.
    assert S.summary_string(model("original"), (3, 230, 230))[0] == \
        torchsummary_text("original", 1000, (3, 230, 230))


@pytest.mark.parametrize("bad,exc", [((1, 224, 224), ValueError), ((3, 224), ValueError),
                                     ((3, "a", 224), TypeError), ((3, 224.5, 224), TypeError)])
def test_bad_input_size(bad, exc):
    with pytest.raises(exc):
        S.summary_string(model(), bad)


def test_bad_model():
    with pytest.raises(TypeError):
        S.summary_string(object(), (3, 224, 224))
    with pytest.raises(ValueError, match="variant"):
        S.summary_string(model("resnet"), (3, 224, 224))


def test_show_flops():
    plain, counts = S.summary_string(model(), (3, 224, 224))
    text, counts2 = S.summary_string(model(), (3, 224, 224), show_flops=True)
    assert counts == counts2 and text != plain
    lines = text.splitlines()
    assert lines[1].endswith("Mult-Adds")
    assert "70,276,800" in text            # conv1: 64*55*55 outputs x 3*11*11 taps
    # torchvision's own meta "_ops" is AlexNet's GMACs at 224.
    ops = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["_ops"]
    assert f"Mult-adds per sample (G): {ops:.3f}" in text
    assert f"GFLOPs per sample: {2 * ops:.3f}" in text
    assert all(len(line) <= 80 for line in lines)


@pytest.mark.parametrize("variant,num_classes", [("torchvision", 1000), ("torchvision", 10),
                                                 ("original", 1000), ("original", 7)])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_model_repr(variant, num_classes, device):
    text = S.model_repr(model(variant, num_classes, device))
    device_line = f"\n  (device): {device}"
    assert text.endswith(device_line + "\n)")
    assert text.replace(device_line, "") == repr(torch_model(variant, num_classes))


@pytest.mark.parametrize("variant,rows", [("torchvision", 21), ("original", 18)])
def test_summary_html(variant, rows):
    html = S.summary_html(model(variant, 1000))
    assert html.startswith("<table") and html.rstrip().endswith("</table>")
    assert html.count("<tr><td>") == rows
    total = sum(p.numel() for p in torch_model(variant, 1000).parameters())
    assert f"{total:,}" in html
    size = "224, 224" if variant == "torchvision" else "227, 227"
    assert size in html
