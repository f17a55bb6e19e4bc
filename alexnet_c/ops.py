"""The ops of alexnet_c, with torch.nn.functional's semantics, on NumPy arrays.

Arguments are normalised here (ints or pairs, unbatched inputs, the device);
dtype conversion, shape checks and the arithmetic happen in C (alexnet_c._C).
Every op returns a new float32 array and never writes to its inputs.
"""
from __future__ import annotations

import math
import operator
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from . import _C

IntOrPair = Union[int, Sequence[int]]

_DEVICES = {"cpu": 0, "cpu:0": 0, "cuda": 1, "cuda:0": 1}


def device_code(device: str) -> int:
    try:
        return _DEVICES[str(device).lower()]
    except KeyError:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}") from None


_PRECISIONS = {"float32": False, "tf32": True}

# max|ours - torch float64| / max|torch float64| that each precision promises (the
# parity rule for float32; README's TF32 section for the tensor-core path).
PARITY_TOLERANCE = {"float32": 1e-4, "tf32": 5e-3}


def tf32_flag(precision: str) -> bool:
    """True for precision='tf32' (CUDA tensor cores, operands rounded to TF32), False for
    'float32' (strict float32, the default and the only mode of the CPU)."""
    try:
        return _PRECISIONS[precision]
    except (KeyError, TypeError):
        raise ValueError(f"precision must be 'float32' or 'tf32', got {precision!r}") from None


_INT32_MIN, _INT32_MAX = -2**31, 2**31 - 1


def _index(value, name: str, op: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}") from None


def _int(value, name: str, op: str) -> int:
    """An int argument for the C layer, which takes 32-bit ints: out of that range it is
    a ValueError naming it here (the C parser's OverflowError would name nothing)."""
    v = _index(value, name, op)
    if not _INT32_MIN <= v <= _INT32_MAX:
        raise ValueError(f"{op}: expected {name} within -2**31..2**31-1, got {v}")
    return v


def _pair(value: IntOrPair, name: str, op: str) -> Tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            return _int(value[0], name, op), _int(value[0], name, op)
        if len(value) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {tuple(value)!r}")
        return _int(value[0], name, op), _int(value[1], name, op)
    v = _int(value, name, op)
    return v, v


def _flag(value, name: str, op: str) -> bool:
    """A bool argument, as torch's parser takes it: bool (or NumPy's), nothing merely truthy."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _unbatched(x: np.ndarray, op: str) -> bool:
    """True for a (C, H, W) input, which PyTorch treats as a batch of one."""
    if x.ndim == 3:
        return True
    if x.ndim != 4:
        raise ValueError(f"{op}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape {x.shape}")
    return False


def _only_default(op: str, name: str, value, default) -> None:
    """torch.nn.functional's parameters that alexnet_c takes only at their default: they
    keep their positions (a positional call means what it means in PyTorch), and any
    other value is refused, never ignored."""
    if value != default:
        raise ValueError(f"{op}: {name}={value!r} is not supported (only {name}={default!r})")


def conv2d(input, weight, bias=None, stride: IntOrPair = 1, padding: Union[IntOrPair, str] = 0,
           dilation: IntOrPair = 1, groups: int = 1, *, device: str = "cpu", precision: str = "float32",
           _naive: bool = False) -> np.ndarray:
    """2-D convolution: input (N, C, H, W) or (C, H, W), weight (OC, C/groups, KH, KW);
    F.conv2d's arguments in its order.

    precision='tf32' (device='cuda', compute capability 8.0+) multiplies on tensor cores
    with input and weight rounded to TF32; see README for its tolerance."""
    x, w = _C.real_array(input, "conv2d", "input"), _C.real_array(weight, "conv2d", "weight")
    single = _unbatched(x, "conv2d")
    dh, dw = _pair(dilation, "dilation", "conv2d")
    sh, sw = _pair(stride, "stride", "conv2d")
    if isinstance(padding, str):
        if padding == "valid":
            ph = pw = 0
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError("conv2d: padding='same' needs stride 1, got stride "
                                 f"{(sh, sw)}")
            if w.ndim != 4:
                raise ValueError(f"conv2d: expected weight of shape (OC, C/groups, KH, KW), got shape {w.shape}")
            span_h, span_w = dh * (w.shape[2] - 1), dw * (w.shape[3] - 1)
            ph, pw = span_h // 2, span_w // 2
            extra_h, extra_w = span_h % 2, span_w % 2
            if extra_h or extra_w:
                # An odd span (even kernel, odd dilation) needs one more row/column after
                # than before, as PyTorch pads it.
                pad = [(0, 0)] * (x.ndim - 2) + [(0, extra_h), (0, extra_w)]
                x = np.pad(np.asarray(x, dtype=np.float32), pad)
        else:
            raise ValueError(f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        ph, pw = _pair(padding, "padding", "conv2d")
    groups = _int(groups, "groups", "conv2d")
    out = _C.conv2d(x[None] if single else x, w, bias, sh, sw, ph, pw, dh, dw, groups, device_code(device),
                    _naive, tf32_flag(precision))
    return out[0] if single else out


def relu(input, inplace: bool = False, *, device: str = "cpu") -> np.ndarray:
    """max(0, x) elementwise; NaN stays NaN. inplace=True is refused: an input array is
    never modified (use the returned one)."""
    _only_default("relu", "inplace", inplace, False)
    return _C.relu(input, device_code(device))


def max_pool2d(input, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
               return_indices: bool = False, *, device: str = "cpu"
               ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Max pooling; padding counts as -inf and NaN propagates, as in PyTorch. F.max_pool2d's
    arguments in its order.

    return_indices=True returns (output, indices): int64, for each maximum its place
    h * W + w in its input plane, the index PyTorch gives (the first of equal maxima,
    the last NaN of a window)."""
    x = _C.real_array(input, "max_pool2d", "input")
    dh, dw = _pair(dilation, "dilation", "max_pool2d")
    kh, kw = _pair(kernel_size, "kernel_size", "max_pool2d")
    sh, sw = (kh, kw) if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else _pair(stride, "stride", "max_pool2d")
    ph, pw = _pair(padding, "padding", "max_pool2d")
    single = _unbatched(x, "max_pool2d")
    res = _C.max_pool2d(x[None] if single else x, kh, kw, sh, sw, ph, pw, dh, dw,
                        _flag(ceil_mode, "ceil_mode", "max_pool2d"),
                        _flag(return_indices, "return_indices", "max_pool2d"), device_code(device))
    if not single:
        return res
    return (res[0][0], res[1][0]) if return_indices else res[0]


