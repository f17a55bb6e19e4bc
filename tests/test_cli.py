"""The alexnet-c command line, run as a user runs it: in a child process."""
import json
import os
import shutil

import numpy as np
import pytest

import alexnet_c as ac
from _subproc import child_env, run_python

CLI = ["-m", "alexnet_c"]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    ac.AlexNet(num_classes=1000, seed=0).save(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.mark.parametrize("cmd", [[], ["summary"], ["predict"], ["check"], ["convert"]])
def test_help(cmd):
    res = run_python(CLI + cmd + ["--help"])
    assert res.returncode == 0, res.stderr
    assert "usage: alexnet-c" in res.stdout


def test_bench_help_is_forwarded():
    res = run_python(CLI + ["bench", "--help"])
    assert res.returncode == 0, res.stderr
    assert "usage" in res.stdout.lower()


def test_console_script_installed():
    exe = shutil.which("alexnet-c", path=os.environ.get("PATH"))
    if exe is None and os.environ.get("CI") != "true":
        pytest.skip("alexnet-c is on PATH only after `pip install .` (CI installs it)")
    assert exe is not None
    import subprocess
    res = subprocess.run([exe, "summary"], capture_output=True, text=True, env=child_env(), timeout=120)
    assert res.returncode == 0 and "Conv2d-1" in res.stdout


def test_summary_matches_summary_string():
    res = run_python(CLI + ["summary", "--variant", "original"])
    assert res.returncode == 0, res.stderr
    text, (total, _) = ac.summary_string(_layout("original"), (3, 227, 227))
    assert res.stdout.strip("\n") == text.strip("\n")
    assert "62,378,344" in res.stdout


def _layout(variant, num_classes=1000):
    from types import SimpleNamespace
    return SimpleNamespace(variant=variant, num_classes=num_classes, device="cpu")


@pytest.mark.parametrize("args,needle", [
    (["summary", "--input", "3,x,224"], "expected C,H,W"),
    (["summary", "--input", "3,40,40"], "63"),
    (["summary", "--variant", "vgg"], "invalid choice"),
    (["predict", "missing.jpg", "--weights", "random"], "image not found"),
    (["predict", "x.jpg", "--weights", "missing.pth"], "not found"),
    (["predict", "x.jpg", "--topk", "0"], "positive integer"),
    (["predict", "x.jpg", "--precision", "fp16"], "invalid choice"),
    (["convert", "missing.pth", "out.npz"], "not found"),
    # the output's suffix is checked before the input is read (a garbage input here)
    (["convert", "garbage.pth", "out.txt"], "cannot tell the format from 'out.txt'"),
    (["nonsense"], "invalid choice"),
])
def test_bad_arguments_give_one_line_and_status_2(tmp_path, args, needle):
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    res = run_python(CLI + args, cwd=str(tmp_path))
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("args,needle", [
    (["predict", "IMG", "--weights", "random", "--device", "cuda"], "--device cuda: CUDA is not available: "),
    (["check", "--device", "cuda"], "--device cuda: CUDA is not available: "),
    (["predict", "IMG", "--weights", "random", "--precision", "tf32"], "--precision tf32 needs --device cuda"),
    (["check", "--precision", "tf32"], "--precision tf32 needs --device cuda"),
    (["predict", "IMG", "--out", "x.parquet", "--device", "cuda"], "--device and --precision do not apply"),
])
def test_device_and_precision_refusals(images, args, needle):
    # CUDA_VISIBLE_DEVICES="" hides every GPU (and the emulator's), so this holds on every build.
    args = [str(images / "img0.png") if a == "IMG" else a for a in args]
    res = run_python(CLI + args, env=child_env(CUDA_VISIBLE_DEVICES=""))
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_predict_json_lines(weights_file, images):
    res = run_python(CLI + ["predict", str(images), "--weights", str(weights_file), "--topk", "3", "--json"])
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [os.path.basename(r["path"]) for r in rows] == ["broken.jpg", "img0.png", "img1.png", "img2.png"]
    assert "error" in rows[0] and res.returncode == 1   # one unreadable image: reported, status 1
    model = ac.load(weights_file)
    expected = model.predict(str(images / "img1.png"), topk=3)
    got = rows[2]["predictions"]
    assert [p["category"] for p in got] == [c for c, _ in expected]
    np.testing.assert_allclose([p["probability"] for p in got], [p for _, p in expected], rtol=1e-5)


def test_predict_json_is_strict_json_with_nan_logits(tmp_path, images):
    sd = dict(ac.AlexNet(num_classes=1000, seed=0).state_dict())
    sd["classifier.6.bias"] = np.full(1000, np.nan, np.float32)
    path = tmp_path / "nan.safetensors"
    ac.AlexNet.from_state_dict(sd).save(path)
    res = run_python(CLI + ["predict", str(images / "img0.png"), "--weights", str(path), "--topk", "2", "--json"])
    assert res.returncode == 0, res.stderr

    def refuse(name):
        raise AssertionError(f"not strict JSON: {name}")
    row = json.loads(res.stdout, parse_constant=refuse)
    assert [p["probability"] for p in row["predictions"]] == [None, None]


def test_predict_into_a_closed_pipe_stops_quietly(weights_file, images):
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, *CLI, "predict", str(images), "--weights", str(weights_file), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), cwd=str(images))
    proc.stdout.close()   # the reader is gone before the first line, as `| head -0` would leave it
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 141 and err == b""


