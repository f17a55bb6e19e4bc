"""alexnet_c.weights against torch: every format torch users meet, read exactly as
torch.load reads it; our own files read back by us and by torch."""
from __future__ import annotations

import os
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ckpt  # noqa: E402
from _subproc import run_python  # noqa: E402

from alexnet_c._errors import WeightsError  # noqa: E402
from alexnet_c.weights import read_state_dict, write_state_dict  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WEIGHTS_PY = REPO / "alexnet_c" / "weights.py"


def torch_load(path, weights_only=True):
    return torch.load(str(path), weights_only=weights_only, map_location="cpu")


def check_against_torch(path, sd=None, *, trusted=False):
    """read_state_dict equals torch.load (after float32 conversion), and the source
    state dict when given. torch's weights_only loader lacks some protocol-4
    opcodes; for such files, all made by the test itself, `trusted` loads fully."""
    got = read_state_dict(path)
    _ckpt.assert_same_arrays(got, _ckpt.expected_arrays(torch_load(path, not trusted)))
    if sd is not None:
        _ckpt.assert_same_arrays(got, _ckpt.expected_arrays(sd))
    for v in got.values():
        assert v.flags.c_contiguous and v.flags.writeable
    return got


# --------------------------------------------------------------------------
# Both AlexNet layouts, full size
# --------------------------------------------------------------------------

LAYOUTS = [("torchvision", 1000), ("original", 100)]


@pytest.fixture(scope="module", params=LAYOUTS, ids=[v for v, _ in LAYOUTS])
def alexnet_files(request, tmp_path_factory):
    variant, num_classes = request.param
    d = tmp_path_factory.mktemp(f"alexnet_{variant}")
    sd = _ckpt.alexnet_state_dict(variant, num_classes, seed=1)
    files = {
        "zip": d / f"{variant}.pth",             # torch names the zip folder after the stem
        "legacy": d / f"{variant}_legacy.pth",
        "safetensors": d / f"{variant}.safetensors",
        "npz": d / f"{variant}.npz",
    }
    _ckpt.torch_save(sd, files["zip"])
    _ckpt.torch_save(sd, files["legacy"], legacy=True)
    _ckpt.safetensors_save(sd, files["safetensors"])
    np.savez(files["npz"], **_ckpt.expected_arrays(sd))
    yield variant, num_classes, sd, files
    shutil.rmtree(d, ignore_errors=True)    # ~1 GB per layout


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors", "npz"])
def test_alexnet_formats(alexnet_files, fmt, capsys):
    variant, num_classes, sd, files = alexnet_files
    if fmt in ("zip", "legacy"):
        got = check_against_torch(files[fmt], sd)
    else:
        got = read_state_dict(files[fmt])
        want = _ckpt.expected_arrays(sd)
        assert sorted(got) == sorted(want)       # these formats do not keep the order
        _ckpt.assert_same_arrays({k: got[k] for k in want}, want)
    head = "classifier.6" if variant == "torchvision" else "classifier.4"
    assert got[f"{head}.weight"].shape == (num_classes, 4096)
    assert all(v.dtype == np.float32 for v in got.values())
    if fmt == "zip" and variant == "torchvision":      # the 233 MB file
        print_load_times(files[fmt], capsys)


def test_alexnet_round_trips(alexnet_files, tmp_path):
    _, _, sd, _ = alexnet_files
    arrays = _ckpt.expected_arrays(sd)
    for suffix in (".pth", ".safetensors", ".npz"):
        p = tmp_path / f"ours{suffix}"
        write_state_dict(arrays, p)
        got = read_state_dict(p)
        _ckpt.assert_same_arrays({k: got[k] for k in arrays}, arrays)
        if suffix == ".pth":
            _ckpt.assert_same_arrays(_ckpt.expected_arrays(torch_load(p)), arrays)
        p.unlink()


def print_load_times(path, capsys):
    """Our load time next to torch.load's (best of 3 each, alternating). Printed
    even under -q; never asserted on: timings on shared machines are noise."""
    ours, theirs = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        torch_load(path)
        theirs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        read_state_dict(path)
        ours.append(time.perf_counter() - t0)
    mb = os.path.getsize(path) / 1e6
    with capsys.disabled():
        print(f"\n[load time] {mb:.0f} MB torchvision AlexNet: read_state_dict {min(ours):.3f} s, "
              f"torch.load(weights_only=True) {min(theirs):.3f} s, "
              f"ratio {min(ours) / min(theirs):.2f}")


