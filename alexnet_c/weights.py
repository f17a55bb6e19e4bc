"""Reading and writing state dicts (name -> array) without torch and without pickle.

Formats, detected by content rather than by suffix:

* PyTorch zip checkpoints (``torch.save``, the default since 1.6),
* PyTorch legacy checkpoints (``_use_new_zipfile_serialization=False``),
* ``.safetensors`` (through ``safetensors.numpy``, after checking the header here),
* ``.npz`` (``np.load(allow_pickle=False)``).

A weights file is untrusted input. PyTorch checkpoints hold pickles, and an
ordinary unpickler runs whatever the file names, so ``data.pkl`` is read by the
small interpreter below: it knows the opcodes ``torch.save`` emits and maps the
few globals a state dict (and a training checkpoint's plain metadata) needs to
stand-in objects of its own. Nothing is ever imported or called on the file's
say-so. Every problem with the content is a :class:`WeightsError` that says what
was expected and what was found.
"""
from __future__ import annotations

import json
import mmap
import os
import re
import secrets
import stat
import struct
import zipfile
import zlib

try:   # the optional [fast] extra: zlib-ng's CRC-32 runs ~3x faster than zlib 1.2's (9 vs 3 GB/s)
    from zlib_ng.zlib_ng import crc32 as _crc32
except ImportError:  # pragma: no cover - exercised by tests that patch _crc32
    from zlib import crc32 as _crc32
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from ._errors import WeightsError

__all__ = ["read_state_dict", "write_state_dict", "WeightsError"]

# safetensors' own limit on the JSON header.
MAX_SAFETENSORS_HEADER = 100_000_000
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_I64_MAX = 2**63 - 1
_MAX_NDIM = 64
# A view may repeat storage bytes (stride 0, or several names for one storage), so
# the output can legitimately be larger than the file; this bounds how much larger,
# so a few bytes of pickle cannot ask for terabytes.
_OUTPUT_FACTOR = 4
_OUTPUT_SLACK = 256 << 20
# Deflated .npz members may expand; a legitimate float file barely compresses.
_NPZ_INFLATE_FACTOR = 32
_CHUNK = 1 << 22


# --------------------------------------------------------------------------
# Element types
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Elem:
    name: str     # torch's name, for messages
    code: str     # NumPy type code without byte order; bfloat16 travels as 'u2'
    size: int
    bf16: bool = False
    is_bool: bool = False

    def np_dtype(self, order: str) -> np.dtype:
        return np.dtype((order if self.size > 1 else "|") + self.code)


_E = {
    "float32": _Elem("float32", "f4", 4),
    "float64": _Elem("float64", "f8", 8),
    "float16": _Elem("float16", "f2", 2),
    "bfloat16": _Elem("bfloat16", "u2", 2, bf16=True),
    "int64": _Elem("int64", "i8", 8),
    "int32": _Elem("int32", "i4", 4),
    "int16": _Elem("int16", "i2", 2),
    "int8": _Elem("int8", "i1", 1),
    "uint8": _Elem("uint8", "u1", 1),
    "uint16": _Elem("uint16", "u2", 2),
    "uint32": _Elem("uint32", "u4", 4),
    "uint64": _Elem("uint64", "u8", 8),
    "bool": _Elem("bool", "u1", 1, is_bool=True),
    "complex64": _Elem("complex64", "c8", 8),
    "complex128": _Elem("complex128", "c16", 16),
}

_STORAGE_TYPES = {
    "FloatStorage": _E["float32"], "DoubleStorage": _E["float64"],
    "HalfStorage": _E["float16"], "BFloat16Storage": _E["bfloat16"],
    "LongStorage": _E["int64"], "IntStorage": _E["int32"],
    "ShortStorage": _E["int16"], "CharStorage": _E["int8"],
    "ByteStorage": _E["uint8"], "BoolStorage": _E["bool"],
    "ComplexFloatStorage": _E["complex64"], "ComplexDoubleStorage": _E["complex128"],
}

# torch.<dtype> names that _rebuild_tensor_v3 (dtypes without a legacy storage
# class) may name.
_TORCH_DTYPES = {
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
    "float16": "float16", "half": "float16", "bfloat16": "bfloat16",
    "int64": "int64", "long": "int64", "int32": "int32", "int": "int32",
    "int16": "int16", "short": "int16", "int8": "int8", "uint8": "uint8",
    "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool",
    "complex64": "complex64", "complex128": "complex128",
}


def _to_output(arr: np.ndarray, elem: _Elem) -> np.ndarray:
    """float16/bfloat16/float64 become float32; other types keep theirs, made native."""
    # In-place and astype keep 0-d arrays arrays (a binary op would give a scalar).
    if elem.bf16:
        # bfloat16 is the high half of a float32.
        wide = arr.astype(np.uint32)
        wide <<= 16
        return wide.view(np.float32)
    if elem.is_bool:
        return arr.astype(np.bool_)
    if elem.code in ("f2", "f8"):
        with np.errstate(over="ignore", invalid="ignore"):
            return arr.astype(np.float32)
    if not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


# --------------------------------------------------------------------------
# Stand-ins for the objects a state-dict pickle names
# --------------------------------------------------------------------------

class _StorageType:
    """Stands in for torch.FloatStorage & co. (only ever a pickle argument)."""

    def __init__(self, qualname: str, elem: _Elem):
        self.qualname, self.elem = qualname, elem


class _DType:
    """Stands in for torch.float32 & co. (argument of _rebuild_tensor_v3)."""

    def __init__(self, qualname: str, elem: _Elem):
        self.qualname, self.elem = qualname, elem


class _Callable:
    def __init__(self, qualname: str, fn: Callable[[tuple, "_Unpickler"], Any]):
        self.qualname, self.fn = qualname, fn


class _StorageRef:
    """A storage named by a persistent id; its bytes are read after unpickling."""

    def __init__(self, key: str, elem: _Elem, numel: int, *,
                 root: Optional["_StorageRef"] = None, root_offset: int = 0):
        self.key, self.elem, self.numel = key, elem, numel
        self.root, self.root_offset = root, root_offset   # legacy storage views


class _TensorRef:
    """A strided view of a storage, checked against the storage's declared size."""

    def __init__(self, storage: _StorageRef, elem: _Elem, offset: int,
                 size: Tuple[int, ...], stride: Tuple[int, ...], numel: int):
        self.storage, self.elem, self.offset = storage, elem, offset
        self.size, self.stride, self.numel = size, stride, numel


def _describe(x: Any) -> str:
    """Short and bounded: a hostile file may nest or share objects without end."""
    if isinstance(x, _TensorRef):
        return f"a {x.elem.name} tensor of shape {x.size}"
    if isinstance(x, (_StorageType, _DType, _Callable)):
        return x.qualname
    if isinstance(x, _StorageRef):
        return f"storage {x.key!r}"
    if isinstance(x, str):
        return f"str {x[:60]!r}"
    if isinstance(x, bool) or x is None:
        return repr(x)
    if isinstance(x, int):
        return str(x) if x.bit_length() <= 64 else f"a {x.bit_length()}-bit integer"
    if isinstance(x, (dict, list, tuple, set, frozenset)):
        return f"a {type(x).__name__} of {len(x)} items"
    return f"a {type(x).__name__}"


def _int_field(x: Any, what: str) -> int:
    if type(x) is not int:
        raise WeightsError(f"{what}: expected an int, found {_describe(x)}")
    if x < 0 or x > _I64_MAX:
        raise WeightsError(f"{what}: expected an integer in [0, 2**63), found {_describe(x)}")
    return x


def _int_tuple(x: Any, what: str) -> Tuple[int, ...]:
    if type(x) is not tuple:
        raise WeightsError(f"{what}: expected a tuple of ints, found {_describe(x)}")
    if len(x) > _MAX_NDIM:
        raise WeightsError(f"{what}: expected at most {_MAX_NDIM} dimensions, found {len(x)}")
    return tuple(_int_field(v, what) for v in x)