def test_predict_text_output(weights_file, images):
    res = run_python(CLI + ["predict", str(images / "img0.png"), "--weights", str(weights_file), "--topk", "2"])
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].endswith("img0.png:") and len(lines) == 3 and "%" in lines[1]


@pytest.mark.parametrize("suffix", [".pth", ".npz", ".safetensors"])
def test_convert_roundtrip(tmp_path, weights_file, suffix):
    out = tmp_path / f"converted{suffix}"
    res = run_python(CLI + ["convert", str(weights_file), str(out)])
    assert res.returncode == 0, res.stderr
    a, b = ac.load(weights_file).state_dict(), ac.load(out).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_predict_refuses_an_empty_folder_or_glob(tmp_path):
    # Refused before the weights are read (the file named here does not exist).
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no image here")
    for src, needle in [("empty", "no images in folder empty"), ("notes", "no images in folder notes"),
                        ("nothing/*.jpg", "no file matches nothing/*.jpg")]:
        res = run_python(CLI + ["predict", src, "--weights", "missing.pth"], cwd=str(tmp_path))
        assert res.returncode == 2, res.stdout + res.stderr
        assert needle in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_check_original_takes_its_sizes():
    res = run_python(CLI + ["check", "--variant", "original", "--batch", "1", "--size", "240"], timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "input (1, 3, 240, 240)" in res.stdout and "PASS" in res.stdout
    res = run_python(CLI + ["check", "--variant", "original", "--size", "300"], timeout=600)
    assert res.returncode == 2 and "any H and W from 227 to 258" in res.stderr, res.stdout + res.stderr


def test_check_passes():
    res = run_python(CLI + ["check", "--batch", "1", "--size", "96"], timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS" in res.stdout and "max |ours - torch float64|" in res.stdout
    assert "(limit 0.0001)" in res.stdout and "ISA " in res.stdout


def test_check_fails_on_wrong_results(tmp_path):
    # The same command with conv1's bias nudged inside alexnet_c only: check must say FAIL.
    hook = tmp_path / "sitecustomize.py"
    hook.write_text(
        "import alexnet_c as ac\n"
        "_load = ac.load\n"
        "def load(path, **kw):\n"
        "    sd = ac.load.__wrapped__(path).state_dict()\n"
        "    sd['features.0.bias'] = sd['features.0.bias'] + 0.5\n"
        "    return ac.AlexNet.from_state_dict(sd, **kw)\n"
        "load.__wrapped__ = _load\n"
        "ac.load = load\n")
    env = child_env()
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
    res = run_python(CLI + ["check", "--batch", "1", "--size", "96"], env=env, timeout=600)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAIL" in res.stdout