# --------------------------------------------------------------------------
# Small odd state dicts in every torch format
# --------------------------------------------------------------------------

def _save_variants(sd, d: Path):
    """(label, path) for each way a torch user may have saved sd."""
    out = []
    p = d / "archive_default.pth"
    _ckpt.torch_save(sd, p)
    out.append(("zip", p))
    p = d / "weights-v2.final.pt"                     # prefix 'weights-v2.final'
    _ckpt.torch_save(sd, p)
    out.append(("zip stem prefix", p))
    p = d / "rewritten.pth"
    _ckpt.rewrite_zip_prefix(out[0][1], p, "something_else")
    out.append(("zip rewritten prefix", p))
    p = d / "proto4.pth"
    _ckpt.torch_save(sd, p, protocol=4)               # FRAME, STACK_GLOBAL, MEMOIZE
    out.append(("zip protocol 4", p))
    p = d / "legacy.pth"
    _ckpt.torch_save(sd, p, legacy=True)
    out.append(("legacy", p))
    p = d / "legacy4.pt"
    _ckpt.torch_save(sd, p, legacy=True, protocol=4)
    out.append(("legacy protocol 4", p))
    return out


SMALL = {
    "odd views": lambda: _ckpt.odd_state_dict(),
    "float16": lambda: _ckpt.dtype_state_dict(torch.float16),
    "bfloat16": lambda: _ckpt.dtype_state_dict(torch.bfloat16),
    "float64": lambda: _ckpt.dtype_state_dict(torch.float64),
}


@pytest.mark.parametrize("which", list(SMALL))
def test_small_torch_formats(which, tmp_path):
    sd = SMALL[which]()
    for label, path in _save_variants(sd, tmp_path):
        try:
            check_against_torch(path, sd, trusted="protocol 4" in label)
        except AssertionError as e:
            raise AssertionError(f"{label}: {e}") from e


def test_zip_prefix_really_differs(tmp_path):
    p = tmp_path / "weights-v2.final.pt"
    _ckpt.torch_save(_ckpt.odd_state_dict(), p)
    assert {n.split("/")[0] for n, _ in _ckpt.zip_members(p)} == {"weights-v2.final"}


def test_views_share_one_storage_but_not_memory(tmp_path):
    p = tmp_path / "v.pth"
    sd = _ckpt.odd_state_dict()
    _ckpt.torch_save(sd, p)
    # t and its views a, b, c, d share one storage; five more tensors have their own
    assert sum(n.split("/")[-2] == "data" for n, _ in _ckpt.zip_members(p)) == 6
    got = read_state_dict(p)
    got["d"][:] = 0          # the arrays must not alias each other
    assert np.array_equal(got["a"], sd["a"].numpy())
    assert np.array_equal(got["b"], sd["b"].numpy())


def test_special_float_values_survive(tmp_path):
    t = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, 3.4e38])
    sd = {"x": t, "h": t.half(), "bf": t.bfloat16(), "d": t.double(),
          "big": torch.tensor([1e300, -1e300], dtype=torch.float64)}
    for legacy in (False, True):
        p = tmp_path / f"s{legacy}.pth"
        _ckpt.torch_save(sd, p, legacy=legacy)
        check_against_torch(p)
    assert np.isinf(read_state_dict(p)["big"]).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64", "float32"])
def test_safetensors_dtypes(dtype, tmp_path):
    sd = _ckpt.dtype_state_dict(getattr(torch, dtype))
    sd["scalar"] = torch.tensor(1.5).to(getattr(torch, dtype))
    sd["empty"] = torch.zeros(0, 2).to(getattr(torch, dtype))
    sd["flags"] = torch.tensor([True, False])
    sd["ints"] = torch.arange(4, dtype=torch.int32)
    p = tmp_path / "t.safetensors"
    _ckpt.safetensors_save(sd, p)
    got = read_state_dict(p)
    want = _ckpt.expected_arrays(sd)
    _ckpt.assert_same_arrays({k: got[k] for k in want}, want)


