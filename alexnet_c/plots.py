"""Figures: conv1 kernels (the 2012 paper's figure 3), feature maps, per-layer times.

matplotlib is imported on first use. Figures are drawn on an Agg canvas directly,
without pyplot, so the caller's pyplot backend and figure registry are untouched.
Each function saves to `path` (format from its suffix, PNG by default) and returns
the path; with path=None it returns the matplotlib Figure instead (Jupyter shows it).
"""
from __future__ import annotations

import importlib
import math
import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import arch

__all__ = ["plot_filters", "plot_feature_maps", "plot_layer_times"]

PathArg = Optional[Union[str, "os.PathLike[str]"]]


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install alexnet_c[plot]") from e
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Any, path: PathArg) -> Any:
    if path is None:
        return fig
    out = os.fspath(path)
    fig.savefig(out, dpi=100, bbox_inches="tight", facecolor="white")
    return out


def _grid(n: int) -> Tuple[int, int]:
    """(rows, cols): 16 columns when they divide n (the paper shows 96 kernels as
    6 x 16), otherwise close to square."""
    cols = 16 if n % 16 == 0 and n >= 32 else max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if not hi > lo:         # a constant (or NaN) filter: show mid-grey, not a crash
        return np.full(a.shape, 0.5)
    return (a - lo) / (hi - lo)


def _mosaic(tiles: np.ndarray, rows: int, cols: int, gap: int = 1,
            fill: float = 1.0) -> np.ndarray:
    """tiles (N, h, w, C) -> one (rows*(h+gap)-gap, cols*(w+gap)-gap, C) image."""
    n, h, w, c = tiles.shape
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, c), fill, dtype=np.float64)
    for i in range(n):
        r, q = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, q * (w + gap):q * (w + gap) + w] = tiles[i]
    return out


def plot_filters(model: Any, path: PathArg = None) -> Any:
    """conv1's kernels as colour patches, each min-max normalised on its own."""
    w = np.asarray(model.state_dict()["features.0.weight"], dtype=np.float64)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"features.0.weight must have shape (OC, 3, K, K), got {w.shape}")
    tiles = np.stack([_minmax(f) for f in w]).transpose(0, 2, 3, 1)   # (OC, K, K, 3)
    rows, cols = _grid(len(tiles))
    fig = _figure(cols * 0.55, rows * 0.55 + 0.4)
    ax = fig.add_axes((0, 0, 1, 0.92 if rows > 2 else 0.85))
    ax.imshow(_mosaic(tiles, rows, cols), interpolation="nearest")
    ax.set_axis_off()
    oc, ic, kh, kw = w.shape
    fig.suptitle(f"conv1 kernels ({oc} x {ic} x {kh} x {kw})", fontsize=9)
    return _finish(fig, path)


def _features_layers(variant: str) -> List[Tuple[str, Optional[arch.Conv]]]:
    """(kind, conv) for each module of `features`, in index order."""
    out: List[Tuple[str, Optional[arch.Conv]]] = []
    for c in arch.spec(variant).convs:
        out += [("Conv2d", c), ("ReLU", None)] + ([("MaxPool2d", None)] if c.pool_after else [])
    return out


def _layer_index(variant: str, layer: Union[int, str]) -> int:
    """An int index into `features`, or "conv1".."conv5", or the max-pools after conv1,
    conv2 and conv5 by AlexNet.profile's names ("pool1", "pool2", "pool5"), or
    "features.<i>"."""
    n = len(_features_layers(variant))
    conv_indices = arch.spec(variant).conv_indices
    pools = {f"pool{k + 1}": conv_indices[k] + 2
             for k, c in enumerate(arch.spec(variant).convs) if c.pool_after}
    if isinstance(layer, str):
        name = layer.strip().lower()
        k = name[4:]
        if name.startswith("conv") and k.isdigit() and 1 <= int(k) <= len(conv_indices):
            return conv_indices[int(k) - 1]
        if name in pools:
            return pools[name]
        if name.startswith("features.") and name[9:].isdigit():
            layer = int(name[9:])
        else:
            raise ValueError(f"layer must be an index into features (0..{n - 1}), "
                             f"'conv1'..'conv{len(conv_indices)}', {', '.join(map(repr, pools))} "
                             f"or 'features.<i>', got {layer!r}")
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"layer must be an int or str, got {type(layer).__name__}")
    if not 0 <= layer < n:
        raise ValueError(f"layer must be in [0, {n - 1}] (convs at {conv_indices}), got {layer}")
    return int(layer)


