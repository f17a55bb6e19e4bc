"""The benchmark's per-stage table lines up with AlexNet.profile, stage for stage; its
results file never goes into an installed package; benchmarks/bench_cpu.py runs on
whichever alexnet_c is built."""
import json
import os

import numpy as np
import pytest

import alexnet_c as ac
from alexnet_c import bench
from _isa import winograd
from _subproc import run_python

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


def _fake_checkout(root):
    (root / "benchmarks").mkdir(parents=True)
    (root / "benchmarks" / "bench_cpu.py").write_text("")
    (root / "alexnet_c").mkdir()
    (root / "alexnet_c" / "bench.py").write_text("")
    return root


def test_default_json_is_never_inside_an_installed_package(tmp_path, monkeypatch):
    installed = tmp_path / "site-packages" / "alexnet_c"
    installed.mkdir(parents=True)
    monkeypatch.setattr(bench, "__file__", str(installed / "bench.py"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert bench._default_json() == str(tmp_path / "cache" / "alexnet_c" / "cpu_latest.json")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert bench._default_json() == str(tmp_path / "home" / ".cache" / "alexnet_c" / "cpu_latest.json")
    # run from inside a checkout: that checkout's results folder, as README says
    checkout = _fake_checkout(tmp_path / "checkout")
    monkeypatch.chdir(checkout)
    assert bench._default_json() == str(checkout / "benchmarks" / "results" / "cpu_latest.json")


def test_default_json_of_an_in_place_build_is_its_checkout(tmp_path, monkeypatch):
    checkout = _fake_checkout(tmp_path / "checkout")
    monkeypatch.setattr(bench, "__file__", str(checkout / "alexnet_c" / "bench.py"))
    monkeypatch.chdir(tmp_path)
    assert bench._default_json() == str(checkout / "benchmarks" / "results" / "cpu_latest.json")


def test_bench_cpu_script_runs_with_whichever_alexnet_c_is_built(tmp_path):
    # After `pip install .` the checkout's alexnet_c/ has no _C: the script must then use
    # the installed package (it used to put the checkout first, and failed to import).
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "bench_cpu.py")
    out = tmp_path / "r.json"
    res = run_python([script, "--variants", "torchvision", "--batches", "1", "--reps", "1", "--no-layers",
                      "--no-lightness", "--json", str(out)], timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert [(r["variant"], r["batch"]) for r in data["networks"]] == [("torchvision", 1)]
