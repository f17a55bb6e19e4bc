"""Hostile and corrupted weights files (issue 5 item 1): each is refused with a
WeightsError, nothing in it runs, nothing else escapes."""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ckpt  # noqa: E402

from alexnet_c._errors import WeightsError  # noqa: E402
from alexnet_c.weights import read_state_dict  # noqa: E402


class RunsShell:
    """Pickles to `os.system(command)`: what a malicious checkpoint carries."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture
def sentinel(tmp_path):
    """A file the payloads would create; it must still be absent afterwards."""
    path = tmp_path / "SENTINEL"
    yield path
    assert not path.exists(), "a payload in a weights file ran"


def refused(path, match=None):
    with pytest.raises(WeightsError, match=match) as info:
        read_state_dict(path)
    return str(info.value)


def zip_with_pickle(path, data_pkl: bytes, storages=None, **kw):
    _ckpt.make_torch_zip(path, data_pkl, storages or {}, **kw)
    return path


def legacy_with_pickle(path, main: bytes, storages=()):
    Path(path).write_bytes(_ckpt.legacy_bytes(main, storages))
    return path


# One float tensor "w" of 6 elements (2x3) in storage "0"; fields may be overridden.
def one_tensor(**override):
    e = dict(name="w", numel=6, size=(2, 3), stride=(3, 1))
    e.update(override)
    return e


SIX_FLOATS = _ckpt.float_bytes(range(6))


def valid_zip_sanity(tmp_path):
    p = zip_with_pickle(tmp_path / "ok.pth", _ckpt.tensor_pickle([one_tensor()]), {"0": SIX_FLOATS})
    np.testing.assert_array_equal(read_state_dict(p)["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_hand_built_files_are_valid(tmp_path):
    """The builders below make loadable files when nothing is wrong with them,
    so each refusal is caused by the one thing a test changes."""
    valid_zip_sanity(tmp_path)
    p = legacy_with_pickle(tmp_path / "ok_legacy.pth", _ckpt.tensor_pickle([one_tensor()], legacy=True),
                           [("0", 6, SIX_FLOATS)])
    np.testing.assert_array_equal(read_state_dict(p)["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert torch.load(p, weights_only=True)["w"].shape == (2, 3)
    p = tmp_path / "ok.safetensors"
    p.write_bytes(_ckpt.safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, _ckpt.float_bytes([1, 2])))
    np.testing.assert_array_equal(read_state_dict(p)["a"], [1, 2])


# --------------------------------------------------------------------------
# Code execution attempts
# --------------------------------------------------------------------------

def test_the_payload_is_real(tmp_path):
    """Control: an ordinary unpickler does run it (so the refusals below matter)."""
    target = tmp_path / "control"
    pickle.loads(pickle.dumps(RunsShell(f"touch '{target}'"), protocol=2))
    assert target.exists()


@pytest.mark.parametrize("where", ["top", "inside state dict"])
def test_reduce_payload_in_zip(tmp_path, sentinel, where):
    evil = RunsShell(f"touch '{sentinel}'")
    obj = evil if where == "top" else collections.OrderedDict(w=evil)
    p = zip_with_pickle(tmp_path / "evil.pth", pickle.dumps(obj, protocol=2))
    msg = refused(p)
    assert "posix.system" in msg or "nt.system" in msg


def test_reduce_payload_in_legacy_file(tmp_path, sentinel):
    evil = collections.OrderedDict(w=RunsShell(f"touch '{sentinel}'"))
    p = legacy_with_pickle(tmp_path / "evil_legacy.pth", pickle.dumps(evil, protocol=2))
    assert "system" in refused(p)


def test_payload_in_magic_number_pickle(tmp_path, sentinel):
    p = tmp_path / "evil_magic.pth"
    p.write_bytes(pickle.dumps(RunsShell(f"touch '{sentinel}'"), protocol=2))
    refused(p, "system")


@pytest.mark.parametrize("module,name,arg", [
    ("builtins", "eval", _ckpt.p_str("__import__('os').system('touch SENTINEL')")),
    ("posix", "system", _ckpt.p_str("touch SENTINEL")),
    ("os", "system", _ckpt.p_str("touch SENTINEL")),
    ("builtins", "exec", _ckpt.p_str("open('SENTINEL', 'w')")),
    ("torch.storage", "_load_from_bytes", b"C\x04abcd"),
    ("torch", "load", _ckpt.p_str("x")),
    ("numpy.core.multiarray", "_reconstruct", _ckpt.p_str("x")),
    ("torch._utils", "_rebuild_qtensor", _ckpt.p_str("x")),
    ("torch.nn.modules.linear", "Linear", b""),
    ("__builtin__", "eval", _ckpt.p_str("__import__('os').system('touch SENTINEL')")),
    ("_codecs", "decode", _ckpt.p_str("x")),
])
def test_refused_globals(tmp_path, sentinel, monkeypatch, module, name, arg):
    monkeypatch.chdir(tmp_path)           # where 'SENTINEL' would appear
    data = b"\x80\x02" + _ckpt.p_global(module, name) + b"(" + arg + b"tR."
    for protocol4 in (False, True):
        if protocol4:    # the same through STACK_GLOBAL, as protocol 4 writes it
            data = (b"\x80\x04" + _ckpt.p_str(module) + _ckpt.p_str(name) + b"\x93"
                    + b"(" + arg + b"tR.")
        p = zip_with_pickle(tmp_path / "g.pth", data)
        assert f"{module}.{name}" in refused(p)
        p = legacy_with_pickle(tmp_path / "g_legacy.pth", data)
        assert f"{module}.{name}" in refused(p)


def test_whole_pickled_model(tmp_path, sentinel):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    p = tmp_path / "model.pth"
    torch.save(model, p)
    msg = refused(p, "torch.nn.modules.container.Sequential")
    assert "state_dict()" in msg
    torch.save(model, p, _use_new_zipfile_serialization=False)
    refused(p, "torch.nn.modules")


_REBUILD = _ckpt.p_global("torch._utils", "_rebuild_tensor_v2")


@pytest.mark.parametrize("label,data", [
    ("REDUCE of a storage type", b"\x80\x02" + _ckpt.p_global("torch", "FloatStorage") + b")R."),
    ("REDUCE of a str", b"\x80\x02" + _ckpt.p_str("os.system") + b")R."),
    ("BUILD on a list", b"\x80\x02]}b."),
    ("INST opcode", b"\x80\x02(ios\nsystem\nX\x01\x00\x00\x00x."),
    ("OBJ opcode", b"\x80\x02(" + _ckpt.p_global("os", "system") + b"o."),
    ("NEWOBJ", b"\x80\x02" + _ckpt.p_global("collections", "OrderedDict") + b")\x81."),
    ("EXT1", b"\x80\x02\x82\x01."),
    ("text PERSID", b"\x80\x02P0\n."),
    ("protocol 0 text int", b"I1\n."),
    ("SETITEM on a list", b"\x80\x02]" + _ckpt.p_str("a") + _ckpt.p_str("b") + b"s."),
    ("SETITEMS on a tuple", b"\x80\x02)(" + _ckpt.p_str("a") + _ckpt.p_str("b") + b"u."),
    ("SETITEM on an OrderedDict callable", b"\x80\x02" + _ckpt.p_global("collections", "OrderedDict")
     + _ckpt.p_str("a") + _ckpt.p_str("b") + b"s."),
    ("APPEND to a dict", b"\x80\x02}" + _ckpt.p_str("a") + b"a."),
    ("unhashable key", b"\x80\x02}]" + _ckpt.p_str("b") + b"s."),
    ("tuple key", b"\x80\x02})" + _ckpt.p_str("b") + b"s."),
    ("huge LONG_BINGET", b"\x80\x02}r\x00\x00\x00\x00j\xff\xff\xff\xff0."),
    ("huge LONG_BINPUT", b"\x80\x02}r\xf0\xff\xff\xff."),
    ("BINGET never stored", b"\x80\x02}h\x07."),
    ("extra items at STOP", b"\x80\x02}}."),
    ("open MARK at STOP", b"\x80\x02(}."),
    ("empty stack at STOP", b"\x80\x02."),
    ("TUPLE without MARK", b"\x80\x02}t."),
    ("pop below MARK", b"\x80\x02}(0."),
    ("no STOP", b"\x80\x02}"),
    ("truncated BINUNICODE", b"\x80\x02X\xff\xff\xff\x7fab."),
    ("bad UTF-8", b"\x80\x02X\x02\x00\x00\x00\xff\xfe."),
    ("protocol 9", b"\x80\x09}."),
    ("GLOBAL without newline", b"\x80\x02ccollections OrderedDict"),
    ("LONG4 huge", b"\x80\x02\x8b\xff\xff\xff\x7f."),
    ("top is a list", b"\x80\x02]."),
    ("top is an int", b"\x80\x02K\x05."),
    ("persistent id not a tuple", b"\x80\x02" + _ckpt.p_str("storage") + b"Q."),
    ("persistent id module", b"\x80\x02(" + _ckpt.p_str("module") + b"NNNt" + b"Q."),
    ("rebuild from a str", b"\x80\x02" + _REBUILD + b"(" + _ckpt.p_str("0") + b"K\x00)))\x89}tR."),
    ("rebuild with 2 arguments", b"\x80\x02" + _REBUILD + b"(K\x00K\x00tR."),
    ("rebuild with a list argument", b"\x80\x02" + _REBUILD + b"]R."),
    ("parameter of a str", b"\x80\x02" + _ckpt.p_global("torch._utils", "_rebuild_parameter")
     + b"(" + _ckpt.p_str("x") + b"\x89}tR."),
    ("OrderedDict of a str", b"\x80\x02" + _ckpt.p_global("collections", "OrderedDict")
     + b"(" + _ckpt.p_str("x") + b"tR."),
    ("dtype as a function", b"\x80\x02" + _ckpt.p_global("torch", "float32") + b")R."),
])
def test_malformed_pickles(tmp_path, label, data):
    for p in (zip_with_pickle(tmp_path / "m.pth", data), legacy_with_pickle(tmp_path / "m_legacy.pth", data)):
        refused(p)


def _with_metadata(value: bytes) -> bytes:
    """{"state_dict": {}, "x": value}: the metadata value is all that can be wrong."""
    return (b"\x80\x02}(" + _ckpt.p_str("state_dict") + b"}" + _ckpt.p_str("x") + value + b"u.")


def _call(module: str, name: str, *args: bytes) -> bytes:
    return _ckpt.p_global(module, name) + b"(" + b"".join(args) + b"tR"


_S, _I = _ckpt.p_str, _ckpt.p_int


@pytest.mark.parametrize("label,value", [
    ("bytes", _call("_codecs", "encode", _S("x\u00ff"), _S("latin1"))),
    ("set (Python 2 name)", _call("__builtin__", "set", b"]" + _S("a") + b"a")),
    ("set", _call("builtins", "set")),
    ("set opcodes", b"\x8f(" + _S("a") + _I(1) + b"G" + struct.pack(">d", 0.5) + b"\x90"),
    ("complex", _call("builtins", "complex", b"G" + struct.pack(">d", 1.0), _I(2))),
    ("bytearray", _call("builtins", "bytearray", b"C\x02ab")),
    ("BYTEARRAY8", b"\x96" + struct.pack("<Q", 3) + b"abc"),
    ("torch.Size", _call("torch", "Size", b"(" + _I(2) + _I(-1) + b"t")),
    ("empty torch.Size", _call("torch", "Size")),
    ("torch.device", _call("torch", "device", _S("cuda"), _I(1))),
    ("torch.device without index", _call("torch", "device", _S("cpu"), b"N")),
])
def test_plain_metadata_values(tmp_path, label, value):
    data = _with_metadata(value)
    for p in (zip_with_pickle(tmp_path / "m.pth", data), legacy_with_pickle(tmp_path / "m_l.pth", data)):
        assert read_state_dict(p) == {}


@pytest.mark.parametrize("label,value,match", [
    ("encode to utf-8", _call("_codecs", "encode", _S("xy"), _S("utf-8")), r"expected \(str, 'latin1'\)"),
    ("encode one argument", _call("_codecs", "encode", _S("xy")), r"expected \(str, 'latin1'\)"),
    ("encode of bytes", _call("_codecs", "encode", b"C\x01x", _S("latin1")), r"expected \(str, 'latin1'\)"),
    ("encode beyond latin-1", _call("_codecs", "encode", _S("\u20ac"), _S("latin1")), "below 256"),
    ("set of a str", _call("builtins", "set", _S("abc")), "one list of items"),
    ("set of a dict", _call("builtins", "set", b"}"), "one list of items"),
    ("set with a list item", _call("builtins", "set", b"]]a"), "found a list"),
    ("set with a tuple item", _call("builtins", "set", b"])a"), "found a tuple"),
    ("set of two lists", _call("builtins", "set", b"]", b"]"), "one list of items"),
    ("ADDITEMS of a list item", b"\x8f(]\x90", "found a list"),
    ("ADDITEMS to a list", b"](" + _I(1) + b"\x90", "ADDITEMS to a list"),
    ("ADDITEMS below its MARK", b"\x8f\x90", "ADDITEMS to a dict"),
    ("FROZENSET opcode", b"(" + _I(1) + b"\x91", "frozenset value is not supported"),
    ("builtins.frozenset", _call("builtins", "frozenset", b"]"), "frozenset value is not supported"),
    ("__builtin__.frozenset", _call("__builtin__", "frozenset", b"]"), "frozenset value is not supported"),
    ("complex of a str", _call("builtins", "complex", _S("1+2j")), "up to two numbers"),
    ("complex of three", _call("builtins", "complex", _I(1), _I(2), _I(3)), "up to two numbers"),
    ("complex overflow", _call("builtins", "complex", _I(2**2000)), "overflows"),
    ("bytearray of a size", _call("builtins", "bytearray", _I(2**40)), "one bytes value"),
    ("bytearray of a str", _call("builtins", "bytearray", _S("ab"), _S("latin-1")), "one bytes value"),
    ("BYTEARRAY8 past the end", b"\x96" + struct.pack("<Q", 2**62) + b"abc", "truncated"),
    ("torch.Size of strs", _call("torch", "Size", b"(" + _S("a") + b"t"), "64-bit ints"),
    ("torch.Size of a huge int", _call("torch", "Size", b"(" + _I(2**70) + b"t"), "64-bit ints"),
    ("torch.Size of floats", _call("torch", "Size", b"(G" + struct.pack(">d", 1.0) + b"t"), "64-bit ints"),
    ("torch.Size of 70 dims", _call("torch", "Size", b"(" + _I(1) * 70 + b"t"), "at most 64"),
    ("torch.Size of two", _call("torch", "Size", b")", b")"), "one tuple"),
    ("torch.device of an int", _call("torch", "device", _I(0)), r"\(type\[, index\]\)"),
    ("torch.device negative index", _call("torch", "device", _S("cuda"), _I(-1)), r"\(type\[, index\]\)"),
    ("torch.device str index", _call("torch", "device", _S("cuda"), _S("0")), r"\(type\[, index\]\)"),
    ("torch.device no arguments", _call("torch", "device"), r"\(type\[, index\]\)"),
    ("set as a dict key", b"}" + _call("builtins", "set") + _I(1) + b"s", "dict key"),
    ("torch.Size as a dict key", b"}" + _call("torch", "Size") + _I(1) + b"s", "dict key"),
])
def test_bad_metadata_values(tmp_path, label, value, match):
    data = _with_metadata(value)
    for p in (zip_with_pickle(tmp_path / "m.pth", data), legacy_with_pickle(tmp_path / "m_l.pth", data)):
        refused(p, match)


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2fnuz", "float4_e2m1fn_x2", "complex32",
                                  "qint8", "uint4", "bits16"])
def test_unsupported_dtypes_are_named(tmp_path, name):
    data = (b"\x80\x02}" + _S("w") + _call("torch._utils", "_rebuild_tensor_v3", b"N", _I(0), b")", b")",
                                             b"\x89", b"}", _ckpt.p_global("torch", name)) + b"s.")
    refused(zip_with_pickle(tmp_path / "d.pth", data), rf"dtype torch\.{name} is not supported")


def test_quantized_storage_is_named(tmp_path):
    p = zip_with_pickle(tmp_path / "q.pth", _ckpt.tensor_pickle([one_tensor(stype="QInt8Storage")]),
                        {"0": SIX_FLOATS})
    refused(p, r"quantized tensors \(torch\.QInt8Storage\) are not supported")


def test_torchscript_markers_refuse_before_member_checks(tmp_path):
    for extra in ([("archive/constants.pkl", b"\x80\x02).")],
                  [("archive/code/__torch__/m.py", b"def forward(self): ...")]):
        p = zip_with_pickle(tmp_path / "ts.pth", _ckpt.tensor_pickle([one_tensor()]), {"0": SIX_FLOATS},
                            extra=extra, compression=zipfile.ZIP_DEFLATED)
        refused(p, "TorchScript archive")
    # a state-dict key or a storage named like them is no marker
    p = zip_with_pickle(tmp_path / "ok.pth", _ckpt.tensor_pickle([one_tensor(name="code")]),
                        {"0": SIX_FLOATS}, extra=[("archive/.data/serialization_id", b"1")])
    assert list(read_state_dict(p)) == ["code"]


def test_trailing_bytes_after_stop(tmp_path):
    good = _ckpt.tensor_pickle([one_tensor()])
    refused(zip_with_pickle(tmp_path / "t.pth", good + b"}.", {"0": SIX_FLOATS}), "after STOP")


def test_memo_index_messages(tmp_path):
    p = zip_with_pickle(tmp_path / "m.pth", b"\x80\x02}r\x00\x00\x00\x00j\xff\xff\xff\xff0.")
    refused(p, "memo index 4294967295")
    p = zip_with_pickle(tmp_path / "m.pth", b"\x80\x02}r\xf0\xff\xff\xff.")
    refused(p, "out of range")
    p = zip_with_pickle(tmp_path / "m.pth", b"\x80\x02}}.")
    refused(p, "exactly one object")
    p = zip_with_pickle(tmp_path / "m.pth", b"\x80\x02]" + _ckpt.p_str("a") + _ckpt.p_str("b") + b"s.")
    refused(p, "SETITEM on a list")


# --------------------------------------------------------------------------
# Storages and tensor geometry
# --------------------------------------------------------------------------

@pytest.mark.parametrize("label,entry,data,match", [
    ("numel larger than bytes", one_tensor(numel=7, size=(7,), stride=(1,)), SIX_FLOATS, "holds 24 bytes"),
    ("numel smaller than bytes", one_tensor(numel=5, size=(5,), stride=(1,)), SIX_FLOATS, "holds 24 bytes"),
    ("negative offset", one_tensor(offset=-1), SIX_FLOATS, r"\[0, 2\*\*63\)"),
    ("negative size", one_tensor(size=(-1, 3)), SIX_FLOATS, r"\[0, 2\*\*63\)"),
    ("negative stride", one_tensor(stride=(-3, 1)), SIX_FLOATS, r"\[0, 2\*\*63\)"),
    ("negative numel", one_tensor(numel=-6), SIX_FLOATS, r"\[0, 2\*\*63\)"),
    ("offset past the end", one_tensor(offset=7, size=(0,), stride=(1,)), SIX_FLOATS, "past the end"),
    ("extent past the end", one_tensor(offset=1), SIX_FLOATS, "reaches element 6"),
    ("stride past the end", one_tensor(size=(2, 3), stride=(4, 1)), SIX_FLOATS, "reaches element"),
    ("offset 2**64", one_tensor(offset=2**64), SIX_FLOATS, "65-bit"),
    ("size 2**63", one_tensor(size=(2**63, 1)), SIX_FLOATS, r"2\*\*63"),
    ("numel overflows int64", one_tensor(size=(2**32, 2**32), stride=(0, 0)), SIX_FLOATS, "more than 2"),
    ("stride overflows when scaled", one_tensor(size=(2, 1), stride=(2**62, 1)), SIX_FLOATS, "reaches"),
    ("expanded far past the file", one_tensor(size=(2**20, 2**20), stride=(0, 0)), SIX_FLOATS, "would need"),
    ("size and stride lengths differ", one_tensor(stride=(3,)), SIX_FLOATS, "differ in length"),
    ("too many dimensions", one_tensor(size=(1,) * 70, stride=(1,) * 70), SIX_FLOATS, "at most 64"),
    ("unknown storage type", one_tensor(stype="QuantumStorage"), SIX_FLOATS, "torch.QuantumStorage"),
    ("missing data member", one_tensor(skey="7"), SIX_FLOATS, "data/7"),
    ("key escaping the folder", one_tensor(skey="../../x"), SIX_FLOATS, "data/../../x"),
])
def test_bad_storages_zip(tmp_path, label, entry, data, match):
    p = zip_with_pickle(tmp_path / "s.pth", _ckpt.tensor_pickle([entry]), {"0": data})
    refused(p, match)


def test_conflicting_storage_declarations(tmp_path):
    entries = [one_tensor(), one_tensor(name="v", numel=3, size=(3,), stride=(1,))]
    refused(zip_with_pickle(tmp_path / "c.pth", _ckpt.tensor_pickle(entries), {"0": SIX_FLOATS}))
    entries = [one_tensor(), one_tensor(name="v", stype="HalfStorage", numel=12, size=(3,), stride=(1,))]
    refused(zip_with_pickle(tmp_path / "c.pth", _ckpt.tensor_pickle(entries), {"0": SIX_FLOATS}))


@pytest.mark.parametrize("label,entry,storages,match", [
    ("count differs from numel", one_tensor(), [("0", 7, SIX_FLOATS + b"\0" * 4)], "declared 6"),
    ("bytes shorter than count", one_tensor(), [("0", 6, SIX_FLOATS[:20])], "past the end"),
    ("trailing bytes", one_tensor(), [("0", 6, SIX_FLOATS + b"junk")], "more bytes"),
    ("storage without data", one_tensor(), [], "has no data"),
    ("listed key unused", one_tensor(), [("0", 6, SIX_FLOATS), ("1", 1, b"\0" * 4)], "no tensor uses"),
    ("negative offset", one_tensor(offset=-2), [("0", 6, SIX_FLOATS)], r"\[0, 2\*\*63\)"),
    ("extent past the end", one_tensor(stride=(4, 1)), [("0", 6, SIX_FLOATS)], "reaches element"),
    ("expanded far past the file", one_tensor(size=(2**20, 2**20), stride=(0, 0)),
     [("0", 6, SIX_FLOATS)], "would need"),
])
def test_bad_storages_legacy(tmp_path, label, entry, storages, match):
    p = legacy_with_pickle(tmp_path / "l.pth", _ckpt.tensor_pickle([entry], legacy=True), storages)
    refused(p, match)


def test_bad_legacy_headers(tmp_path):
    main = _ckpt.tensor_pickle([one_tensor()], legacy=True)
    good = _ckpt.legacy_bytes(main, [("0", 6, SIX_FLOATS)])
    magic_len = len(pickle.dumps(_ckpt.LEGACY_MAGIC, protocol=2))
    p = tmp_path / "h.pth"
    p.write_bytes(pickle.dumps(0x1234, protocol=2) + good[magic_len:])
    refused(p, "magic number")
    p.write_bytes(good[:magic_len] + pickle.dumps(999, protocol=2) + good[magic_len + 6:])
    refused(p, "protocol version")
    p.write_bytes(pickle.dumps(collections.OrderedDict(w=1), protocol=2))
    refused(p)


# --------------------------------------------------------------------------
# Zip containers
# --------------------------------------------------------------------------

@pytest.fixture
def good_zip_members(tmp_path):
    p = tmp_path / "good.pth"
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}, p)
    return _ckpt.zip_members(p)


def test_zip_member_names(tmp_path, good_zip_members):
    prefix = good_zip_members[0][0].split("/")[0]
    cases = {
        "dotdot": [(n.replace(f"{prefix}/data/0", f"{prefix}/data/../data/0"), d) for n, d in good_zip_members],
        "dotdot prefix": [("../" + n, d) for n, d in good_zip_members],
        "absolute": [("/" + n, d) for n, d in good_zip_members],
        "absolute one": good_zip_members + [("/etc/passwd", b"x")],
        "drive": [("C:" + n, d) for n, d in good_zip_members],
    }
    for label, members in cases.items():
        p = tmp_path / f"{label}.pth"
        _ckpt.write_zip(p, members)
        msg = refused(p)
        assert "absolute" in msg or "'..'" in msg, (label, msg)


def test_zip_duplicates_and_compression(tmp_path, good_zip_members):
    p = tmp_path / "dup.pth"
    _ckpt.write_zip(p, good_zip_members + [good_zip_members[-2]])
    refused(p, "more than once")
    p = tmp_path / "dup_pkl.pth"
    _ckpt.write_zip(p, [good_zip_members[0]] + good_zip_members)
    refused(p, "more than once")
    p = tmp_path / "deflated.pth"
    _ckpt.write_zip(p, good_zip_members, zipfile.ZIP_DEFLATED)
    refused(p, "compression method 8")


def test_zip_structure_problems(tmp_path, good_zip_members):
    prefix = good_zip_members[0][0].split("/")[0]
    cases = {
        "no data.pkl": [m for m in good_zip_members if not m[0].endswith("data.pkl")],
        "two prefixes": good_zip_members + [("other/data.pkl", good_zip_members[0][1])],
        "member outside": good_zip_members + [("stray.txt", b"x")],
        "byteorder weird": [(n, b"middle" if n.endswith("byteorder") else d) for n, d in good_zip_members],
        "storage missing": [m for m in good_zip_members if m[0] != f"{prefix}/data/0"],
        "storage short": [(n, d[:-1] if n == f"{prefix}/data/0" else d) for n, d in good_zip_members],
        "data.pkl at root": [(n.split("/", 1)[1], d) for n, d in good_zip_members],
    }
    for label, members in cases.items():
        p = tmp_path / "s.pth"
        _ckpt.write_zip(p, members)
        with pytest.raises(WeightsError):
            read_state_dict(p)
    p = tmp_path / "empty.zip"       # no members: an empty .npz (np.savez() writes it)
    _ckpt.write_zip(p, [])
    assert read_state_dict(p) == {}


def test_zip_crc_mismatch(tmp_path):
    p = tmp_path / "crc.pth"
    torch.save({"w": torch.arange(6.0)}, p)
    raw = bytearray(p.read_bytes())
    pos = raw.find(np.arange(6, dtype=np.float32).tobytes())
    raw[pos + 5] ^= 0x40
    p.write_bytes(bytes(raw))
    refused(p, "CRC-32")


@pytest.mark.parametrize("impl", ["zlib", "zlib_ng"])
@pytest.mark.parametrize("numel", [6, 9_000_000], ids=["small", "36MB-threaded"])
def test_crc_checked_by_either_implementation(tmp_path, monkeypatch, impl, numel):
    """zlib-ng (the [fast] extra) and the stdlib fallback accept the same good file
    and refuse the same flipped bit, on the serial and the threaded read path."""
    import zlib
    from zlib_ng import zlib_ng
    from alexnet_c import weights
    monkeypatch.setattr(weights, "_crc32", zlib.crc32 if impl == "zlib" else zlib_ng.crc32)
    p = tmp_path / "w.pth"
    w = torch.arange(numel, dtype=torch.float32)
    torch.save({"w": w}, p)
    np.testing.assert_array_equal(read_state_dict(p)["w"], w.numpy())
    raw = bytearray(p.read_bytes())
    pos = raw.find(np.arange(numel, dtype=np.float32)[-4:].tobytes())
    raw[pos + 9] ^= 0x10
    p.write_bytes(bytes(raw))
    refused(p, "CRC-32")


def test_zip_overlapping_members(tmp_path):
    """Member data/1 hidden inside the bytes of data/0, both listed in the central
    directory: the zip-bomb shape where many names read one region."""
    epoch = (1980, 1, 1, 0, 0, 0)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr(zipfile.ZipInfo("archive/data/1", date_time=epoch), SIX_FLOATS)
    inner = inner.getvalue()
    local = inner[:inner.find(b"PK\x01\x02")]
    central = bytearray(inner[inner.find(b"PK\x01\x02"):inner.find(b"PK\x05\x06")])
    pkl = _ckpt.tensor_pickle([one_tensor(), one_tensor(name="v", skey="1")])
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr(zipfile.ZipInfo("archive/data.pkl", date_time=epoch), pkl)
        zf.writestr(zipfile.ZipInfo("archive/data/0", date_time=epoch), local)
    outer = outer.getvalue()
    with zipfile.ZipFile(io.BytesIO(outer)) as zf:
        info = zf.getinfo("archive/data/0")
    struct.pack_into("<I", central, 42, info.header_offset + 30 + len(info.filename) + len(info.extra))
    eocd = outer.find(b"PK\x05\x06")
    end = bytearray(outer[eocd:])
    count, size = struct.unpack_from("<HI", end, 10)
    struct.pack_into("<HHI", end, 8, count + 1, count + 1, size + len(central))
    p = tmp_path / "overlap.pth"
    p.write_bytes(outer[:eocd] + bytes(central) + bytes(end))
    with zipfile.ZipFile(p) as zf:                  # a zip that zipfile accepts
        assert zf.read("archive/data/1") == SIX_FLOATS
    refused(p, "overlap")


# --------------------------------------------------------------------------
# Truncation, every format
# --------------------------------------------------------------------------

def _valid_files(d: Path):
    sd = collections.OrderedDict(w=torch.arange(12.0).reshape(3, 4), b=torch.ones(3, dtype=torch.float16))
    files = {"zip": d / "v.pth", "legacy": d / "v_legacy.pth", "safetensors": d / "v.safetensors",
             "npz": d / "v.npz", "npz_deflated": d / "vz.npz"}
    _ckpt.torch_save(sd, files["zip"])
    _ckpt.torch_save(sd, files["legacy"], legacy=True)
    _ckpt.safetensors_save(sd, files["safetensors"])
    np.savez(files["npz"], **_ckpt.expected_arrays(sd))
    np.savez_compressed(files["npz_deflated"], **_ckpt.expected_arrays(sd))
    return sd, files


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors", "npz", "npz_deflated"])
def test_truncated_files(tmp_path, fmt):
    sd, files = _valid_files(tmp_path)
    raw = files[fmt].read_bytes()
    _ckpt.assert_same_arrays(
        {k: v for k, v in sorted(read_state_dict(files[fmt]).items())},
        {k: v for k, v in sorted(_ckpt.expected_arrays(sd).items())})
    cuts = sorted({0, 1, 4, 7, 8, 9, 16, 30, 64, len(raw) // 3, len(raw) // 2,
                   len(raw) - 60, len(raw) - 22, len(raw) - 8, len(raw) - 1})
    for cut in cuts:
        p = tmp_path / f"cut{cut}{files[fmt].suffix}"
        p.write_bytes(raw[:cut])
        with pytest.raises(WeightsError):
            read_state_dict(p)


# --------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------

def st_file(tmp_path, header, data=b"", length=None, name="h.safetensors"):
    p = tmp_path / name
    p.write_bytes(_ckpt.safetensors_bytes(header, data, length=length))
    return p


def t(dtype, shape, start, end):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [start, end]}


@pytest.mark.parametrize("label,header,data,length,match", [
    ("length past the file", {"a": t("F32", [2], 0, 8)}, b"\0" * 8, 10_000, "past the end"),
    ("overlap", {"a": t("F32", [2], 0, 8), "b": t("F32", [2], 4, 12)}, b"\0" * 12, None, "overlaps"),
    ("gap", {"a": t("F32", [2], 0, 8), "b": t("F32", [2], 12, 20)}, b"\0" * 20, None, "gap"),
    ("gap at the start", {"a": t("F32", [2], 4, 12)}, b"\0" * 12, None, "gap"),
    ("end < start", {"a": t("F32", [0], 8, 0)}, b"\0" * 8, None, "end 0 < start 8"),
    ("shape*itemsize overflow", {"a": t("F32", [2**62, 2**62], 0, 8)}, b"\0" * 8, None, "overflows"),
    ("shape*itemsize mismatch", {"a": t("F32", [3], 0, 8)}, b"\0" * 8, None, "needs 12 bytes"),
    ("unknown dtype", {"a": t("F8_E4M3", [2], 0, 2)}, b"\0" * 2, None, "F8_E4M3"),
    ("nonsense dtype", {"a": t("Q99", [2], 0, 2)}, b"\0" * 2, None, "Q99"),
    ("trailing bytes", {"a": t("F32", [2], 0, 8)}, b"\0" * 12, None, "trailing"),
    ("data truncated", {"a": t("F32", [2], 0, 8)}, b"\0" * 6, None, "truncated"),
    ("negative shape", {"a": t("F32", [-2], 0, 8)}, b"\0" * 8, None, r"\[0, 2\*\*63\)"),
    ("float shape", {"a": t("F32", [2.0], 0, 8)}, b"\0" * 8, None, "expected an int"),
    ("bool offsets", {"a": t("U8", [1], False, True)}, b"\0", None, "expected an int"),
    ("offsets not a pair", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, b"\0" * 8, None,
     "data_offsets"),
    ("no dtype", {"a": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "dtype"),
    ("entry not an object", {"a": [1, 2]}, b"", None, "expected an object"),
    ("bad metadata", {"__metadata__": {"k": 1}}, b"", None, "__metadata__"),
    ("header is a list", b"[1, 2, 3]", b"", None, "JSON object"),
    ("header not JSON", b"{not json", b"", None, "JSON"),
    ("header not UTF-8", b"{\"\xff\": 1}", b"", None, "UTF-8"),
    ("duplicate names", b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
                        b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}', b"\0", None, "twice"),
])
def test_bad_safetensors(tmp_path, label, header, data, length, match):
    refused(st_file(tmp_path, header, data, length), match)


def test_safetensors_header_over_100mb(tmp_path):
    # A sparse file bigger than the claim, so only the 100 MB limit is at stake.
    p = tmp_path / "huge.safetensors"
    claim = 100_000_001
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", claim) + b"{")
        f.truncate(claim + 4096)
    refused(p, "100000000-byte limit")
    p.write_bytes(struct.pack("<Q", 2**40) + b"{}")       # absurd claims too
    refused(p)


def test_safetensors_zero_size_tensors_are_fine(tmp_path):
    p = st_file(tmp_path, {"e": t("F32", [0, 3], 0, 0), "f": t("F32", [0], 0, 0),
                           "a": t("F32", [1], 0, 4)}, _ckpt.float_bytes([7]))
    got = read_state_dict(p)
    assert got["e"].shape == (0, 3) and got["f"].shape == (0,) and got["a"][0] == 7


# --------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------

def test_npz_object_arrays(tmp_path, sentinel):
    p = tmp_path / "obj.npz"
    np.savez(p, w=np.ones(3, np.float32),
             evil=np.array([RunsShell(f"touch '{sentinel}'")], dtype=object))
    refused(p, "object array")
    np.savez(p, names=np.array(["a", "b"]))
    refused(p, "numeric")
    np.savez(p, rec=np.zeros(2, dtype=[("x", "f4"), ("y", "i4")]))
    refused(p, "numeric")


def test_npz_structure_problems(tmp_path):
    good = io.BytesIO()
    np.save(good, np.arange(4, dtype=np.float32))
    npy = good.getvalue()
    cases = {
        "not npy member": [("w.npy", npy), ("readme.txt", b"hi")],
        "short data": [("w.npy", npy[:-4])],
        "long data": [("w.npy", npy + b"\0" * 4)],
        "bad magic": [("w.npy", b"\x93NUMPX" + npy[6:])],
        "version 9": [("w.npy", npy[:6] + b"\x09\x00" + npy[8:])],
        "dotdot": [("../w.npy", npy)],
        "duplicate": [("w.npy", npy), ("w.npy", npy)],
    }
    for label, members in cases.items():
        p = tmp_path / "s.npz"
        _ckpt.write_zip(p, members)
        with pytest.raises(WeightsError):
            read_state_dict(p)


# --------------------------------------------------------------------------
# Mutation fuzzing
# --------------------------------------------------------------------------
# For formats with checksums (zip .pth and .npz), a load that succeeds must return
# the original arrays. For legacy .pth and .safetensors a mutation of tensor bytes
# changes the values, so the expectation is what the mutated bytes encode, worked
# out by the independent decoders below (CPython's pickle with a closed find_class
# for legacy, a direct reading of the JSON header for safetensors).

@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    """Small valid files, built once: several tensors, shared storages, views, and
    float16/float64 next to float32. Returns (dir, {fmt: (bytes, suffix, arrays)})."""
    d = tmp_path_factory.mktemp("fuzz")
    g = torch.Generator().manual_seed(3)
    base = torch.randn(3, 4, generator=g)
    sd = collections.OrderedDict([
        ("w", base), ("wt", base.t()), ("row", base[1]),
        ("h", torch.randn(5, generator=g).half()), ("d", torch.randn(2, 2, generator=g).double()),
    ])
    flat = collections.OrderedDict((k, v.contiguous().clone()) for k, v in sd.items())
    sources = {}
    for fmt, ext in (("zip", ".pth"), ("legacy", ".pth"), ("safetensors", ".safetensors"),
                     ("npz", ".npz")):
        p = d / f"src_{fmt}{ext}"
        if fmt == "zip":
            _ckpt.torch_save(sd, p)
        elif fmt == "legacy":
            _ckpt.torch_save(sd, p, legacy=True)
        elif fmt == "safetensors":
            _ckpt.safetensors_save(flat, p)
        else:
            np.savez(p, **_ckpt.expected_arrays(flat))
        sources[fmt] = (p.read_bytes(), ext, _ckpt.expected_arrays(sd))
    return d, sources


class _RefStorageType:
    def __init__(self, dtype: str):
        self.dtype = np.dtype(dtype)


_REF_DTYPES = {"FloatStorage": "<f4", "HalfStorage": "<f2", "DoubleStorage": "<f8",
               "LongStorage": "<i8", "IntStorage": "<i4", "ByteStorage": "u1"}


class _RefTensor:
    def __init__(self, storage, offset, size, stride, *rest):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _ref_rebuild_parameter(data, requires_grad, hooks, *rest):
    return data


class _RefUnpickler(pickle.Unpickler):
    """Reference decoding of a legacy file: CPython's unpickler, with find_class
    closed to everything but the reference stand-ins."""

    def __init__(self, f, storages=None):
        super().__init__(f, encoding="utf-8")   # as torch.load decodes
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _RefTensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _ref_rebuild_parameter
        if module == "torch" and name in _REF_DTYPES:
            return _RefStorageType(_REF_DTYPES[name])
        raise pickle.UnpicklingError(f"reference refuses {module}.{name}")

    def persistent_load(self, pid):
        if self.storages is None:
            raise pickle.UnpicklingError("no persistent ids here")
        typename, stype, key, location, numel, view = pid
        assert typename == "storage" and view is None and isinstance(stype, _RefStorageType)
        self.storages.setdefault(key, (stype.dtype, numel))
        return key


def _checked_view(data: np.ndarray, offset, size, stride) -> np.ndarray:
    numel = int(np.prod(size, dtype=object))
    if numel:
        last = offset + sum((n - 1) * st for n, st in zip(size, stride))
        assert 0 <= offset and last < data.size, "reference: view out of bounds"
    return np.lib.stride_tricks.as_strided(data[offset:], shape=size,
                                           strides=[s * data.itemsize for s in stride])


def reference_legacy(raw: bytes):
    f = io.BytesIO(raw)
    for _ in range(3):                      # magic, protocol, sys_info
        _RefUnpickler(f).load()
    storages = {}
    obj = _RefUnpickler(f, storages).load()
    keys = _RefUnpickler(f).load()
    data = {}
    for key in keys:
        dtype, numel = storages[key]
        (count,) = struct.unpack("<q", f.read(8))
        assert count == numel
        data[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype, count)
        assert data[key].size == count
    out = {}
    for name, ref in obj.items():
        arr = _checked_view(data[ref.storage], ref.offset, ref.size, ref.stride)
        with np.errstate(over="ignore", invalid="ignore"):
            out[name] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr.copy()
    return out


_ST_REF = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "U64": "<u8",
           "I32": "<i4", "U32": "<u4", "I16": "<i2", "U16": "<u2", "I8": "i1", "U8": "u1",
           "BOOL": "u1", "C64": "<c8"}


def reference_safetensors(raw: bytes):
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        s, e = info["data_offsets"]
        dtype = info["dtype"]
        arr = np.frombuffer(raw[8 + n + s:8 + n + e], _ST_REF[dtype]).reshape(info["shape"])
        with np.errstate(over="ignore", invalid="ignore"):
            if dtype == "BF16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            elif dtype == "BOOL":
                arr = arr != 0
            elif dtype in ("F16", "F64"):
                arr = arr.astype(np.float32)
        out[name] = np.asarray(arr).astype(arr.dtype.newbyteorder("="))
    return out


def _check_mutant(fuzz, fmt: str, mutations):
    d, sources = fuzz
    raw, ext, original = sources[fmt]
    data = bytearray(raw)
    for pos, value in mutations:
        data[pos % len(data)] = value
    data = bytes(data)
    p = d / f"mutant{ext}"
    p.write_bytes(data)
    try:
        got = read_state_dict(p)
    except WeightsError:
        return
    # Anything but WeightsError propagates and fails the test.
    if fmt in ("zip", "npz") or data == raw:
        want = original
    elif fmt == "legacy":
        want = reference_legacy(data)
    else:
        want = reference_safetensors(data)
    if fmt in ("safetensors", "npz"):         # these formats do not keep the order
        got, want = dict(sorted(got.items())), dict(sorted(want.items()))
    _ckpt.assert_same_arrays(got, want)


mutations = st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=4)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors", "npz"])
@settings(max_examples=90, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(muts=mutations)
def test_mutated_files_load_right_or_raise_weights_error(fuzz, fmt, muts):
    _check_mutant(fuzz, fmt, muts)


@pytest.mark.parametrize("fmt", ["legacy", "safetensors"])
def test_mutated_tensor_bytes_change_values(fuzz, fmt):
    """The fuzz expectation at work: flipping a data byte in a format without
    checksums loads, with exactly the value those bytes now encode."""
    d, sources = fuzz
    raw, _, original = sources[fmt]
    target = original["w"].tobytes()[:8]
    pos = raw.rfind(target)
    assert pos > 0 and raw.count(target) == 1
    _check_mutant(fuzz, fmt, [(pos + 3, raw[pos + 3] ^ 0x01)])
    data = bytearray(raw)
    data[pos + 3] ^= 0x01
    p = d / "flipped.bin"
    p.write_bytes(bytes(data))
    got = read_state_dict(p)["w"]
    assert got[0, 0] != original["w"][0, 0]
    assert np.array_equal(got.reshape(-1)[1:], original["w"].reshape(-1)[1:])