def _as_input(model: Any, image: Any) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.dtype != np.uint8:
        x = np.asarray(image, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[:2] != (1, 3):
            raise ValueError(f"a preprocessed image must have shape (3, H, W) or (1, 3, H, W), "
                             f"got {image.shape}")
        return x
    from .images import _crop_for, preprocess
    return preprocess(image, crop_size=_crop_for(model))[None]


def feature_maps(model: Any, image: Any, layer: Union[int, str]) -> np.ndarray:
    """Activations (C, H, W) after `features[layer]`, computed with alexnet_c's ops."""
    variant = model.variant
    stop = _layer_index(variant, layer)
    # Looked up at call time, so the ops can be swapped (or provided) after import.
    ac = importlib.import_module("alexnet_c")
    sd = model.state_dict()
    x = _as_input(model, image)
    for i, (kind, conv) in enumerate(_features_layers(variant)[:stop + 1]):
        if kind == "Conv2d":
            assert conv is not None
            x = ac.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"],
                          stride=conv.stride, padding=conv.pad)
        elif kind == "ReLU":
            x = ac.relu(x)
        else:
            x = ac.max_pool2d(x, 3, 2)
    return np.asarray(x)[0]


def plot_feature_maps(model: Any, image: Any, layer: Union[int, str], path: PathArg = None,
                      *, max_maps: int = 64) -> Any:
    """The first `max_maps` channels of features[layer]'s output, one panel each
    (each panel scaled to its own min/max)."""
    maps = feature_maps(model, image, layer)
    idx = _layer_index(model.variant, layer)
    kind = _features_layers(model.variant)[idx][0]
    shown = maps[:max(1, max_maps)]
    rows, cols = _grid(len(shown))
    fig = _figure(cols * 0.9, rows * 0.9 + 0.5)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.5 / (rows * 0.9 + 0.5),
                        wspace=0.05, hspace=0.05)
    for i, m in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(m, cmap="viridis", interpolation="nearest")
        ax.set_axis_off()
    c, h, w = maps.shape
    more = f", first {len(shown)}" if len(shown) < c else ""
    fig.suptitle(f"features[{idx}] {kind}: {c} x {h} x {w}{more}", fontsize=10)
    return _finish(fig, path)


def plot_layer_times(rows: Sequence[Tuple[str, float, float]], path: PathArg = None) -> Any:
    """Grouped bars of milliseconds per layer: alexnet_c vs PyTorch, with the ratio
    (PyTorch / alexnet_c, > 1 means alexnet_c is faster) above each pair."""
    rows = list(rows)
    if not rows:
        raise ValueError("plot_layer_times needs at least one (name, ours_ms, torch_ms) row")
    names, ours, theirs = [], [], []
    for r in rows:
        if len(r) != 3:
            raise ValueError(f"each row must be (layer name, ours_ms, torch_ms), got {r!r}")
        name, a, b = str(r[0]), float(r[1]), float(r[2])
        if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b < 0:
            raise ValueError(f"times must be finite and >= 0, got {r!r}")
        names.append(name)
        ours.append(a)
        theirs.append(b)
    x = np.arange(len(rows))
    fig = _figure(max(6.0, 0.7 * len(rows) + 2), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.4
    ax.bar(x - width / 2, ours, width, label="alexnet_c", color="tab:blue")
    ax.bar(x + width / 2, theirs, width, label="PyTorch", color="tab:orange")
    top = max(ours + theirs) or 1.0
    for xi, a, b in zip(x, ours, theirs):
        if a > 0:
            ax.text(xi, max(a, b) + 0.02 * top, f"{b / a:.2f}x", ha="center", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("ms")
    ax.set_ylim(0, top * 1.15)
    ax.set_title("Time per layer (lower is better; label: PyTorch / alexnet_c)", fontsize=10)
    ax.legend()
    return _finish(fig, path)