def adaptive_avg_pool2d(input, output_size, *, device: str = "cpu") -> np.ndarray:
    """Average pooling to a fixed output size (None keeps that input dimension)."""
    op = "adaptive_avg_pool2d"
    x = _C.real_array(input, op, "input")
    single = _unbatched(x, op)
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got {output_size!r}")
        oh = x.shape[-2] if output_size[0] is None else _int(output_size[0], "output_size", op)
        ow = x.shape[-1] if output_size[1] is None else _int(output_size[1], "output_size", op)
    else:
        oh = ow = _int(output_size, "output_size", op)
    out = _C.adaptive_avg_pool2d(x[None] if single else x, oh, ow, device_code(device))
    return out[0] if single else out


def linear(input, weight, bias=None, *, device: str = "cpu", precision: str = "float32",
           _naive: bool = False) -> np.ndarray:
    """input (..., in_features) @ weight.T + bias; weight (out_features, in_features).

    precision='tf32' (device='cuda') uses tensor cores above 16 rows; up to 16 rows the
    weight-streaming kernel runs, in float32, as it is bound by memory."""
    op = "linear"
    x, w = _C.real_array(input, op, "input"), _C.real_array(weight, op, "weight")
    if x.ndim == 0:
        raise ValueError("linear: expected input with at least 1 dimension, got a 0-d array")
    vector = w.ndim == 1   # a weight vector (in_features,), as torch takes it: one output, dropped
    if vector:
        w = w[None]
    if w.ndim != 2:
        raise ValueError(f"linear: expected weight of shape (out_features, in_features), got shape {w.shape}")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: expected input with last dimension {w.shape[1]} (weight shape {w.shape}), "
                         f"got input of shape {x.shape}")
    lead = x.shape[:-1]
    out_shape = lead if vector else lead + (w.shape[0],)
    b = None if bias is None else _C.real_array(bias, op, "bias")
    # The kernels add a (out_features,) bias; any other bias that broadcasts to the
    # output, as torch's addmm takes it, is added afterwards.
    late = b if b is not None and (vector or b.shape != (w.shape[0],)) else None
    # torch computes a 1-D input as the row (1, in_features), so a (1, out_features)
    # bias fits it too; the output keeps the input's shape.
    row_shape = (1,) + out_shape if x.ndim == 1 and not vector else out_shape
    if late is not None:
        try:
            fits = np.broadcast_shapes(late.shape, row_shape) == row_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"linear: expected bias of shape ({w.shape[0]},) or one that broadcasts to the "
                             f"output shape {out_shape}, got shape {late.shape}")
    out = _C.linear(x.reshape(math.prod(lead), x.shape[-1]), w, None if late is not None else b,
                    device_code(device), _naive, tf32_flag(precision)).reshape(row_shape)
    if late is not None:
        out += late.astype(np.float32, copy=False)
    return out.reshape(out_shape)


def softmax(input, dim: int = -1, *, device: str = "cpu") -> np.ndarray:
    """exp(x) / sum(exp(x)) along dim, with the maximum subtracted first."""
    return _C.softmax(input, _index(dim, "dim", "softmax"), False, device_code(device))


def log_softmax(input, dim: int = -1, *, device: str = "cpu") -> np.ndarray:
    """x - logsumexp(x) along dim, stable for large inputs."""
    return _C.softmax(input, _index(dim, "dim", "log_softmax"), True, device_code(device))