def _make_tensor(storage: Any, elem: _Elem, elems_available: int, offset: Any,
                 size: Any, stride: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise WeightsError(f"tensor rebuild: expected a storage, found {_describe(storage)}")
    offset = _int_field(offset, "tensor storage_offset")
    size = _int_tuple(size, "tensor size")
    stride = _int_tuple(stride, "tensor stride")
    if len(size) != len(stride):
        raise WeightsError(f"tensor size {size} and stride {stride} differ in length")
    numel = 1
    for s in size:
        numel *= s
    if numel > _I64_MAX:
        raise WeightsError(f"tensor size {size} has more than 2**63 elements")
    if offset > elems_available:
        raise WeightsError(f"tensor storage_offset {offset} is past the end of its storage "
                           f"({elems_available} elements)")
    if numel > 0:
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= elems_available:
            raise WeightsError(
                f"tensor of size {size}, stride {stride}, offset {offset} reaches element "
                f"{_describe(last)} of a storage of {elems_available} elements")
    return _TensorRef(storage, elem, offset, size, stride, numel)


def _check_rebuild_flags(requires_grad: Any, hooks: Any) -> None:
    if type(requires_grad) is not bool:
        raise WeightsError(f"tensor requires_grad: expected a bool, found {_describe(requires_grad)}")
    if type(hooks) is not dict:
        raise WeightsError(f"tensor backward_hooks: expected a dict, found {_describe(hooks)}")


def _rebuild_tensor_v2(args: tuple, vm: "_Unpickler") -> _TensorRef:
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if len(args) not in (6, 7):
        raise WeightsError(f"_rebuild_tensor_v2 takes 6 or 7 arguments, found {len(args)}")
    storage = args[0]
    if not isinstance(storage, _StorageRef):
        raise WeightsError(f"_rebuild_tensor_v2: expected a storage, found {_describe(storage)}")
    _check_rebuild_flags(args[4], args[5])
    return _make_tensor(storage, storage.elem, storage.numel, *args[1:4])


def _rebuild_tensor_v3(args: tuple, vm: "_Unpickler") -> _TensorRef:
    # (untyped storage, storage_offset, size, stride, requires_grad, hooks, dtype[, metadata])
    if len(args) not in (7, 8):
        raise WeightsError(f"_rebuild_tensor_v3 takes 7 or 8 arguments, found {len(args)}")
    storage, dtype = args[0], args[6]
    if not isinstance(storage, _StorageRef) or storage.elem is not _E["uint8"]:
        raise WeightsError(f"_rebuild_tensor_v3: expected an UntypedStorage, found {_describe(storage)}")
    if not isinstance(dtype, _DType):
        raise WeightsError(f"_rebuild_tensor_v3: expected a torch dtype, found {_describe(dtype)}")
    _check_rebuild_flags(args[4], args[5])
    return _make_tensor(storage, dtype.elem, storage.numel // dtype.elem.size, *args[1:4])


def _rebuild_parameter(args: tuple, vm: "_Unpickler") -> _TensorRef:
    # (data, requires_grad, backward_hooks); _with_state adds a 4th (python attrs).
    if len(args) not in (3, 4) or not isinstance(args[0], _TensorRef):
        raise WeightsError(f"_rebuild_parameter: expected (tensor, requires_grad, hooks[, state]), "
                           f"found {len(args)} arguments starting with "
                           f"{_describe(args[0]) if args else 'nothing'}")
    _check_rebuild_flags(args[1], args[2])
    return args[0]


def _ordered_dict(args: tuple, vm: "_Unpickler") -> dict:
    if args == ():
        return {}
    if len(args) == 1 and type(args[0]) is list:
        out: dict = {}
        for pair in args[0]:
            if type(pair) is not tuple or len(pair) != 2:
                raise WeightsError(f"OrderedDict(items): expected (key, value) pairs, found {_describe(pair)}")
            _check_key(pair[0])
            out[pair[0]] = pair[1]
        return out
    raise WeightsError(f"OrderedDict: expected no arguments or one list of pairs, found {len(args)} arguments")


def _check_key(key: Any) -> None:
    # Only flat key types: hashing a tuple that nests shared tuples can take
    # exponential time, and no state dict needs such keys.
    if not (key is None or type(key) in (str, int, float, bool, bytes)):
        raise WeightsError(f"dict key: expected a str or number, found {_describe(key)}")


# What a set may hold: values whose hash is cheap and runs no code of the file's.
_FLAT_TYPES = (str, int, float, bool, bytes, complex, type(None))


def _describe_args(args: tuple) -> str:
    if not args:
        return "no arguments"
    shown = ", ".join(_describe(a) for a in args[:3])
    return f"({shown}{', ...' if len(args) > 3 else ''})"


def _flat_items(items: Iterable[Any], what: str) -> List[Any]:
    items = list(items)
    for x in items:
        if type(x) not in _FLAT_TYPES:
            raise WeightsError(f"{what}: expected str, number or bytes items, found {_describe(x)}")
    return items


# The plain values below are what torch.load(weights_only=True) also accepts in a
# training checkpoint's metadata (torch/_weights_only_unpickler.py); each is built
# here from values already on the stack, and never from a str or int alone that
# would make the constructor parse text or allocate memory.

def _codecs_encode(args: tuple, vm: "_Unpickler") -> bytes:
    # Protocol 2 has no bytes opcode: pickle writes b"..." as
    # _codecs.encode(text, 'latin1'), whose code points map one-to-one to bytes.
    if len(args) != 2 or type(args[0]) is not str or type(args[1]) is not str or args[1] != "latin1":
        raise WeightsError("_codecs.encode: expected (str, 'latin1') as pickle writes bytes, "
                           f"found {_describe_args(args)}")
    try:
        return args[0].encode("latin-1")
    except UnicodeEncodeError:
        raise WeightsError("_codecs.encode: expected text of code points below 256 (bytes), "
                           f"found {_describe(args[0])}") from None


def _set(args: tuple, vm: "_Unpickler") -> set:
    if args == ():
        return set()
    if len(args) == 1 and type(args[0]) in (list, tuple, set, frozenset):
        return set(_flat_items(args[0], "builtins.set"))
    raise WeightsError(f"builtins.set: expected no arguments or one list of items, "
                       f"found {_describe_args(args)}")


def _complex(args: tuple, vm: "_Unpickler") -> complex:
    if len(args) > 2 or not all(type(a) in (int, float) for a in args):
        raise WeightsError(f"builtins.complex: expected up to two numbers (real, imag), "
                           f"found {_describe_args(args)}")
    try:
        return complex(*args)
    except OverflowError:
        raise WeightsError(f"builtins.complex: {_describe_args(args)} overflows a float") from None


def _bytearray(args: tuple, vm: "_Unpickler") -> bytearray:
    # bytearray(n) would allocate n bytes on the file's say-so.
    if args == ():
        return bytearray()
    if len(args) == 1 and type(args[0]) in (bytes, bytearray):
        return bytearray(args[0])
    raise WeightsError(f"builtins.bytearray: expected no arguments or one bytes value, "
                       f"found {_describe_args(args)}")


def _torch_size(args: tuple, vm: "_Unpickler") -> Tuple[int, ...]:
    """torch.Size stands as the plain tuple of ints it is."""
    if args == ():
        return ()
    if len(args) == 1 and type(args[0]) in (tuple, list) and len(args[0]) <= _MAX_NDIM and all(
            type(v) is int and -_I64_MAX - 1 <= v <= _I64_MAX for v in args[0]):
        return tuple(args[0])
    raise WeightsError(f"torch.Size: expected one tuple of at most {_MAX_NDIM} 64-bit ints, "
                       f"found {_describe_args(args)}")


def _torch_device(args: tuple, vm: "_Unpickler") -> str:
    """torch.device stands as its string form, 'cpu' or 'cuda:0'."""
    if 1 <= len(args) <= 2 and type(args[0]) is str:
        if len(args) == 1 or args[1] is None:
            return args[0]
        if type(args[1]) is int and 0 <= args[1] <= _I64_MAX:
            return f"{args[0]}:{args[1]}"
    raise WeightsError(f"torch.device: expected (type[, index]) such as ('cuda', 0), "
                       f"found {_describe_args(args)}")


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    table: Dict[Tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _Callable("collections.OrderedDict", _ordered_dict),
        ("torch._utils", "_rebuild_tensor_v2"): _Callable("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2),
        ("torch._utils", "_rebuild_tensor_v3"): _Callable("torch._utils._rebuild_tensor_v3", _rebuild_tensor_v3),
        ("torch._utils", "_rebuild_parameter"): _Callable("torch._utils._rebuild_parameter", _rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"):
            _Callable("torch._utils._rebuild_parameter_with_state", _rebuild_parameter),
        ("torch.storage", "UntypedStorage"): _StorageType("torch.storage.UntypedStorage", _E["uint8"]),
        ("torch", "UntypedStorage"): _StorageType("torch.UntypedStorage", _E["uint8"]),
        ("_codecs", "encode"): _Callable("_codecs.encode", _codecs_encode),
        ("builtins", "set"): _Callable("builtins.set", _set),
        ("builtins", "complex"): _Callable("builtins.complex", _complex),
        ("builtins", "bytearray"): _Callable("builtins.bytearray", _bytearray),
        ("torch", "Size"): _Callable("torch.Size", _torch_size),
        ("torch", "device"): _Callable("torch.device", _torch_device),
    }
    for name, elem in _STORAGE_TYPES.items():
        table[("torch", name)] = _StorageType(f"torch.{name}", elem)
    for name, canon in _TORCH_DTYPES.items():
        table[("torch", name)] = _DType(f"torch.{name}", _E[canon])
    return table


_ALLOWED = _allowed_globals()


def _frozenset_refusal() -> WeightsError:
    return WeightsError("a frozenset value is not supported (torch.load(weights_only=True) "
                        "refuses it too): expected a state dict whose metadata holds plain "
                        "values such as numbers, strings, lists, dicts, bytes or sets")


# Names torch.load(weights_only=True) accepts but that have no NumPy counterpart here.
_UNSUPPORTED_DTYPES = frozenset(
    ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
     "float4_e2m1fn_x2", "complex32", "chalf", "bcomplex32", "bits8", "bits16", "bits1x8",
     "bits2x4", "bits4x2", "qint8", "qint32", "quint8", "quint4x2", "quint2x4"]
    + [f"{u}int{n}" for u in ("", "u") for n in range(1, 8)])
_QUANTIZED_STORAGES = frozenset(
    ["QInt8Storage", "QInt32Storage", "QUInt8Storage", "QUInt4x2Storage", "QUInt2x4Storage"])
_SUPPORTED_DTYPES = ", ".join(sorted(_E))
# Python 2's name for the module, which protocol 2 pickles still write.
_MODULE_ALIASES = {"__builtin__": "builtins"}


def _refuse_global(module: str, name: str) -> WeightsError:
    if module == "torch" and name in _UNSUPPORTED_DTYPES:
        return WeightsError(f"tensor dtype torch.{name} is not supported: expected one of "
                            f"{_SUPPORTED_DTYPES}")
    if module == "torch" and name in _QUANTIZED_STORAGES:
        return WeightsError(f"quantized tensors (torch.{name}) are not supported: expected one of "
                            f"{_SUPPORTED_DTYPES}")
    if _MODULE_ALIASES.get(module, module) == "builtins" and name == "frozenset":
        return _frozenset_refusal()
    msg = (f"refusing pickle global {module}.{name}: a state dict needs only "
           "collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_parameter "
           "and torch storage types, its metadata only bytes, set, complex, bytearray, "
           "torch.Size and torch.device, and nothing in a weights file is run")
    if module.startswith(("torch.nn", "__main__", "torchvision")):
        msg += ("; this looks like a whole pickled model (torch.save(model)): "
                "save model.state_dict() instead")
    return WeightsError(msg)


# --------------------------------------------------------------------------
# The restricted pickle interpreter
# --------------------------------------------------------------------------

PersistentLoad = Callable[[Any], Any]


class _Unpickler:
    """A pickle VM for the opcodes ``torch.save`` emits (protocols 2-5 subset).

    ``data`` is any object indexable like bytes (bytes or an mmap). Memo, stack and
    marks behave as in CPython's pickle; globals resolve only through _ALLOWED.
    """

    def __init__(self, data: Any, start: int, end: int, persistent_load: PersistentLoad,
                 what: str):
        self.data, self.pos, self.end = data, start, end
        self.persistent_load, self.what = persistent_load, what
        self.stack: List[Any] = []
        self.metastack: List[List[Any]] = []
        self.memo: Dict[int, Any] = {}
        self.op_pos = start
        # A pickler numbers memo slots in order, so no legitimate index exceeds
        # the number of opcodes, which is at most the pickle's length.
        self.max_memo = end - start

    # -- helpers --------------------------------------------------------
    def fail(self, msg: str) -> WeightsError:
        return WeightsError(f"{self.what}: {msg} (pickle byte {self.op_pos})")

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise self.fail(f"expected {n} more bytes, found {self.end - self.pos} (truncated pickle)")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def uint(self, fmt: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def line(self) -> str:
        limit = min(self.end, self.pos + 512)
        nl = self.data.find(b"\n", self.pos, limit)
        if nl < 0:
            raise self.fail("expected a newline-terminated name in GLOBAL, found none")
        raw = self.data[self.pos:nl]
        self.pos = nl + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"GLOBAL name is not UTF-8: {raw[:60]!r}") from None

    def text(self, n: int) -> str:
        raw = self.take(n)
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise self.fail(f"string is not valid UTF-8: {raw[:60]!r}") from None

    def pop(self) -> Any:
        if not self.stack:
            raise self.fail("stack underflow")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise self.fail("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> List[Any]:
        if not self.metastack:
            raise self.fail("expected a MARK on the stack, found none")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def memo_index(self, i: int) -> int:
        if i > self.max_memo:
            raise self.fail(f"memo index {i} out of range (pickle has {self.max_memo} bytes)")
        return i

    # -- main loop ------------------------------------------------------
    def load(self) -> Tuple[Any, int]:
        """Run to STOP; returns (object, position after STOP)."""
        data = self.data
        while True:
            if self.pos >= self.end:
                raise self.fail("expected a STOP opcode, found the end of the data")
            self.op_pos = self.pos
            op = data[self.pos]
            self.pos += 1
            handler = _DISPATCH.get(op)
            if handler is None:
                raise self.fail(f"unsupported pickle opcode {bytes([op])!r}")
            if handler(self):
                break
        if self.metastack or len(self.stack) != 1:
            raise self.fail(f"STOP expects exactly one object on the stack, found "
                            f"{len(self.stack)} (and {len(self.metastack)} open MARKs)")
        return self.stack[0], self.pos

    # -- opcodes --------------------------------------------------------
    def op_proto(self) -> None:
        v = self.take(1)[0]
        if v > 5:
            raise self.fail(f"expected pickle protocol <= 5, found {v}")

    def op_frame(self) -> None:
        self.take(8)   # framing is an I/O hint; the opcodes follow inline

    def op_stop(self) -> bool:
        return True

    def op_mark(self) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    def op_pop(self) -> None:
        self.pop()

    def op_pop_mark(self) -> None:
        self.pop_mark()

    def op_dup(self) -> None:
        self.stack.append(self.top())

    def op_none(self) -> None:
        self.stack.append(None)

    def op_true(self) -> None:
        self.stack.append(True)

    def op_false(self) -> None:
        self.stack.append(False)

    def op_binint(self) -> None:
        self.stack.append(self.uint("<i"))

    def op_binint1(self) -> None:
        self.stack.append(self.take(1)[0])

    def op_binint2(self) -> None:
        self.stack.append(self.uint("<H"))

    def op_long1(self) -> None:
        n = self.take(1)[0]
        self.stack.append(int.from_bytes(self.take(n), "little", signed=True))

    def op_long4(self) -> None:
        n = self.uint("<i")
        if n < 0 or n > 1024:
            raise self.fail(f"LONG4 of {n} bytes: expected at most 1024")
        self.stack.append(int.from_bytes(self.take(n), "little", signed=True))

    def op_binfloat(self) -> None:
        self.stack.append(self.uint(">d"))

    def op_binunicode(self) -> None:
        self.stack.append(self.text(self.uint("<I")))

    def op_short_binunicode(self) -> None:
        self.stack.append(self.text(self.take(1)[0]))

    def op_binunicode8(self) -> None:
        self.stack.append(self.text(self.uint("<Q")))

    # Python 2 str: torch.load decodes these as UTF-8.
    def op_binstring(self) -> None:
        n = self.uint("<i")
        self.stack.append(self.text(n))

    def op_short_binstring(self) -> None:
        self.stack.append(self.text(self.take(1)[0]))

    def op_binbytes(self) -> None:
        self.stack.append(self.take(self.uint("<I")))

    def op_short_binbytes(self) -> None:
        self.stack.append(self.take(self.take(1)[0]))

    def op_binbytes8(self) -> None:
        self.stack.append(self.take(self.uint("<Q")))

    def op_empty_tuple(self) -> None:
        self.stack.append(())

    # pop_mark replaces self.stack, so pop before touching the stack.
    def op_tuple(self) -> None:
        items = self.pop_mark()
        self.stack.append(tuple(items))

    def op_tuple1(self) -> None:
        a = self.pop()
        self.stack.append((a,))

    def op_tuple2(self) -> None:
        b, a = self.pop(), self.pop()
        self.stack.append((a, b))

    def op_tuple3(self) -> None:
        c, b, a = self.pop(), self.pop(), self.pop()
        self.stack.append((a, b, c))

    def op_empty_list(self) -> None:
        self.stack.append([])

    def op_list(self) -> None:
        items = self.pop_mark()
        self.stack.append(items)

    def op_append(self) -> None:
        v = self.pop()
        lst = self.top()
        if type(lst) is not list:
            raise self.fail(f"APPEND to {_describe(lst)}, expected a list")
        lst.append(v)

    def op_appends(self) -> None:
        items = self.pop_mark()
        lst = self.top()
        if type(lst) is not list:
            raise self.fail(f"APPENDS to {_describe(lst)}, expected a list")
        lst.extend(items)

    def op_empty_dict(self) -> None:
        self.stack.append({})

    def op_empty_set(self) -> None:
        self.stack.append(set())

    def op_additems(self) -> None:
        items = self.pop_mark()
        target = self.top()
        if type(target) is not set:
            raise self.fail(f"ADDITEMS to {_describe(target)}, expected a set")
        try:
            target.update(_flat_items(items, "set"))
        except WeightsError as e:
            raise self.fail(str(e)) from None

    def op_frozenset(self) -> None:
        raise self.fail(str(_frozenset_refusal()))

    def op_bytearray8(self) -> None:
        self.stack.append(bytearray(self.take(self.uint("<Q"))))

    def _set_items(self, d: Any, items: List[Any], opname: str) -> None:
        if type(d) is not dict:
            raise self.fail(f"{opname} on {_describe(d)}, expected a dict")
        if len(items) % 2:
            raise self.fail(f"{opname} with an odd number ({len(items)}) of keys and values")
        for i in range(0, len(items), 2):
            try:
                _check_key(items[i])
            except WeightsError as e:
                raise self.fail(str(e)) from None
            d[items[i]] = items[i + 1]

    def op_dict(self) -> None:
        items = self.pop_mark()
        d: dict = {}
        self._set_items(d, items, "DICT")
        self.stack.append(d)

    def op_setitem(self) -> None:
        v = self.pop()
        k = self.pop()
        self._set_items(self.top(), [k, v], "SETITEM")

    def op_setitems(self) -> None:
        items = self.pop_mark()
        self._set_items(self.top(), items, "SETITEMS")

    def _global(self, module: str, name: str) -> None:
        obj = _ALLOWED.get((_MODULE_ALIASES.get(module, module), name))
        if obj is None:
            raise self.fail(str(_refuse_global(module, name)))
        self.stack.append(obj)

    def op_global(self) -> None:
        module = self.line()
        name = self.line()
        self._global(module, name)

    def op_stack_global(self) -> None:
        name, module = self.pop(), self.pop()
        if type(module) is not str or type(name) is not str:
            raise self.fail(f"STACK_GLOBAL expects two strs, found {_describe(module)}, {_describe(name)}")
        self._global(module, name)

    def op_reduce(self) -> None:
        args = self.pop()
        fn = self.pop()
        if not isinstance(fn, _Callable):
            raise self.fail(f"REDUCE calls {_describe(fn)}, which is not an allowed function")
        if type(args) is not tuple:
            raise self.fail(f"REDUCE of {fn.qualname}: expected an argument tuple, found {_describe(args)}")
        try:
            self.stack.append(fn.fn(args, self))
        except WeightsError as e:
            raise self.fail(str(e)) from None

    def op_build(self) -> None:
        self.pop()   # the state
        target = self.top()
        # OrderedDict state is its instance attributes (state_dict()._metadata,
        # the module versions); they are not weights, so they are dropped.
        if type(target) is not dict:
            raise self.fail(f"BUILD on {_describe(target)}; only a state dict's attributes may be set")

    def op_binpersid(self) -> None:
        pid = self.pop()
        try:
            self.stack.append(self.persistent_load(pid))
        except WeightsError as e:
            raise self.fail(str(e)) from None

    def op_binput(self) -> None:
        self.memo[self.memo_index(self.take(1)[0])] = self.top()

    def op_long_binput(self) -> None:
        self.memo[self.memo_index(self.uint("<I"))] = self.top()

    def op_memoize(self) -> None:
        self.memo[len(self.memo)] = self.top()

    def _get(self, i: int) -> None:
        if i not in self.memo:
            raise self.fail(f"memo index {i} was never stored")
        self.stack.append(self.memo[i])

    def op_binget(self) -> None:
        self._get(self.take(1)[0])

    def op_long_binget(self) -> None:
        self._get(self.uint("<I"))


_DISPATCH: Dict[int, Callable[[_Unpickler], Optional[bool]]] = {
    0x80: _Unpickler.op_proto, 0x95: _Unpickler.op_frame, ord("."): _Unpickler.op_stop,
    ord("("): _Unpickler.op_mark, ord("0"): _Unpickler.op_pop, ord("1"): _Unpickler.op_pop_mark,
    ord("2"): _Unpickler.op_dup, ord("N"): _Unpickler.op_none, 0x88: _Unpickler.op_true,
    0x89: _Unpickler.op_false, ord("J"): _Unpickler.op_binint, ord("K"): _Unpickler.op_binint1,
    ord("M"): _Unpickler.op_binint2, 0x8A: _Unpickler.op_long1, 0x8B: _Unpickler.op_long4,
    ord("G"): _Unpickler.op_binfloat, ord("X"): _Unpickler.op_binunicode,
    0x8C: _Unpickler.op_short_binunicode, 0x8D: _Unpickler.op_binunicode8,
    ord("T"): _Unpickler.op_binstring, ord("U"): _Unpickler.op_short_binstring,
    ord("B"): _Unpickler.op_binbytes, ord("C"): _Unpickler.op_short_binbytes,
    0x8E: _Unpickler.op_binbytes8, ord(")"): _Unpickler.op_empty_tuple,
    ord("t"): _Unpickler.op_tuple, 0x85: _Unpickler.op_tuple1, 0x86: _Unpickler.op_tuple2,
    0x87: _Unpickler.op_tuple3, ord("]"): _Unpickler.op_empty_list, ord("l"): _Unpickler.op_list,
    ord("a"): _Unpickler.op_append, ord("e"): _Unpickler.op_appends,
    ord("}"): _Unpickler.op_empty_dict, ord("d"): _Unpickler.op_dict,
    0x8F: _Unpickler.op_empty_set, 0x90: _Unpickler.op_additems,
    0x91: _Unpickler.op_frozenset, 0x96: _Unpickler.op_bytearray8,
    ord("s"): _Unpickler.op_setitem, ord("u"): _Unpickler.op_setitems,
    ord("c"): _Unpickler.op_global, 0x93: _Unpickler.op_stack_global,
    ord("R"): _Unpickler.op_reduce, ord("b"): _Unpickler.op_build,
    ord("Q"): _Unpickler.op_binpersid, ord("q"): _Unpickler.op_binput,
    ord("r"): _Unpickler.op_long_binput, 0x94: _Unpickler.op_memoize,
    ord("h"): _Unpickler.op_binget, ord("j"): _Unpickler.op_long_binget,
}


def _no_persistent_ids(pid: Any) -> Any:
    raise WeightsError(f"unexpected persistent id {_describe(pid)} in a header pickle")


# --------------------------------------------------------------------------
# From the unpickled object to arrays
# --------------------------------------------------------------------------

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def _is_tensor_dict(obj: Any) -> bool:
    return type(obj) is dict and all(
        type(k) is str and isinstance(v, _TensorRef) for k, v in obj.items())


def _as_state_dict(obj: Any, where: str) -> Dict[str, _TensorRef]:
    """The state dict in the unpickled object: the object itself, or the obvious
    entry of a training checkpoint such as {"state_dict": sd, "epoch": 3}."""
    if type(obj) is not dict:
        raise WeightsError(f"{where}: expected a state dict (a dict of name -> tensor), "
                           f"found {_describe(obj)}")
    if _is_tensor_dict(obj):
        return obj
    found = [k for k in _WRAPPER_KEYS if k in obj and _is_tensor_dict(obj[k])]
    if len(found) == 1:
        return obj[found[0]]
    if len(found) > 1:
        raise WeightsError(f"{where}: expected one state dict, found several candidates: {found}")
    k, v = next((k, v) for k, v in obj.items()
                if type(k) is not str or not isinstance(v, _TensorRef))
    if type(k) is not str:
        raise WeightsError(f"{where}: expected a state dict with str keys, found key {_describe(k)}")
    raise WeightsError(f"{where}: expected a state dict (name -> tensor), but {k[:80]!r} maps to "
                       f"{_describe(v)}, and no 'state_dict' or 'model' entry holds one")


def _c_contiguous(size: Tuple[int, ...], stride: Tuple[int, ...]) -> bool:
    expected = 1
    for s, st in zip(reversed(size), reversed(stride)):
        if s != 1 and st != expected:
            return False
        expected *= s
    return True


class _Materializer:
    """Turns _TensorRefs into NumPy arrays once the storages' bytes are read.

    A tensor that is exactly its float32 storage takes that buffer as is (no copy);
    every other view, including a second name for the same storage, is copied.
    """

    def __init__(self, buffers: Dict[str, np.ndarray], order: str, budget: int):
        self.buffers, self.order, self.budget = buffers, order, budget
        self.claimed: set = set()

    def raw(self, s: _StorageRef) -> np.ndarray:
        if s.root is not None:
            base = self.buffers[s.root.key]
            start = s.root_offset * s.elem.size
            return base[start:start + s.numel * s.elem.size]
        return self.buffers[s.key]

    def array(self, name: str, t: _TensorRef) -> np.ndarray:
        out_bytes = t.numel * (4 if t.elem.bf16 or t.elem.code in ("f2", "f8") else t.elem.size)
        if out_bytes > self.budget:
            raise WeightsError(
                f"tensor {name[:80]!r} of shape {t.size} would need {out_bytes} bytes, more than this "
                f"file's size allows ({_OUTPUT_FACTOR}x the file + {_OUTPUT_SLACK >> 20} MiB): "
                "its views expand the stored data")
        self.budget -= out_bytes
        dt = t.elem.np_dtype(self.order)
        raw = self.raw(t.storage)
        n = raw.nbytes // dt.itemsize
        typed = raw[:n * dt.itemsize].view(dt)
        root_key = (t.storage.root or t.storage).key
        if t.numel == 0:
            arr = np.empty(t.size, dt)
        elif (t.offset == 0 and t.numel == n and t.storage.root is None
              and root_key not in self.claimed and _c_contiguous(t.size, t.stride)):
            self.claimed.add(root_key)
            arr = typed.reshape(t.size)
        else:
            # Strides of size-1 dimensions never move; zero them so a huge (unused)
            # value cannot overflow the byte stride.
            strides = tuple(0 if s == 1 else st * dt.itemsize for s, st in zip(t.size, t.stride))
            view = np.lib.stride_tricks.as_strided(typed[t.offset:], shape=t.size,
                                                   strides=strides, writeable=False)
            arr = np.array(view, order="C")
        return _to_output(arr, t.elem)

    def run(self, sd: Dict[str, _TensorRef]) -> Dict[str, np.ndarray]:
        return {k: self.array(k, t) for k, t in sd.items()}


def _budget(file_size: int) -> int:
    return _OUTPUT_FACTOR * file_size + _OUTPUT_SLACK


def _readinto_exact(f: Any, offset: int, nbytes: int, what: str) -> np.ndarray:
    """Reads straight into a fresh buffer: the only copy of the data that is made."""
    buf = np.empty(nbytes, np.uint8)
    view = memoryview(buf)
    f.seek(offset)
    got = 0
    while got < nbytes:
        k = f.readinto(view[got:got + _CHUNK * 16])
        if not k:
            raise WeightsError(f"{what}: expected {nbytes} bytes at offset {offset}, "
                               f"found only {got} before the end of the file")
        got += k
    return buf


# --------------------------------------------------------------------------
# Zip archives (PyTorch checkpoints and .npz)
# --------------------------------------------------------------------------

@dataclass
class _Member:
    info: zipfile.ZipInfo
    name: str
    data_offset: int
    size: int        # bytes on disk


_DRIVE = re.compile(r"^[A-Za-z]:")


def _check_member_name(name: str) -> None:
    if not name or "\x00" in name:
        raise WeightsError(f"zip member name {name!r}: expected a non-empty name without NUL")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise WeightsError(f"zip member {name!r}: expected a relative path, found an absolute one")
    if ".." in re.split(r"[/\\]", name):
        raise WeightsError(f"zip member {name!r}: expected a path inside the archive, found '..'")


def _declared_entry_count(f: Any, file_size: int) -> Optional[int]:
    """The member count the end-of-central-directory record states (zip64 aware),
    or None when it cannot be found; zipfile itself parses entries until the
    directory's byte size is used up, so one corrupted length field can make it
    silently skip members."""
    tail_len = min(file_size, 22 + 65535)
    f.seek(file_size - tail_len)
    tail = f.read(tail_len)
    at = len(tail) - 22
    if tail[at:at + 4] != b"PK\x05\x06" or tail[at + 20:at + 22] != b"\0\0":
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    count = struct.unpack("<H", tail[at + 10:at + 12])[0]
    if count != 0xFFFF:
        return count
    loc = at - 20      # zip64 locator, then the zip64 record it points to
    if loc < 0 or tail[loc:loc + 4] != b"PK\x06\x07":
        return None
    (rec_offset,) = struct.unpack("<Q", tail[loc + 8:loc + 16])
    f.seek(rec_offset)
    rec = f.read(56)
    if len(rec) < 40 or rec[:4] != b"PK\x06\x06":
        return None
    return struct.unpack("<Q", rec[32:40])[0]


def _zip_members(f: Any, zf: zipfile.ZipFile, file_size: int, *,
                 stored_only: bool) -> Dict[str, _Member]:
    """Checks the central directory against the local headers: names, methods,
    sizes, and that no two members share bytes (which would multiply memory)."""
    declared = _declared_entry_count(f, file_size)
    if declared != len(zf.infolist()):
        raise WeightsError(f"zip central directory: the end record declares {declared} members, "
                           f"{len(zf.infolist())} were found")
    members: Dict[str, _Member] = {}
    spans: List[Tuple[int, int, str]] = []
    for info in zf.infolist():
        name = info.orig_filename
        _check_member_name(name)
        if name in members:
            raise WeightsError(f"zip member {name!r} appears more than once")
        if info.flag_bits & 0x1:
            raise WeightsError(f"zip member {name!r} is encrypted")
        if stored_only and info.compress_type != zipfile.ZIP_STORED:
            raise WeightsError(f"zip member {name!r}: expected a stored (uncompressed) member as "
                               f"torch.save writes, found compression method {info.compress_type}")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise WeightsError(f"zip member {name!r}: stored with size {info.file_size} but "
                               f"occupies {info.compress_size} bytes")
        f.seek(info.header_offset)
        header = f.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise WeightsError(f"zip member {name!r}: expected a local file header at offset "
                               f"{info.header_offset}, found {header[:4]!r}")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        local_name = f.read(name_len)
        central = name.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        if local_name != central:
            raise WeightsError(f"zip member {name!r}: local header names it {local_name[:80]!r}")
        data_offset = info.header_offset + 30 + name_len + extra_len
        end = data_offset + info.compress_size
        if end > file_size:
            raise WeightsError(f"zip member {name!r}: expected {info.compress_size} bytes at "
                               f"offset {data_offset}, past the end of the file ({file_size})")
        members[name] = _Member(info, name, data_offset, info.compress_size)
        spans.append((info.header_offset, end, name))
    spans.sort()
    limit = getattr(zf, "start_dir", file_size)
    for (s0, e0, n0), (s1, _, n1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise WeightsError(f"zip members {n0!r} and {n1!r} overlap")
    if spans and spans[-1][1] > limit:
        raise WeightsError(f"zip member {spans[-1][2]!r} overlaps the central directory")
    return members


def _crc_check(m: _Member, data: Any) -> None:
    if _crc32(data) & 0xFFFFFFFF != m.info.CRC:
        raise WeightsError(f"zip member {m.name!r}: CRC-32 mismatch, the content is corrupted")


def _read_member(f: Any, m: _Member) -> np.ndarray:
    buf = _readinto_exact(f, m.data_offset, m.size, f"zip member {m.name!r}")
    _crc_check(m, buf)
    return buf


def _read_members_checked(f: Any, wanted: Dict[str, _Member]) -> Dict[str, np.ndarray]:
    """Reads members into fresh buffers and checks their CRC-32s. For big files
    the checksum of one member runs on a second thread while the next is read
    (zlib and zlib-ng release the GIL), which hides most of its cost."""
    total = sum(m.size for m in wanted.values())
    buffers: Dict[str, np.ndarray] = {}
    if total < (32 << 20):
        for key, m in wanted.items():
            buffers[key] = _read_member(f, m)
        return buffers
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = []
        for key, m in sorted(wanted.items(), key=lambda km: km[1].data_offset):
            buffers[key] = _readinto_exact(f, m.data_offset, m.size, f"zip member {m.name!r}")
            pending.append((m, pool.submit(_crc32, buffers[key])))
        for m, crc in pending:
            if crc.result() & 0xFFFFFFFF != m.info.CRC:
                raise WeightsError(f"zip member {m.name!r}: CRC-32 mismatch, the content is corrupted")
    return buffers


def _crc_stream(f: Any, m: _Member) -> None:
    f.seek(m.data_offset)
    crc, left = 0, m.size
    while left:
        chunk = f.read(min(left, _CHUNK))
        if not chunk:
            raise WeightsError(f"zip member {m.name!r} is truncated")
        crc = _crc32(chunk, crc)
        left -= len(chunk)
    if crc & 0xFFFFFFFF != m.info.CRC:
        raise WeightsError(f"zip member {m.name!r}: CRC-32 mismatch, the content is corrupted")


def _read_zip(f: Any, path: str, file_size: int) -> Dict[str, np.ndarray]:
    with zipfile.ZipFile(f) as zf:
        names = [i.orig_filename for i in zf.infolist()]
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            marker = _torchscript_marker(names)
            if marker is not None:
                raise WeightsError(f"{path!r}: a TorchScript archive (torch.jit.save; it has {marker[:80]!r}), "
                                   "which is not supported: load it with torch.jit.load and save its "
                                   "state_dict() with torch.save")
            return _read_torch_zip(f, zf, path, file_size)
        # No members at all is an empty .npz, as np.savez and write_state_dict({}) write it.
        if all(n.endswith(".npy") for n in names):
            return _read_npz(f, zf, path, file_size)
        raise WeightsError(
            f"{path!r}: a zip archive that is neither a PyTorch checkpoint (<folder>/data.pkl) "
            f"nor an .npz (.npy members only); found members {names[:8]}")


def _torchscript_marker(names: List[str]) -> Optional[str]:
    """The member that shows a torch.jit.save archive: it has data.pkl as torch.save's
    does, but also constants.pkl and the module's code/ (deflated, unlike the rest)."""
    for n in names:
        parts = n.split("/")
        if len(parts) >= 2 and (parts[1] == "code"
                                or (len(parts) == 2 and parts[1] == "constants.pkl")):
            return n
    return None


def _read_torch_zip(f: Any, zf: zipfile.ZipFile, path: str, file_size: int) -> Dict[str, np.ndarray]:
    members = _zip_members(f, zf, file_size, stored_only=True)
    prefixes = [n[:-len("/data.pkl")] for n in members
                if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(prefixes) != 1:
        raise WeightsError(f"{path!r}: expected exactly one '<folder>/data.pkl' in the archive, "
                           f"found {len(prefixes)} among {list(members)[:8]}")
    prefix = prefixes[0]
    outside = [n for n in members if not n.startswith(prefix + "/")]
    if outside:
        raise WeightsError(f"{path!r}: expected every member inside '{prefix}/', found {outside[:4]}")

    pkl = members[f"{prefix}/data.pkl"]
    data_pkl = _read_member(f, pkl).tobytes()
    order = "<"
    bo = members.get(f"{prefix}/byteorder")
    if bo is not None:
        value = _read_member(f, bo).tobytes()
        if value not in (b"little", b"big"):
            raise WeightsError(f"{path!r}: byteorder member: expected 'little' or 'big', found {value[:20]!r}")
        order = "<" if value == b"little" else ">"

    storages: Dict[str, _StorageRef] = {}

    def persistent_load(pid: Any) -> _StorageRef:
        # ('storage', storage_type, key, location, numel)
        if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
            raise WeightsError(f"persistent id: expected ('storage', type, key, location, numel), "
                               f"found {_describe(pid)}")
        _, stype, key, location, numel = pid
        if not isinstance(stype, _StorageType):
            raise WeightsError(f"persistent id: expected a storage type, found {_describe(stype)}")
        if type(key) is not str or type(location) is not str:
            raise WeightsError("persistent id: expected str key and location, found "
                               f"{_describe(key)}, {_describe(location)}")
        numel = _int_field(numel, f"storage {key[:40]!r} numel")
        member = members.get(f"{prefix}/data/{key}")
        if member is None:
            raise WeightsError(f"storage {key[:40]!r}: expected member '{prefix}/data/{key[:40]}', "
                               "found none")
        if member.size != numel * stype.elem.size:
            raise WeightsError(f"storage {key[:40]!r}: declared {numel} {stype.elem.name} elements "
                               f"({numel * stype.elem.size} bytes), but its member holds {member.size} bytes")
        known = storages.get(key)
        if known is None:
            known = storages[key] = _StorageRef(key, stype.elem, numel)
        elif known.elem is not stype.elem or known.numel != numel:
            raise WeightsError(f"storage {key[:40]!r} is declared twice with different types or sizes")
        return known

    obj, end = _Unpickler(data_pkl, 0, len(data_pkl), persistent_load,
                          f"{path!r} {prefix}/data.pkl").load()
    if end != len(data_pkl):
        raise WeightsError(f"{path!r}: data.pkl has {len(data_pkl) - end} bytes after STOP")
    sd = _as_state_dict(obj, repr(path))

    needed = {t.storage.key for t in sd.values()}
    buffers = _read_members_checked(f, {k: members[f"{prefix}/data/{k}"] for k in needed})
    done = {pkl.name} | ({bo.name} if bo else set()) | {f"{prefix}/data/{k}" for k in needed}
    for m in members.values():
        if m.name not in done:
            _crc_stream(f, m)
    return _Materializer(buffers, order, _budget(file_size)).run(sd)


def _read_npy_header(zf: zipfile.ZipFile, m: _Member) -> Tuple[int, np.dtype, int]:
    """(header length, dtype, data bytes) of one .npz member, checked before np.load."""
    fmt = np.lib.format
    with zf.open(m.info) as fp:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fp)
        else:
            raise WeightsError(f"member {m.name!r}: expected .npy format 1.0 or 2.0, found {version}")
        header_len = fp.tell()
    if dtype.hasobject:
        raise WeightsError(f"member {m.name!r}: an object array (it would need pickle); "
                           "expected numeric arrays")
    if dtype.fields is not None or dtype.kind not in "biufc":
        raise WeightsError(f"member {m.name!r}: expected a numeric array, found dtype {dtype}")
    nbytes = dtype.itemsize
    for s in shape:
        nbytes *= s
    return header_len, dtype, nbytes


def _read_npz(f: Any, zf: zipfile.ZipFile, path: str, file_size: int) -> Dict[str, np.ndarray]:
    members = _zip_members(f, zf, file_size, stored_only=False)
    total = 0
    for m in members.values():
        if m.info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise WeightsError(f"member {m.name!r}: expected stored or deflated, found "
                               f"compression method {m.info.compress_type}")
        header_len, _, nbytes = _read_npy_header(zf, m)
        if header_len + nbytes != m.info.file_size:
            raise WeightsError(f"member {m.name!r}: its header implies {header_len + nbytes} bytes, "
                               f"the member holds {m.info.file_size}")
        total += m.info.file_size
    if total > max(_NPZ_INFLATE_FACTOR * file_size, _OUTPUT_SLACK):
        raise WeightsError(f"{path!r}: members would inflate to {total} bytes from a "
                           f"{file_size}-byte file; refusing")
    f.seek(0)
    out: Dict[str, np.ndarray] = {}
    try:
        with np.load(f, allow_pickle=False) as npz:
            for key in npz.files:
                out[key] = npz[key]
    except WeightsError:
        raise
    except Exception as e:   # numpy's and zipfile's errors for corrupt members
        raise WeightsError(f"{path!r}: unreadable .npz member ({type(e).__name__}: {e})") from e
    for key, arr in out.items():
        dtype = np.dtype(np.float32) if arr.dtype.kind == "f" else arr.dtype.newbyteorder("=")
        # np.load keeps a member's Fortran order (np.savez of a transposed array).
        if arr.dtype != dtype or not arr.flags.c_contiguous:
            with np.errstate(over="ignore", invalid="ignore"):
                out[key] = arr.astype(dtype, order="C")
    return out


# --------------------------------------------------------------------------
# Legacy (pre-1.6) PyTorch checkpoints
# --------------------------------------------------------------------------

def _read_legacy(f: Any, path: str, file_size: int) -> Dict[str, np.ndarray]:
    # Layout: pickle(magic) pickle(protocol) pickle(sys_info) pickle(object)
    # pickle(storage keys), then per key: <q element count> + raw little-endian bytes.
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        def unpickle(pos: int, what: str, pl: PersistentLoad = _no_persistent_ids) -> Tuple[Any, int]:
            return _Unpickler(mm, pos, file_size, pl, f"{path!r} {what}").load()

        magic, pos = unpickle(0, "magic number")
        if magic != _LEGACY_MAGIC or type(magic) is not int:
            raise WeightsError(f"{path!r}: expected the PyTorch legacy magic number "
                               f"{_LEGACY_MAGIC:#x}, found {_describe(magic)}")
        proto, pos = unpickle(pos, "protocol version")
        if proto != _LEGACY_PROTOCOL or type(proto) is not int:
            raise WeightsError(f"{path!r}: expected legacy protocol version {_LEGACY_PROTOCOL}, "
                               f"found {_describe(proto)}")
        sys_info, pos = unpickle(pos, "sys_info")
        if type(sys_info) is not dict:
            raise WeightsError(f"{path!r}: expected a sys_info dict, found {_describe(sys_info)}")

        roots: Dict[str, _StorageRef] = {}
        views: Dict[str, _StorageRef] = {}

        def persistent_load(pid: Any) -> _StorageRef:
            if type(pid) is tuple and pid and pid[0] == "module":
                raise WeightsError("the file holds a whole pickled model (persistent id 'module'); "
                                   "expected a state dict: save model.state_dict() instead")
            # ('storage', storage_type, root_key, location, numel, view_metadata)
            if type(pid) is not tuple or len(pid) != 6 or pid[0] != "storage":
                raise WeightsError("persistent id: expected ('storage', type, key, location, numel, "
                                   f"view), found {_describe(pid)}")
            _, stype, key, location, numel, view = pid
            if not isinstance(stype, _StorageType):
                raise WeightsError(f"persistent id: expected a storage type, found {_describe(stype)}")
            if type(key) is not str or type(location) is not str:
                raise WeightsError("persistent id: expected str key and location, found "
                                   f"{_describe(key)}, {_describe(location)}")
            numel = _int_field(numel, f"storage {key[:40]!r} numel")
            root = roots.get(key)
            if root is None:
                root = roots[key] = _StorageRef(key, stype.elem, numel)
            elif root.elem is not stype.elem or root.numel != numel:
                raise WeightsError(f"storage {key[:40]!r} is declared twice with different types or sizes")
            if view is None:
                return root
            if type(view) is not tuple or len(view) != 3 or type(view[0]) is not str:
                raise WeightsError(f"storage view: expected (key, offset, size), found {_describe(view)}")
            vkey = view[0]
            off = _int_field(view[1], "storage view offset")
            vsize = _int_field(view[2], "storage view size")
            if off + vsize > numel:
                raise WeightsError(f"storage view {vkey[:40]!r} [{off}, {off + vsize}) exceeds its "
                                   f"storage of {numel} elements")
            known = views.get(vkey)
            if known is None:
                known = views[vkey] = _StorageRef(vkey, stype.elem, vsize, root=root, root_offset=off)
            elif known.root is not root or known.root_offset != off or known.numel != vsize:
                raise WeightsError(f"storage view {vkey[:40]!r} is declared twice differently")
            return known

        obj, pos = unpickle(pos, "main pickle", persistent_load)
        keys, pos = unpickle(pos, "storage key list")
        if type(keys) is not list or not all(type(k) is str for k in keys):
            raise WeightsError(f"{path!r}: expected a list of storage keys, found {_describe(keys)}")
        if len(set(keys)) != len(keys):
            raise WeightsError(f"{path!r}: the storage key list repeats a key")
        offsets: Dict[str, int] = {}
        for key in keys:
            root = roots.get(key)
            if root is None:
                raise WeightsError(f"{path!r}: storage key {key[:40]!r} is listed but no tensor uses it")
            count_raw = mm[pos:pos + 8]
            if len(count_raw) != 8:
                raise WeightsError(f"{path!r}: expected an 8-byte element count for storage "
                                   f"{key[:40]!r} at offset {pos}, found the end of the file")
            (count,) = struct.unpack("<q", count_raw)
            if count != root.numel:
                raise WeightsError(f"{path!r}: storage {key[:40]!r}: declared {root.numel} elements, "
                                   f"its data says {count}")
            nbytes = count * root.elem.size
            if pos + 8 + nbytes > file_size:
                raise WeightsError(f"{path!r}: storage {key[:40]!r}: expected {nbytes} bytes at "
                                   f"offset {pos + 8}, past the end of the file ({file_size})")
            offsets[key] = pos + 8
            pos += 8 + nbytes
        missing = [k for k in roots if k not in offsets]
        if missing:
            raise WeightsError(f"{path!r}: storage {missing[0][:40]!r} is used but has no data")
        if pos != file_size:
            raise WeightsError(f"{path!r}: expected the file to end after the last storage at "
                               f"offset {pos}, found {file_size - pos} more bytes")
    sd = _as_state_dict(obj, repr(path))
    buffers: Dict[str, np.ndarray] = {}
    for t in sd.values():
        root = t.storage.root or t.storage
        if root.key not in buffers:
            buffers[root.key] = _readinto_exact(f, offsets[root.key], root.numel * root.elem.size,
                                                f"storage {root.key[:40]!r}")
    return _Materializer(buffers, "<", _budget(file_size)).run(sd)


# --------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------

_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U64": 8, "I32": 4,
                "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "C64": 8}


@dataclass
class _StEntry:
    name: str
    dtype: str
    shape: Tuple[int, ...]
    start: int
    end: int


def _unique_pairs(pairs: List[Tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise WeightsError(f"safetensors header names {k[:80]!r} twice")
        out[k] = v
    return out


def _st_header(f: Any, path: str, file_size: int) -> Tuple[int, List[_StEntry]]:
    """Validates the header the way the format demands, so that whatever the
    safetensors package is then given cannot fail in a surprising way."""
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_SAFETENSORS_HEADER:
        raise WeightsError(f"{path!r}: safetensors header claims {n} bytes, more than the "
                           f"{MAX_SAFETENSORS_HEADER}-byte limit")
    if n > file_size - 8:
        raise WeightsError(f"{path!r}: safetensors header claims {n} bytes, past the end of the "
                           f"{file_size}-byte file")
    raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_pairs)
    except (UnicodeDecodeError, ValueError) as e:
        if isinstance(e, WeightsError):
            raise
        raise WeightsError(f"{path!r}: safetensors header is not UTF-8 JSON ({e})") from None
    if type(header) is not dict:
        raise WeightsError(f"{path!r}: safetensors header: expected a JSON object, found {_describe(header)}")
    entries: List[_StEntry] = []
    for name, info in header.items():
        if name == "__metadata__":
            if type(info) is not dict or not all(type(v) is str for v in info.values()):
                raise WeightsError(f"{path!r}: __metadata__: expected an object of strings")
            continue
        where = f"{path!r}: tensor {name[:80]!r}"
        if type(info) is not dict:
            raise WeightsError(f"{where}: expected an object, found {_describe(info)}")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _ST_ITEMSIZE:
            raise WeightsError(f"{where}: expected a dtype among {sorted(_ST_ITEMSIZE)}, "
                               f"found {_describe(dtype)}")
        if type(shape) is not list or len(shape) > _MAX_NDIM:
            raise WeightsError(f"{where}: expected a shape list, found {_describe(shape)}")
        shape_t = tuple(_int_field(s, f"{where} shape") for s in shape)
        if type(offsets) is not list or len(offsets) != 2:
            raise WeightsError(f"{where}: expected data_offsets [start, end], found {_describe(offsets)}")
        start = _int_field(offsets[0], f"{where} data_offsets")
        end = _int_field(offsets[1], f"{where} data_offsets")
        if end < start:
            raise WeightsError(f"{where}: data_offsets end {end} < start {start}")
        nbytes = _ST_ITEMSIZE[dtype]
        for s in shape_t:
            nbytes *= s
        if nbytes > _I64_MAX:
            raise WeightsError(f"{where}: shape {shape_t} of {dtype} overflows 64 bits")
        if nbytes != end - start:
            raise WeightsError(f"{where}: shape {shape_t} of {dtype} needs {nbytes} bytes, "
                               f"data_offsets span {end - start}")
        entries.append(_StEntry(name, dtype, shape_t, start, end))
    data_len = file_size - 8 - n
    pos = 0
    for e in sorted(entries, key=lambda e: (e.start, e.end)):
        if e.start != pos:
            kind = "overlaps the previous tensor" if e.start < pos else "leaves a gap"
            raise WeightsError(f"{path!r}: tensor {e.name[:80]!r} at [{e.start}, {e.end}) {kind} "
                               f"(expected it to start at {pos})")
        pos = e.end
    if pos != data_len:
        raise WeightsError(f"{path!r}: tensors cover {pos} bytes, but the data section holds "
                           f"{data_len} ({'trailing bytes' if pos < data_len else 'truncated'})")
    return n, entries


def _read_safetensors(f: Any, path: str, file_size: int) -> Dict[str, np.ndarray]:
    n, entries = _st_header(f, path, file_size)
    out: Dict[str, np.ndarray] = {}
    try:
        from safetensors import safe_open

        with safe_open(path, framework="np") as sf:
            for e in entries:
                if e.dtype == "BF16":
                    # NumPy has no bfloat16, so the package cannot hand it over;
                    # the header check above already fixed where its bytes are.
                    raw = _readinto_exact(f, 8 + n + e.start, e.end - e.start, f"tensor {e.name[:80]!r}")
                    arr = raw.view("<u2").reshape(e.shape)
                    out[e.name] = _to_output(arr, _E["bfloat16"])
                    continue
                arr = sf.get_tensor(e.name)
                if arr.shape != e.shape:
                    raise WeightsError(f"tensor {e.name[:80]!r}: expected shape {e.shape}, got {arr.shape}")
                if e.dtype in ("F16", "F64"):
                    arr = _to_output(arr, _E["float16" if e.dtype == "F16" else "float64"])
                elif e.dtype == "BOOL":
                    arr = arr.view(np.uint8).astype(np.bool_)
                out[e.name] = np.asarray(arr, order="C")
    except WeightsError:
        raise
    except BaseException as e:
        # SafetensorError and friends; a Rust panic arrives as pyo3's PanicException,
        # a BaseException, which the header check should make impossible.
        if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
            raise
        raise WeightsError(f"{path!r}: unreadable safetensors file ({type(e).__name__}: {e})") from e
    return out


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------

# What malformed content makes Python's own machinery raise, besides our checks.
_CONTENT_ERRORS = (struct.error, KeyError, IndexError, ValueError, TypeError, OverflowError,
                   MemoryError, EOFError, RecursionError, NotImplementedError, OSError,
                   BufferError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error)


def _detect(head: bytes, size: int) -> str:
    if size >= 9 and head[8:9] == b"{" and head[5:8] == b"\0\0\0":
        return "safetensors"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "legacy"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return "unknown"


def read_state_dict(path: "os.PathLike[str] | str") -> Dict[str, np.ndarray]:
    """Reads a state dict (name -> array) from a PyTorch checkpoint (zip or legacy),
    a .safetensors or an .npz file, recognised by content.

    Floating-point tensors come back as C-contiguous float32 arrays (float16,
    bfloat16 and float64 converted); other tensors keep their type. A training
    checkpoint {"state_dict": sd, ...} or {"model": sd, ...} is unwrapped.
    Raises FileNotFoundError for a missing file and WeightsError for any content
    that is not a plain state dict; never imports torch or runs pickled code.
    """
    path = os.fsdecode(os.fspath(path))
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            head = f.read(512)
            kind = _detect(head, size)
            if kind == "unknown" and size >= 8 and path.lower().endswith(".safetensors"):
                kind = "safetensors"   # let the header check say what is wrong
            f.seek(0)
            if kind == "zip":
                return _read_zip(f, path, size)
            if kind == "legacy":
                return _read_legacy(f, path, size)
            if kind == "safetensors":
                return _read_safetensors(f, path, size)
            if size == 0:
                raise WeightsError(f"{path!r}: the file is empty")
            if kind == "npy":
                raise WeightsError(f"{path!r}: a single .npy array, not a state dict; expected .npz")
            if kind == "tar":
                raise WeightsError(f"{path!r}: the pre-0.4 tar checkpoint format is not supported; "
                                   "re-save it with a current torch")
            raise WeightsError(
                f"{path!r}: unrecognised format: expected a PyTorch checkpoint (zip 'PK\\x03\\x04' "
                "or legacy pickle '\\x80\\x02'), a .safetensors (8-byte length + '{') or an .npz; "
                f"found first bytes {head[:12]!r}")
        except WeightsError:
            raise
        except _CONTENT_ERRORS as e:
            raise WeightsError(f"{path!r}: malformed weights file ({type(e).__name__}: {e})") from e


# -- writing ---------------------------------------------------------------

_SUFFIXES = (".pth", ".pt", ".safetensors", ".npz")


def _as_float32(name: Any, value: Any) -> np.ndarray:
    if type(name) is not str:
        raise TypeError(f"state dict keys must be str, found {type(name).__name__}: {name!r}")
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().float().numpy()    # a torch tensor, duck-typed
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"state dict entry {name!r}: expected a real numeric array, "
                        f"found dtype {arr.dtype}")
    return np.asarray(arr, dtype="<f4", order="C")  # ascontiguousarray would make 0-d 1-d


def _contiguous_strides(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    # torch's convention: zero-size dimensions count as 1.
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


def _p_int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _p_str(s: str) -> bytes:
    raw = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _p_tuple(items: Iterable[bytes]) -> bytes:
    items = list(items)
    if not items:
        return b")"
    if len(items) <= 3:
        return b"".join(items) + bytes([0x84 + len(items)])
    return b"(" + b"".join(items) + b"t"


def _torch_pickle(arrays: Mapping[str, np.ndarray]) -> bytes:
    """data.pkl for an OrderedDict of float32 tensors, storage i in data/i."""
    ordered_dict = b"ccollections\nOrderedDict\n"
    out = [b"\x80\x02", ordered_dict, b")R"]
    if arrays:
        out.append(b"(")
        for i, (key, a) in enumerate(arrays.items()):
            pid = _p_tuple([_p_str("storage"), b"ctorch\nFloatStorage\n", _p_str(str(i)),
                            _p_str("cpu"), _p_int(a.size)])
            args = b"(" + pid + b"Q" + _p_int(0) + _p_tuple(_p_int(s) for s in a.shape) \
                + _p_tuple(_p_int(s) for s in _contiguous_strides(a.shape)) \
                + b"\x89" + ordered_dict + b")R" + b"t"
            out += [_p_str(key), b"ctorch._utils\n_rebuild_tensor_v2\n", args, b"R"]
        out.append(b"u")
    out.append(b".")
    return b"".join(out)


_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_PAD_EXTRA_ID = 0x4C41   # private extra-field id, ignored by every reader


def _aligned_info(header_offset: int, name: str, nbytes: int,
                  align: int = 64) -> Tuple[zipfile.ZipInfo, bool]:
    """The ZipInfo (and zip64 flag to open it with) of a stored member whose local
    header starts at header_offset and whose data then starts on an `align`-byte
    boundary; the padding goes in the local header's extra field."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = nbytes
    # zipfile's own test (ZipFile._open_to_write), which allows 5% for compression:
    # its local header then carries a 20-byte zip64 extra field.
    zip64 = nbytes * 1.05 > zipfile.ZIP64_LIMIT
    base = header_offset + 30 + len(name.encode("utf-8")) + (20 if zip64 else 0)
    pad = -base % align
    if pad:
        if pad < 4:
            pad += align
        info.extra = struct.pack("<HH", _PAD_EXTRA_ID, pad - 4) + bytes(pad - 4)
    return info, zip64


def _zip_put(zf: zipfile.ZipFile, fh: Any, name: str, data: Any, align: int = 64) -> None:
    """Writes one stored member aligned as torch's writer does, so the file can be
    memory-mapped."""
    view = memoryview(data).cast("B")
    info, zip64 = _aligned_info(fh.tell(), name, view.nbytes, align)
    with zf.open(info, "w", force_zip64=zip64) as w:
        w.write(view)


def _write_torch_zip(arrays: Dict[str, np.ndarray], fh: Any) -> None:
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        _zip_put(zf, fh, "archive/data.pkl", _torch_pickle(arrays))
        _zip_put(zf, fh, "archive/byteorder", b"little")
        for i, a in enumerate(arrays.values()):
            _zip_put(zf, fh, f"archive/data/{i}", a.reshape(-1))
        _zip_put(zf, fh, "archive/version", b"3\n")


def _write_npz(arrays: Dict[str, np.ndarray], fh: Any) -> None:
    # np.savez's layout, written directly: np.savez(file, **arrays) would clash
    # with keys named "file" or "allow_pickle".
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, a in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_EPOCH)
            with zf.open(info, "w", force_zip64=True) as w:
                np.lib.format.write_array(w, a, allow_pickle=False)


def _write_safetensors(arrays: Dict[str, np.ndarray], tmp: str) -> None:
    from safetensors.numpy import save_file

    # safetensors makes its file 0600 whatever the umask: the mode a plain open() gives
    # (as the .pth and .npz files get) is put back, so that a file meant for others (a
    # shared folder, Dask workers running as another user) stays readable to them.
    with open(tmp, "xb"):
        pass
    mode = stat.S_IMODE(os.stat(tmp).st_mode)
    save_file(arrays, tmp)
    os.chmod(tmp, mode)


def output_format(path: "os.PathLike[str] | str") -> str:
    """The suffix write_state_dict goes by ('.pth', '.pt', '.safetensors', '.npz'), or a
    ValueError for a path it cannot write: for callers that check before reading."""
    path = os.fsdecode(os.fspath(path))
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"cannot tell the format from {path!r}: expected a suffix among "
                         f"{', '.join(_SUFFIXES)}")
    return suffix


def write_state_dict(state_dict: Mapping[str, Any], path: "os.PathLike[str] | str") -> None:
    """Writes a state dict as float32, in the format the suffix names: .pth/.pt
    (PyTorch's zip format, loadable by torch.load(weights_only=True)), .safetensors
    or .npz. The file is replaced atomically. Raises ValueError for another suffix
    and TypeError for non-str keys or non-numeric values."""
    path = os.fsdecode(os.fspath(path))
    suffix = output_format(path)
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a mapping of name -> array, found {type(state_dict).__name__}")
    arrays = {k: _as_float32(k, v) for k, v in state_dict.items()}
    tmp = f"{path}.{secrets.token_hex(6)}.tmp"
    try:
        if suffix == ".safetensors":
            _write_safetensors(arrays, tmp)
        else:
            with open(tmp, "xb") as fh:
                (_write_npz if suffix == ".npz" else _write_torch_zip)(arrays, fh)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename == tmp:
            # The temporary name is ours: the error names the path the caller gave.
            raise type(exc)(exc.errno, exc.strerror, path) from None
        raise
