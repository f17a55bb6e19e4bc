"""The benchmark's per-stage table lines up with AlexNet.profile, stage for stage."""
import numpy as np
import pytest

import alexnet_c as ac
from alexnet_c import bench
from _isa import winograd

pytest.importorskip("torch")


@pytest.mark.parametrize("variant, size", [("torchvision", 224), ("original", 227)])
def test_stage_plan_names_match_profile(variant, size):
    m = ac.AlexNet(variant=variant, seed=0)
    x = np.zeros((1, 3, size, size), np.float32)
    profiled = list(m.profile(x))
    planned = [s["name"] for s in bench.stage_plan(variant, size)]
    # the 6x6 average pool of torchvision at 224 is an identity that the C forward skips
    assert [n for n in planned if n in profiled] == profiled
    assert set(planned) - set(profiled) <= {"avgpool"}


def test_bench_stages_rows():
    rows = bench.bench_stages("torchvision", 1, 1, peak=100.0)
    assert [r["layer"] for r in rows] == [s["name"] for s in bench.stage_plan("torchvision", 224)]
    for r in rows:
        assert r["torch_ms"] > 0
        assert r["ours_ms"] > 0 or r["layer"] == "avgpool"
    convs = [r for r in rows if r["layer"].startswith("conv")]
    assert len(convs) == 5 and all(r["ours_gflops"] > 0 for r in convs)
    assert all("ours_weight_gbs" in r for r in rows if r["layer"].startswith("fc"))


def test_host_steal_and_probe():
    now = bench.host_steal()
    if now is not None:   # Linux: (steal, all) ticks, steal part of all
        steal, total = now
        assert 0 <= steal <= total and total > 0
        later = (steal + 1, total + 10)
        assert bench.steal_percent(now, later) == pytest.approx(10.0)
    assert bench.steal_percent(None, now) is None
    assert bench.steal_percent((5, 100), (5, 100)) is None   # no time passed
    assert bench.measure_fma_once(1) > 0


def test_winograd_layers_and_performed_flops():
    """The benchmark names the layers that take Winograd and counts the
    multiply-adds they really perform: 16 per 2x2 tile, channel pair and 3x3
    block (torchvision conv2 at 27x27: 196 tiles, 4 blocks; conv3: 49 tiles)."""
    with winograd("off"):
        assert bench.winograd_layers("torchvision", 224, 64) == []
        assert bench.performed_macs("torchvision", 224, 64) == bench.model_macs("torchvision", 224)[0]
    with winograd("on"):
        assert bench.winograd_layers("torchvision", 224, 1) == ["conv2", "conv3", "conv4", "conv5"]
        nominal = bench.model_macs("torchvision", 224)[0]
        saved = (192 * 64 * 25 * 27 * 27 - 16 * 192 * 64 * 4 * 196
                 + sum(oc * c * (9 * 169 - 16 * 49) for oc, c in [(384, 192), (256, 384), (256, 256)]))
        assert bench.performed_macs("torchvision", 224, 1) == nominal - saved
    with winograd("auto"):
        assert bench.winograd_layers("torchvision", 224, 1) == []      # too few tiles to share
        assert bench.winograd_layers("original", 227, 64) == ["conv2", "conv3", "conv4", "conv5"]