def test_npz(tmp_path):
    arrays = _ckpt.expected_arrays(_ckpt.odd_state_dict())
    arrays["f64"] = np.arange(6, dtype=np.float64).reshape(2, 3)
    arrays["f16"] = np.arange(3, dtype=np.float16)
    arrays["be"] = np.arange(3, dtype=">f4")
    for save in (np.savez, np.savez_compressed):
        p = tmp_path / f"{save.__name__}.npz"
        save(p, **arrays)
        got = read_state_dict(p)
        want = dict(arrays, f64=arrays["f64"].astype(np.float32),
                    f16=arrays["f16"].astype(np.float32), be=arrays["be"].astype(np.float32))
        _ckpt.assert_same_arrays({k: got[k] for k in want}, want)


def test_npz_fortran_order_comes_back_c_contiguous(tmp_path):
    arrays = {"f32": np.arange(6, dtype=np.float32).reshape(2, 3),
              "f64": np.arange(12, dtype=np.float64).reshape(3, 4),
              "i32": np.arange(6, dtype=np.int32).reshape(3, 2),
              "be": np.arange(6, dtype=">f4").reshape(2, 3)}
    p = tmp_path / "f.npz"
    np.savez(p, **{k: np.asfortranarray(v) for k, v in arrays.items()})
    got = read_state_dict(p)
    for k, v in arrays.items():
        assert got[k].flags.c_contiguous and got[k].flags.writeable, k
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == (np.float32 if v.dtype.kind == "f" else v.dtype), k


def test_format_is_detected_by_content_not_suffix(tmp_path):
    sd = _ckpt.dtype_state_dict(torch.float32)
    want = _ckpt.expected_arrays(sd)
    makers = {
        "zip": lambda p: _ckpt.torch_save(sd, p),
        "legacy": lambda p: _ckpt.torch_save(sd, p, legacy=True),
        "safetensors": lambda p: _ckpt.safetensors_save(sd, p),
        "npz": lambda p: np.savez(open(p, "wb"), **want),
    }
    for name, make in makers.items():
        p = tmp_path / f"{name}.bin"
        make(p)
        got = read_state_dict(p)
        _ckpt.assert_same_arrays({k: got[k] for k in want}, want)


