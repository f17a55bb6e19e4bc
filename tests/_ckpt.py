"""Test helpers for making checkpoints: real ones with torch, and hand-built
(possibly hostile) ones byte by byte. Imported by several test modules; nothing
here imports alexnet_c, so it can describe files independently of the reader.

Hand-built pickles use the opcodes of pickle protocol 2 directly (see
``pickletools``), so a test can put any value in any field.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
SYS_INFO = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 8}}


# --------------------------------------------------------------------------
# Real state dicts (need torch)
# --------------------------------------------------------------------------

def original_alexnet(num_classes: int = 1000):
    """The single-tower 2012 layout of DESIGN.md, as a PyTorch user writes it."""
    from alexnet_c.reference import original_alexnet as build
    return build(num_classes)


def alexnet_state_dict(variant: str, num_classes: int = 1000, seed: int = 0):
    """A seeded state dict of torchvision's AlexNet or the 'original' layout."""
    import torch

    torch.manual_seed(seed)
    if variant == "torchvision":
        import torchvision

        model = torchvision.models.alexnet(num_classes=num_classes)
    elif variant == "original":
        model = original_alexnet(num_classes)
    else:
        raise ValueError(variant)
    return model.state_dict()


def odd_state_dict(seed: int = 0):
    """Small tensors that exercise the corners: views sharing one storage (transposed,
    offset, strided), 0-d, empty, a Parameter and a non-float tensor."""
    import torch

    g = torch.Generator().manual_seed(seed)
    t = torch.randn(4, 6, generator=g)
    return collections.OrderedDict([
        ("a", t.t()),                       # transposed view
        ("b", t[1:3]),                      # offset view of the same storage
        ("c", t[:, ::2]),                   # strided view
        ("d", t),                           # the whole storage
        ("scalar", torch.tensor(2.5)),
        ("empty", torch.zeros(0, 3)),
        ("param", torch.nn.Parameter(torch.randn(3, 2, generator=g))),
        ("conv.weight", torch.randn(2, 3, 3, 3, generator=g)),
        ("ints", torch.arange(5)),
    ])


