"""AlexNet as a Python object around a C network (alexnet_c._C.Net).

The model holds each weight once, as a read-only float32 array that the C
network points into; a forward call is one C call, with the GIL released.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from . import _C, arch
from ._errors import WeightsError
from .ops import _flag, device_code, tf32_flag

_VARIANT_CODES = {"torchvision": 0, "original": 1}
_DEVICE_NAMES = {0: "cpu", 1: "cuda"}


def _torch_to_numpy(tensor) -> np.ndarray:
    """A torch tensor's values, without importing torch; a dtype NumPy lacks (bfloat16,
    float8) goes through float32, as load_state_dict would cast it."""
    tensor = tensor.detach().cpu()
    try:
        return tensor.numpy()
    except TypeError:
        return tensor.float().numpy()


def _to_numpy(value, name: str) -> np.ndarray:
    try:
        if hasattr(value, "detach") and hasattr(value, "cpu"):   # a torch tensor
            value = _torch_to_numpy(value)
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is a weights problem
        raise WeightsError(f"{name}: expected an array, got {type(value).__name__} ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise WeightsError(f"{name}: expected a real-valued array, got dtype {arr.dtype}")
    return arr


def _named_values(state_dict: Mapping[str, object]) -> Dict[str, object]:
    """The mapping's values by parameter name, without the 'module.' that every key of an
    nn.DataParallel save carries; WeightsError for anything but a mapping with str keys."""
    if not isinstance(state_dict, Mapping):
        raise WeightsError(f"expected a mapping of name -> array, got {type(state_dict).__name__}")
    bad = [k for k in state_dict if not isinstance(k, str)]
    if bad:
        raise WeightsError(f"expected str keys (parameter names), got {type(bad[0]).__name__} key {bad[0]!r}")
    prefix = "module." if state_dict and all(k.startswith("module.") for k in state_dict) else ""
    return {k[len(prefix):]: v for k, v in state_dict.items()}


def infer_layout(names: Iterable[str]) -> str:
    """The variant whose keys these are ('module.' stripped); WeightsError if neither fits."""
    names = list(names)
    if "classifier.1.weight" in names:
        return "torchvision"
    if "classifier.0.weight" in names:
        return "original"
    raise WeightsError(
        "not an AlexNet state dict: expected 'classifier.1.weight' (torchvision layout) or "
        f"'classifier.0.weight' (original layout), got keys {sorted(names)[:12]}"
        + (" ..." if len(names) > 12 else ""))


def _mismatches(arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple], strict: bool = True
                ) -> Tuple[List[str], List[str], List[str]]:
    """(missing keys, unexpected keys, problems) of arrays against the expected shapes:
    every shape that does not fit, and with strict the missing and unexpected keys first."""
    missing = [n for n in shapes if n not in arrays]
    unexpected = sorted(set(arrays) - set(shapes))
    problems = [f"missing keys {missing}"] if strict and missing else []
    problems += [f"unexpected keys {unexpected}"] if strict and unexpected else []
    problems += [f"{name}: expected shape {shape}, got {tuple(arrays[name].shape)}"
                 for name, shape in shapes.items() if name in arrays and tuple(arrays[name].shape) != shape]
    return missing, unexpected, problems


def _as_arrays(state_dict: Mapping[str, object]) -> Dict[str, np.ndarray]:
    return {k: _to_numpy(v, k) for k, v in state_dict.items()}


def check_state_dict(arrays: Mapping[str, np.ndarray], variant: str) -> int:
    """num_classes of a complete, correctly shaped state dict; else WeightsError listing every problem."""
    expected_names = arch.weight_names(variant)
    last = expected_names[-2]
    if last not in arrays or np.ndim(arrays[last]) != 2:
        raise WeightsError(f"{variant} AlexNet state dict: expected {last!r} of shape (num_classes, 4096)")
    num_classes = int(arrays[last].shape[0])
    shapes = arch.weight_shapes(variant, num_classes)
    _, _, problems = _mismatches(arrays, shapes)
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


class IncompatibleKeys(NamedTuple):
    """What load_state_dict(strict=False) left out, as torch's return value names it."""
    missing_keys: List[str]
    unexpected_keys: List[str]


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
        state_dict = _named_values(state_dict)
        variant = infer_layout(state_dict)
        arrays = _as_arrays(state_dict)
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

    def named_parameters(self) -> Iterator[Tuple[str, np.ndarray]]:
        """(name, read-only float32 array) per weight and bias, in state-dict order."""
        return iter(self.state_dict().items())

    def parameters(self) -> Iterator[np.ndarray]:
        """The weights and biases, in state-dict order, as read-only float32 arrays."""
        return iter(self.state_dict().values())

    def load_state_dict(self, state_dict: Mapping[str, object], strict: bool = True) -> IncompatibleKeys:
        """Replaces the weights in place, as nn.Module.load_state_dict: the model keeps its
        variant, num_classes, device and precision, and the arrays are copied.

        strict=False loads the keys that fit and keeps the present weights for the rest;
        a shape that does not fit is an error either way. Returns (missing_keys,
        unexpected_keys); WeightsError lists every problem, and leaves the model as it was."""
        strict = _flag(strict, "strict", "load_state_dict")
        arrays = _as_arrays(_named_values(state_dict))
        missing, unexpected, problems = _mismatches(arrays, arch.weight_shapes(self._variant, self._num_classes),
                                                    strict)
        if problems:
            raise WeightsError(f"{self._variant} AlexNet ({self._num_classes} classes) cannot load this state "
                               "dict: " + "; ".join(problems))
        merged = {**self.state_dict(), **{k: v for k, v in arrays.items() if k not in unexpected}}
        fresh = AlexNet.__new__(AlexNet)
        fresh._build(self._variant, self._num_classes, merged, self.device, self.precision, copy=True)
        self._net = fresh._net
        return IncompatibleKeys(missing, unexpected)

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

    def train(self, mode: bool = True) -> "AlexNet":
        """train(False) is eval(); train(True) is refused, as this model only infers."""
        if mode:
            raise ValueError("alexnet_c runs inference only: train(True) is not supported "
                             "(eval() or train(False) is; dropout is identity)")
        return self

    @property
    def training(self) -> bool:
        """Always False, as after torch's eval()."""
        return False

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