def test_training_checkpoint_wrappers(tmp_path):
    sd = _ckpt.dtype_state_dict(torch.float32)
    want = _ckpt.expected_arrays(sd)
    opt = {"state": {0: {"step": 3, "exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]}
    for wrapper in ({"state_dict": sd, "epoch": 7, "optimizer": opt, "best": 0.5},
                    {"model": sd, "args": ["x", None, True]}):
        p = tmp_path / "ckpt.pth"
        _ckpt.torch_save(wrapper, p)
        _ckpt.assert_same_arrays(read_state_dict(p), want)
    _ckpt.torch_save({"model": sd, "state_dict": sd}, p)
    with pytest.raises(WeightsError, match="several candidates"):
        read_state_dict(p)
    _ckpt.torch_save({"weights": sd, "epoch": 1}, p)
    with pytest.raises(WeightsError, match="expected a state dict"):
        read_state_dict(p)
    _ckpt.torch_save([sd["w"]], p)
    with pytest.raises(WeightsError, match="expected a state dict"):
        read_state_dict(p)


# Values torch.load(weights_only=True) accepts in a training checkpoint besides tensors.
METADATA = {
    "bytes": lambda: b"xy\x00\xff",          # protocol 2: _codecs.encode('xy...', 'latin1')
    "set": lambda: {1, "a", b"z", 2.5},
    "empty set": set,
    "complex": lambda: 1 + 2j,
    "bytearray": lambda: bytearray(b"ab\x00"),
    "torch.Size": lambda: torch.Size([2, 3]),
    "torch.device cuda:0": lambda: torch.device("cuda", 0),
    "torch.device cpu": lambda: torch.device("cpu"),
}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("kind", list(METADATA))
def test_training_checkpoint_metadata(kind, protocol, legacy, tmp_path):
    sd = _ckpt.dtype_state_dict(torch.float32)
    value = METADATA[kind]()
    ckpt = {"state_dict": sd, "epoch": 3, "extra": value,
            "nested": {"in a list": [value, value], "in a dict": {"k": value}}}
    p = tmp_path / "train.pth"
    _ckpt.torch_save(ckpt, p, legacy=legacy, protocol=protocol)
    want = _ckpt.expected_arrays(sd)
    _ckpt.assert_same_arrays(read_state_dict(p), want)
    # torch's weights_only loader reads the same file (it lacks protocol 4's opcodes).
    loaded = torch_load(p, weights_only=protocol == 2)
    assert loaded["extra"] == value
    _ckpt.assert_same_arrays(_ckpt.expected_arrays(loaded["state_dict"]), want)


def test_training_checkpoint_metadata_protocol_5_bytearray(tmp_path):
    sd = _ckpt.dtype_state_dict(torch.float32)
    p = tmp_path / "train5.pth"
    _ckpt.torch_save({"model": sd, "buf": bytearray(b"abc")}, p, protocol=5)
    assert b"\x96" in dict(_ckpt.zip_members(p))[f"{p.stem}/data.pkl"]     # BYTEARRAY8
    _ckpt.assert_same_arrays(read_state_dict(p), _ckpt.expected_arrays(sd))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_frozenset_metadata_is_refused_as_torch_does(protocol, legacy, tmp_path):
    p = tmp_path / "fs.pth"
    _ckpt.torch_save({"state_dict": _ckpt.dtype_state_dict(torch.float32), "tags": frozenset({1})},
                     p, legacy=legacy, protocol=protocol)
    with pytest.raises(WeightsError, match="frozenset value is not supported"):
        read_state_dict(p)
    if protocol == 2:
        with pytest.raises(Exception, match="frozenset"):
            torch_load(p)


def test_ac_load_of_a_training_checkpoint_with_metadata(alexnet_files, tmp_path):
    import alexnet_c as ac

    variant, num_classes, sd, _ = alexnet_files
    p = tmp_path / "train.pth"
    torch.save({"state_dict": sd, "epoch": 90, "meta": [make() for make in METADATA.values()]}, p)
    model = ac.load(p)
    got = model.state_dict()
    want = _ckpt.expected_arrays(sd)
    _ckpt.assert_same_arrays({k: np.asarray(got[k]) for k in want}, want)
    p.unlink()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_archive_is_named(tmp_path):
    p = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(p))
    names = [n for n, _ in _ckpt.zip_members(p)]
    assert any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names)
    with pytest.raises(WeightsError,
                       match=r"TorchScript archive .*not supported.*torch\.jit\.load.*state_dict\(\)"):
        read_state_dict(p)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2"])
def test_float8_dtype_is_named_unsupported(dtype, legacy, tmp_path):
    p = tmp_path / "f8.pth"
    _ckpt.torch_save({"w": torch.zeros(3, dtype=getattr(torch, dtype))}, p, legacy=legacy)
    with pytest.raises(WeightsError,
                       match=rf"tensor dtype torch\.{dtype} is not supported: expected one of .*float32"):
        read_state_dict(p)


def test_rebuild_v3_dtypes_and_parameter_with_state(tmp_path):
    """Newer dtypes travel as UntypedStorage + _rebuild_tensor_v3; a Parameter
    with Python attributes as _rebuild_parameter_with_state."""
    param = torch.nn.Parameter(torch.arange(4.0))
    param.note = "kept out"
    sd = {"u16": torch.tensor([1, 2, 65535], dtype=torch.uint16),
          "u32": torch.tensor([[7, 2**32 - 1]], dtype=torch.uint32), "p": param}
    p = tmp_path / "v3.pth"
    torch.save(sd, p)
    raw = dict(_ckpt.zip_members(p))[f"{p.stem}/data.pkl"]
    assert b"_rebuild_tensor_v3" in raw and b"_rebuild_parameter_with_state" in raw
    got = check_against_torch(p, sd)
    assert got["u16"].dtype == np.uint16 and got["u32"].dtype == np.uint32


def test_empty_state_dict(tmp_path):
    for legacy in (False, True):
        p = tmp_path / f"e{legacy}.pth"
        _ckpt.torch_save({}, p, legacy=legacy)
        assert read_state_dict(p) == {}
    for suffix in (".pth", ".safetensors", ".npz"):
        p = tmp_path / f"ours{suffix}"
        write_state_dict({}, p)
        assert read_state_dict(p) == {}, suffix
    p = tmp_path / "numpy.npz"
    np.savez(p)
    assert read_state_dict(p) == {}


def test_model_state_dict_metadata_is_ignored(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    p = tmp_path / "bn.pth"
    torch.save(model.state_dict(), p)        # has ._metadata and an int64 buffer
    got = check_against_torch(p, model.state_dict())
    assert got["1.num_batches_tracked"].dtype == np.int64


def test_big_endian_zip(tmp_path):
    """A checkpoint written on a big-endian machine: byteorder 'big', swapped data."""
    vals = np.array([1.5, -2.0, 3.25], dtype=">f4")
    pkl = _ckpt.tensor_pickle([dict(name="x", numel=3, size=(3,), stride=(1,))])
    p = tmp_path / "be.pth"
    _ckpt.write_zip(p, [("archive/data.pkl", pkl), ("archive/byteorder", b"big"),
                        ("archive/data/0", vals.tobytes()), ("archive/version", b"3\n")])
    got = read_state_dict(p)
    assert got["x"].dtype == np.float32 and got["x"].dtype.isnative
    np.testing.assert_array_equal(got["x"], [1.5, -2.0, 3.25])


# --------------------------------------------------------------------------
# write_state_dict
# --------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors", ".npz", ".PTH"])
def test_write_round_trip(suffix, tmp_path):
    arrays = {
        "w": np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2],     # non-contiguous, float64
        "b": np.array([1, 2, 3], dtype=np.int32),
        "s": np.float32(4.5),
        "e": np.zeros((0, 3), np.float32),
        "file": np.ones(2, np.float16),            # np.savez(file=...) would clash
        "allow_pickle": np.full((2, 2), np.nan, np.float32),
        "t": torch.nn.Parameter(torch.arange(6.0).reshape(2, 3)),   # torch tensors too
        "ünïcode.key": np.array([[1.0]], dtype=">f4"),
    }
    before = {k: v.detach().numpy().copy() if hasattr(v, "detach") else np.array(v, copy=True)
              for k, v in arrays.items()}
    p = tmp_path / f"out{suffix}"
    write_state_dict(arrays, p)
    for k, v in arrays.items():          # inputs untouched
        now = v.detach().numpy() if hasattr(v, "detach") else np.asarray(v)
        assert np.array_equal(now, before[k], equal_nan=True)
    want = {k: np.asarray(v, dtype=np.float32) for k, v in before.items()}
    got = read_state_dict(p)
    assert sorted(got) == sorted(want)
    _ckpt.assert_same_arrays({k: got[k] for k in want}, want)
    if suffix.lower() in (".pth", ".pt"):
        _ckpt.assert_same_arrays(got, want)                       # order kept
        _ckpt.assert_same_arrays(_ckpt.expected_arrays(torch_load(p)), want)
        mm = torch.load(str(p), weights_only=True, mmap=True)
        _ckpt.assert_same_arrays(_ckpt.expected_arrays(mm), want)
    assert [f.name for f in tmp_path.iterdir()] == [p.name]        # no temp files left


def test_written_pth_layout(tmp_path):
    p = tmp_path / "x.pth"
    write_state_dict({"a": np.ones((2, 3), np.float32), "b": np.zeros(5, np.float32)}, p)
    import zipfile

    with zipfile.ZipFile(p) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names[0] == "archive/data.pkl"
        assert {"archive/byteorder", "archive/version", "archive/data/0", "archive/data/1"} <= set(names)
        assert zf.read("archive/byteorder") == b"little"
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
    raw = p.read_bytes()
    for i in infos:      # storages start 64-byte aligned, as torch's own writer does
        if "/data/" in i.filename:
            n, e = np.frombuffer(raw[i.header_offset + 26:i.header_offset + 30], "<u2")
            assert (i.header_offset + 30 + n + e) % 64 == 0


def test_written_pth_alignment_where_zipfile_adds_zip64(tmp_path, monkeypatch):
    """zipfile gives a member a 20-byte zip64 extra field once its size * 1.05 passes
    ZIP64_LIMIT; with the limit lowered, small members fall in that window."""
    import zipfile

    limit = 4000
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", limit)
    sizes = [int(limit / 1.05) // 4 + 1, limit // 4, limit // 4 + 1, 8]   # float32 elements
    assert all(n * 4 * 1.05 > limit for n in sizes[:3])
    arrays = {f"t{i}": np.arange(n, dtype=np.float32) for i, n in enumerate(sizes)}
    p = tmp_path / "z.pth"
    write_state_dict(arrays, p)
    monkeypatch.undo()
    raw = p.read_bytes()
    with zipfile.ZipFile(p) as zf:
        infos = [i for i in zf.infolist() if "/data/" in i.filename]
    assert len(infos) == len(sizes)
    for i in infos:
        n, e = np.frombuffer(raw[i.header_offset + 26:i.header_offset + 30], "<u2")
        assert (i.header_offset + 30 + n + e) % 64 == 0, (i.filename, i.file_size)
    _ckpt.assert_same_arrays(read_state_dict(p), arrays)
    _ckpt.assert_same_arrays(_ckpt.expected_arrays(torch_load(p)), arrays)


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"\.pth.*\.safetensors.*\.npz"):
        write_state_dict({"a": np.ones(2)}, tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="keys must be str"):
        write_state_dict({1: np.ones(2)}, tmp_path / "x.pth")
    with pytest.raises(TypeError, match="numeric"):
        write_state_dict({"a": np.array(["x"])}, tmp_path / "x.npz")
    with pytest.raises(TypeError):
        write_state_dict([("a", np.ones(2))], tmp_path / "x.pth")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".npz"])
