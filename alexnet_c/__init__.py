"""alexnet_c: AlexNet inference in C (OpenMP on the CPU, CUDA on NVIDIA GPUs) on NumPy arrays.

    import alexnet_c as ac
    m = ac.load("alexnet.pth")          # or ac.AlexNet(), ac.alexnet(weights="IMAGENET1K_V1")
    logits = m(x)                       # x: (N, 3, H, W) NumPy array
"""
from __future__ import annotations

from typing import Tuple

from . import _C
from ._errors import WeightsError
from .model import AlexNet, load
from .ops import adaptive_avg_pool2d, conv2d, linear, log_softmax, max_pool2d, relu, softmax
# Eager: `from .summary import ...` inside model.__repr__ would otherwise rebind
# alexnet_c.summary to the submodule. summary.py imports only the stdlib and arch.
from .summary import summary, summary_string

__version__ = "0.1.0"

CudaOutOfMemoryError = _C.CudaOutOfMemoryError


def set_num_threads(n: int) -> None:
    """Threads every kernel uses from now on (default: OMP_NUM_THREADS or the core count)."""
    _C.set_num_threads(n)


def get_num_threads() -> int:
    return _C.get_num_threads()


def cuda_is_available() -> bool:
    """True when alexnet_c was built with CUDA and a usable GPU and driver are present."""
    return bool(_C.cuda_status()[0])


def cuda_unavailable_reason() -> str:
    """Why cuda_is_available() is False ('' when it is True)."""
    return _C.cuda_status()[1]


def cpu_isa() -> Tuple[str, str]:
    """(ISA the kernels use now, best ISA of this CPU): 'generic', 'avx2' or 'avx512'."""
    return _C.get_isa()


def alexnet(weights=None, *, progress: bool = True, num_classes: int = 1000, device: str = "cpu",
            precision: str = "float32", seed=None) -> AlexNet:
    """torchvision.models.alexnet's counterpart.

    weights=None gives a freshly initialised model; "IMAGENET1K_V1" or "DEFAULT"
    torchvision's pretrained file, from $TORCH_HOME/hub/checkpoints or downloaded
    there (progress bar on stderr, SHA-256 checked)."""
    if weights is None:
        return AlexNet(num_classes=num_classes, variant="torchvision", seed=seed, device=device,
                       precision=precision)
    from .hub import load_pretrained
    model = load(load_pretrained(weights, progress=progress), device=device, precision=precision)
    if num_classes != model.num_classes:
        raise ValueError(f"pretrained weights have {model.num_classes} classes, got num_classes={num_classes}")
    return model


_LAZY = {
    "preprocess": ("images", "preprocess"),
    "load_batch": ("images", "load_batch"),
    "iter_predict": ("images", "iter_predict"),
    "load_pretrained": ("hub", "load_pretrained"),
    "plot_layer_times": ("plots", "plot_layer_times"),
    "IMAGENET_CATEGORIES": ("categories", "IMAGENET_CATEGORIES"),
    "plot_filters": ("plots", "plot_filters"),
    "plot_feature_maps": ("plots", "plot_feature_maps"),
}


def __getattr__(name: str):
    # Optional features load on first use, so that `import alexnet_c` stays fast.
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    if name == "distributed":
        import importlib
        return importlib.import_module(".distributed", __name__)
    raise AttributeError(f"module 'alexnet_c' has no attribute {name!r}")


__all__ = [
    "AlexNet", "load", "alexnet", "WeightsError", "CudaOutOfMemoryError",
    "conv2d", "relu", "max_pool2d", "adaptive_avg_pool2d", "linear", "log_softmax", "softmax",
    "set_num_threads", "get_num_threads", "cuda_is_available", "cuda_unavailable_reason", "cpu_isa",
    "summary", "summary_string", "preprocess", "load_batch", "iter_predict", "load_pretrained",
    "IMAGENET_CATEGORIES", "plot_filters", "plot_feature_maps", "plot_layer_times",
]
