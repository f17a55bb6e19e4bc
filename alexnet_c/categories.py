"""ImageNet-1k category names, in the order of torchvision's AlexNet outputs.

`IMAGENET_CATEGORIES` is read from imagenet_classes.txt (generated once from
`torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]`) on first use,
so importing alexnet_c does not read the file.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Tuple

__all__ = ["IMAGENET_CATEGORIES", "imagenet_categories", "class_names"]

_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.txt")
_COUNT = 1000


@functools.lru_cache(maxsize=None)
def imagenet_categories() -> Tuple[str, ...]:
    with open(_FILE, encoding="utf-8") as f:
        names = tuple(line.rstrip("\n") for line in f)
    if len(names) != _COUNT:
        # A truncated install would silently mislabel every prediction after the cut.
        raise RuntimeError(f"{_FILE} has {len(names)} names, expected {_COUNT}")
    return names


def class_names(num_classes: int) -> Tuple[str, ...]:
    """ImageNet names for a 1000-class model, else "class_0", "class_1", ..."""
    if num_classes == _COUNT:
        return imagenet_categories()
    return tuple(f"class_{i}" for i in range(num_classes))


def __getattr__(name: str) -> Any:
    # PEP 562: the module attribute is computed (and the file read) on first access.
    if name == "IMAGENET_CATEGORIES":
        return imagenet_categories()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