def dtype_state_dict(dtype, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    t = (torch.randn(5, 7, generator=g) * 3).to(dtype)
    return collections.OrderedDict([("w", t), ("wt", t.t()), ("row", t[2]),
                                    ("b", torch.randn(7, generator=g).to(dtype))])


def expected_arrays(sd) -> Dict[str, np.ndarray]:
    """What a reader should return for a torch state dict: floats as float32."""
    import torch

    out = {}
    for k, v in sd.items():
        v = v.detach()
        if v.is_floating_point():
            v = v.to(torch.float32)
        out[k] = v.contiguous().numpy()
    return out


def assert_same_arrays(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> None:
    """Same keys in the same order, same dtype, shape and bytes (any NaN matches any NaN)."""
    assert list(got) == list(want), (list(got), list(want))
    for k in want:
        g, w = got[k], np.asarray(want[k])
        assert isinstance(g, np.ndarray), (k, type(g))
        assert g.dtype == w.dtype, (k, g.dtype, w.dtype)
        assert g.shape == w.shape, (k, g.shape, w.shape)
        assert _same_bytes(g, w), k


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    # Bit patterns (so -0.0 differs from 0.0), compared through an unsigned view so
    # a 233 MB comparison needs no copy. NaNs only need to be NaN in both: their
    # payload is not meaningful (torch's float16 -> float32 makes every NaN
    # 0x7fffffff, NumPy keeps sign and payload).
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.dtype.kind in "fc":
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        if not np.array_equal(nan_a, nan_b):
            return False
        if nan_a.any():
            a, b = np.where(nan_a, 0, a), np.where(nan_b, 0, b)
    if a.dtype.itemsize in (1, 2, 4, 8) and a.dtype.itemsize == b.dtype.itemsize:
        u = np.dtype(f"u{a.dtype.itemsize}")
        return bool(np.array_equal(a.view(u), b.view(u)))
    return a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------
# Saving with torch, and rewriting zips
# --------------------------------------------------------------------------

def torch_save(sd, path, *, legacy: bool = False, protocol: int = 2) -> None:
    import torch

    torch.save(sd, str(path), _use_new_zipfile_serialization=not legacy, pickle_protocol=protocol)


def safetensors_save(sd, path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, str(path))


def zip_members(path) -> List[Tuple[str, bytes]]:
    with zipfile.ZipFile(str(path)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def write_zip(path, members: Iterable[Tuple[str, bytes]],
              compression: int = zipfile.ZIP_STORED) -> None:
    """Writes members as given (duplicates and odd names included)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # "Duplicate name"
        with zipfile.ZipFile(str(path), "w", compression) as zf:
            for name, data in members:
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                            compress_type=compression)


def rewrite_zip_prefix(src, dst, prefix: str) -> None:
    """The same checkpoint under another top-level folder."""
    members = [(prefix + "/" + n.split("/", 1)[1], d) for n, d in zip_members(src)]
    write_zip(dst, members)


# --------------------------------------------------------------------------
# Hand-built pickles
# --------------------------------------------------------------------------

def p_int(n: int) -> bytes:
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def p_str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def p_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def p_tuple(items: Sequence[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def tensor_pickle(entries: Sequence[Mapping], *, legacy: bool = False) -> bytes:
    """A state-dict pickle as torch.save writes it. Each entry: name, numel, size,
    stride, and optionally offset (0), skey ('0'), stype ('FloatStorage'),
    location ('cpu')."""
    od = p_global("collections", "OrderedDict") + b")R"
    out = b"\x80\x02" + od + b"("
    for e in entries:
        pid = [p_str("storage"), p_global("torch", e.get("stype", "FloatStorage")),
               p_str(e.get("skey", "0")), p_str(e.get("location", "cpu")), p_int(e["numel"])]
        if legacy:
            pid.append(b"N")
        args = [p_tuple(pid) + b"Q", p_int(e.get("offset", 0)),
                p_tuple([p_int(s) for s in e["size"]]), p_tuple([p_int(s) for s in e["stride"]]),
                b"\x89", od]
        out += p_str(e["name"]) + p_global("torch._utils", "_rebuild_tensor_v2") + p_tuple(args) + b"R"
    return out + b"u."


def make_torch_zip(path, data_pkl: bytes, storages: Mapping[str, bytes], *,
                   prefix: str = "archive", compression: int = zipfile.ZIP_STORED,
                   extra: Sequence[Tuple[str, bytes]] = ()) -> None:
    members = [(f"{prefix}/data.pkl", data_pkl), (f"{prefix}/byteorder", b"little")]
    members += [(f"{prefix}/data/{k}", v) for k, v in storages.items()]
    members += [(f"{prefix}/version", b"3\n")] + list(extra)
    write_zip(path, members, compression)


def legacy_bytes(main_pickle: bytes, storages: Sequence[Tuple[str, int, bytes]],
                 keys: Optional[Sequence[str]] = None) -> bytes:
    """A legacy checkpoint: magic, protocol, sys_info, the object, the storage keys,
    then per storage an int64 element count and its bytes."""
    out = io.BytesIO()
    for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, SYS_INFO):
        pickle.dump(header, out, protocol=2)
    out.write(main_pickle)
    pickle.dump(list(keys) if keys is not None else [k for k, _, _ in storages], out, protocol=2)
    for _, count, data in storages:
        out.write(struct.pack("<q", count) + data)
    return out.getvalue()


def float_bytes(values: Sequence[float]) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def safetensors_bytes(header, data: bytes, *, length: Optional[int] = None) -> bytes:
    """A safetensors file from a header (dict or raw bytes) and a data section;
    `length` overrides the 8-byte header length."""
    import json

    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    return struct.pack("<Q", n) + raw + data