def test_written_file_mode_follows_the_umask(suffix, tmp_path):
    # 0666 less the umask, as open() makes files, in every format (safetensors itself
    # writes 0600, which a Dask worker running as another user could not read).
    old = os.umask(0o022)
    try:
        write_state_dict({"a": np.ones(2)}, tmp_path / f"x{suffix}")
        os.umask(0o077)
        write_state_dict({"a": np.ones(2)}, tmp_path / f"private{suffix}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / f"x{suffix}").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / f"private{suffix}").st_mode) == 0o600


def test_write_into_a_missing_folder_names_the_given_path(tmp_path):
    target = tmp_path / "no such folder" / "x.npz"
    with pytest.raises(FileNotFoundError) as info:
        write_state_dict({"a": np.ones(2)}, target)
    assert info.value.filename == str(target) and ".tmp" not in str(info.value)


def test_write_replaces_existing_file(tmp_path):
    p = tmp_path / "x.safetensors"
    write_state_dict({"a": np.ones(2)}, p)
    write_state_dict({"b": np.zeros(3)}, p)
    assert list(read_state_dict(p)) == ["b"]


# --------------------------------------------------------------------------
# Errors and hygiene
# --------------------------------------------------------------------------

def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "nope.pth")


def test_unrecognised_content(tmp_path):
    cases = {"empty.pth": b"", "text.pth": b"hello world, not weights",
             "one.npy": b"\x93NUMPY\x01\x00" + b"x" * 20}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError):
            read_state_dict(tmp_path / name)
    with pytest.raises(WeightsError, match="single .npy"):
        np.save(tmp_path / "arr.npy", np.ones(3))
        read_state_dict(tmp_path / "arr.npy")
    assert issubclass(WeightsError, ValueError)


def test_reader_does_not_import_torch(tmp_path):
    p = tmp_path / "x.pth"
    _ckpt.torch_save(_ckpt.odd_state_dict(), p)
    legacy = tmp_path / "l.pth"
    _ckpt.torch_save(_ckpt.odd_state_dict(), legacy, legacy=True)
    code = ("import sys; from alexnet_c.weights import read_state_dict as r; "
            f"r({str(p)!r}); r({str(legacy)!r}); "
            "assert 'torch' not in sys.modules")
    res = run_python(["-c", code])
    assert res.returncode == 0, res.stderr[-2000:]


def test_source_has_no_pickle_or_torch():
    src = WEIGHTS_PY.read_text()
    for needle in ("import torch", "import pickle", "allow_pickle=True", "find_class", "pickle.load"):
        assert needle not in src, needle
