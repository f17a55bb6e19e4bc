"""AlexNet as a Python object around a C network (alexnet_c._C.Net).

The model holds each weight once, as a read-only float32 array that the C
network points into; a forward call is one C call, with the GIL released.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from . import _C, arch
from ._errors import WeightsError
from .ops import device_code, tf32_flag

_VARIANT_CODES = {"torchvision": 0, "original": 1}
_DEVICE_NAMES = {0: "cpu", 1: "cuda"}


def _to_numpy(value, name: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):   # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is a weights problem
        raise WeightsError(f"{name}: expected an array, got {type(value).__name__} ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise WeightsError(f"{name}: expected a real-valued array, got dtype {arr.dtype}")
    return arr


def infer_layout(names: Iterable[str]) -> Tuple[str, Optional[str]]:
    """(variant, prefix to strip) from state-dict keys; WeightsError if neither layout fits."""
    names = list(names)
    prefixes = [""]
    if names and all(n.startswith("module.") for n in names):
        prefixes.insert(0, "module.")   # saved from nn.DataParallel
    for prefix in prefixes:
        keys = {n[len(prefix):] for n in names}
        if "classifier.1.weight" in keys:
            return "torchvision", prefix
        if "classifier.0.weight" in keys:
            return "original", prefix
    raise WeightsError(
        "not an AlexNet state dict: expected 'classifier.1.weight' (torchvision layout) or "
        f"'classifier.0.weight' (original layout), got keys {sorted(names)[:12]}"
        + (" ..." if len(names) > 12 else ""))


def check_state_dict(arrays: Mapping[str, np.ndarray], variant: str) -> int:
    """num_classes of a complete, correctly shaped state dict; else WeightsError listing every problem."""
    expected_names = arch.weight_names(variant)
    last = expected_names[-2]
    if last not in arrays or np.ndim(arrays[last]) != 2:
        raise WeightsError(f"{variant} AlexNet state dict: expected {last!r} of shape (num_classes, 4096)")
    num_classes = int(arrays[last].shape[0])
    shapes = arch.weight_shapes(variant, num_classes)
    problems: List[str] = []
    missing = [n for n in expected_names if n not in arrays]
    unexpected = sorted(set(arrays) - set(expected_names))
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    for name in expected_names:
        if name in arrays and tuple(arrays[name].shape) != shapes[name]:
            problems.append(f"{name}: expected shape {shapes[name]}, got {tuple(arrays[name].shape)}")
    if num_classes < 1:
        problems.append(f"{last}: expected at least one class, got shape {tuple(arrays[last].shape)}")
    if problems:
        raise WeightsError(f"{variant} AlexNet state dict does not fit: " + "; ".join(problems))
    return num_classes


def _frozen_float32(arr: np.ndarray, copy: bool) -> np.ndarray:
    out = np.array(arr, dtype=np.float32, order="C", copy=True) if copy \
        else np.ascontiguousarray(arr, dtype=np.float32)
    out.flags.writeable = False
    return out


class AlexNet:
    """AlexNet inference in C.

    AlexNet(num_classes=1000, variant="torchvision", seed=None, device="cpu") is
    initialised like PyTorch's default (uniform in +-1/sqrt(fan_in) for weights
    and biases), seedable. Use from_state_dict() or alexnet_c.load() for
    trained weights.

    precision="tf32" (with device="cuda", compute capability 8.0+) runs the
    convolutions and the large-batch FC layers on tensor cores with TF32 operands;
    the default "float32" is the parity path.
    """

    def __init__(self, num_classes: int = 1000, variant: str = "torchvision", *,
                 seed: Optional[int] = None, device: str = "cpu", precision: str = "float32") -> None:
        arch.spec(variant)
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        rng = np.random.default_rng(seed)
        arrays: Dict[str, np.ndarray] = {}
        fan_in = 1
        for name, shape in arch.weight_shapes(variant, int(num_classes)).items():
            if name.endswith(".weight"):
                fan_in = math.prod(shape[1:])
            bound = np.float32(1.0 / math.sqrt(fan_in))
            values = rng.random(shape, dtype=np.float32)
            values *= np.float32(2.0) * bound
            values -= bound
            arrays[name] = values
        self._build(variant, int(num_classes), arrays, device, precision, copy=False)

    # -- construction ------------------------------------------------------

    def _build(self, variant: str, num_classes: int, arrays: Mapping[str, np.ndarray], device: str,
               precision: str, copy: bool) -> None:
        code, tf32 = device_code(device), tf32_flag(precision)
        weights = [_frozen_float32(arrays[n], copy) for n in arch.weight_names(variant)]
        self._variant = variant
        self._num_classes = num_classes
        self._net = _C.Net(_VARIANT_CODES[variant], num_classes, weights)
        if code != 0 or tf32:
            self._net.to_device(code, tf32)

    @classmethod
    def _from_arrays(cls, state_dict: Mapping[str, object], device: str, copy: bool,
                     precision: str = "float32") -> "AlexNet":
        if not isinstance(state_dict, Mapping):
            raise WeightsError(f"expected a mapping of name -> array, got {type(state_dict).__name__}")
        variant, prefix = infer_layout(state_dict.keys())
        arrays = {str(k)[len(prefix):]: _to_numpy(v, str(k)) for k, v in state_dict.items()}
        num_classes = check_state_dict(arrays, variant)
        model = cls.__new__(cls)
        model._build(variant, num_classes, arrays, device, precision, copy)
        return model

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, object], *, device: str = "cpu",
                        precision: str = "float32") -> "AlexNet":
        """A model from a mapping of name -> array-like (NumPy arrays, torch tensors, lists).

        The variant and num_classes are inferred from the names and shapes; the
        arrays are copied, so later changes to them do not reach the model."""
        return cls._from_arrays(state_dict, device, copy=True, precision=precision)

    # -- inference ---------------------------------------------------------

    def __call__(self, x) -> np.ndarray:
        """x: (N, 3, H, W) or (3, H, W), any real dtype and layout -> float32 (N, num_classes)."""
        return self._net.forward(x)

    forward = __call__

    def profile(self, x, repeat: int = 1) -> Dict[str, float]:
        """Milliseconds per stage of the CPU forward pass on x (conv1, pool1, ..., fc3),
        the median over `repeat` runs; convs and fc1/fc2 include their fused ReLU."""
        if repeat < 1:
            raise ValueError(f"profile: repeat must be >= 1, got {repeat}")
        runs = [self._net.profile(x)[1] for _ in range(repeat)]
        return {name: 1e3 * float(np.median([dict(r)[name] for r in runs])) for name, _ in runs[0]}

    def predict(self, x, topk: int = 5):
        """Top-k (category, probability) per image; x: image(s) or a preprocessed batch."""
        from . import images
        return images.predict(self, x, topk=topk)

    # -- state ----------------------------------------------------------------

    @property
    def variant(self) -> str:
        return self._variant

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def device(self) -> str:
        return _DEVICE_NAMES[self._net.device]

    @property
    def precision(self) -> str:
        """'float32', or 'tf32' for a CUDA model moved with precision='tf32'."""
        return "tf32" if self._net.tf32 else "float32"

    def state_dict(self) -> Dict[str, np.ndarray]:
        """name -> read-only float32 view of the weights, torchvision/original key names."""
        return {name: arr.view() for name, arr in zip(arch.weight_names(self._variant), self._net.weights)}

    def save(self, path) -> None:
        """Writes the weights; the format follows the suffix (.pth, .safetensors, .npz)."""
        from .weights import write_state_dict
        write_state_dict(self.state_dict(), path)

    def to(self, device: str, precision: Optional[str] = None) -> "AlexNet":
        """Moves the model to 'cpu' or 'cuda' (weights uploaded once); returns self.

        precision: 'float32' or 'tf32' (CUDA only); None keeps the model's precision
        on CUDA, and a move to the CPU is always float32. A move that fails leaves
        the model as it was."""
        code = device_code(device)
        tf32 = (code != 0 and bool(self._net.tf32)) if precision is None else tf32_flag(precision)
        self._net.to_device(code, tf32)
        return self

    def cpu(self) -> "AlexNet":
        return self.to("cpu")

    def cuda(self, precision: Optional[str] = None) -> "AlexNet":
        return self.to("cuda", precision)

    def eval(self) -> "AlexNet":
        """For PyTorch habits: inference is all this model does (dropout is identity)."""
        return self

    def parameters_count(self) -> int:
        return int(sum(a.size for a in self._net.weights))

    def __reduce__(self):
        return (_rebuild, (self._variant, self._num_classes, dict(self.state_dict()), self.device,
                           self.precision))

    def __repr__(self) -> str:
        from .summary import model_repr
        return model_repr(self)

    def _repr_html_(self) -> str:
        from .summary import summary_html
        return summary_html(self)


def _rebuild(variant: str, num_classes: int, state: Mapping[str, np.ndarray], device: str,
             precision: str = "float32") -> AlexNet:
    model = AlexNet._from_arrays(state, "cpu", copy=False)
    return model.to(device, precision) if device != "cpu" else model


def load(path, *, device: str = "cpu", precision: str = "float32") -> AlexNet:
    """An AlexNet from a weights file: PyTorch .pth (zip or legacy), .safetensors or .npz.

    No pickle code runs and torch is not imported; anything unusable raises WeightsError."""
    from .weights import read_state_dict
    state = read_state_dict(os.fspath(path))
    return AlexNet._from_arrays(state, device, copy=False, precision=precision)
