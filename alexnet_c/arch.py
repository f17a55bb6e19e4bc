"""The two AlexNet layouts, as data: what the C network, the summary, repr and
state-dict checks all read. Mirrors acn_variant_spec in csrc/cpu/net.c."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

VARIANTS = ("torchvision", "original")


@dataclass(frozen=True)
class Conv:
    in_c: int
    out_c: int
    k: int
    stride: int
    pad: int
    pool_after: bool


@dataclass(frozen=True)
class Spec:
    name: str
    convs: Tuple[Conv, ...]
    avgpool: bool          # AdaptiveAvgPool2d((6, 6)) after the features
    dropout: bool          # Dropout before fc1 and fc2 (identity at inference)
    log_softmax: bool      # forward ends with F.log_softmax(x, dim=1)
    conv_indices: Tuple[int, ...]   # positions of the convs inside `features`
    fc_indices: Tuple[int, ...]     # positions of the Linears inside `classifier`
    fc_in: int = 256 * 6 * 6
    fc_hidden: int = 4096


SPECS: Dict[str, Spec] = {
    "torchvision": Spec(
        "torchvision",
        (Conv(3, 64, 11, 4, 2, True), Conv(64, 192, 5, 1, 2, True),
         Conv(192, 384, 3, 1, 1, False), Conv(384, 256, 3, 1, 1, False),
         Conv(256, 256, 3, 1, 1, True)),
        avgpool=True, dropout=True, log_softmax=False,
        conv_indices=(0, 3, 6, 8, 10), fc_indices=(1, 4, 6)),
    "original": Spec(
        "original",
        (Conv(3, 96, 11, 4, 0, True), Conv(96, 256, 5, 1, 2, True),
         Conv(256, 384, 3, 1, 1, False), Conv(384, 384, 3, 1, 1, False),
         Conv(384, 256, 3, 1, 1, True)),
        avgpool=False, dropout=False, log_softmax=True,
        conv_indices=(0, 3, 6, 8, 10), fc_indices=(0, 2, 4)),
}


def spec(variant: str) -> Spec:
    try:
        return SPECS[variant]
    except KeyError:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}") from None


def weight_names(variant: str) -> List[str]:
    """State-dict keys in the order the C network takes them."""
    s = spec(variant)
    names = []
    for i in s.conv_indices:
        names += [f"features.{i}.weight", f"features.{i}.bias"]
    for i in s.fc_indices:
        names += [f"classifier.{i}.weight", f"classifier.{i}.bias"]
    return names


def weight_shapes(variant: str, num_classes: int) -> Dict[str, Tuple[int, ...]]:
    s = spec(variant)
    shapes: List[Tuple[int, ...]] = []
    for c in s.convs:
        shapes += [(c.out_c, c.in_c, c.k, c.k), (c.out_c,)]
    fcs = [(s.fc_hidden, s.fc_in), (s.fc_hidden, s.fc_hidden), (num_classes, s.fc_hidden)]
    for o, i in fcs:
        shapes += [(o, i), (o,)]
    return dict(zip(weight_names(variant), shapes))


def conv_out(n: int, k: int, stride: int, pad: int) -> int:
    return (n + 2 * pad - k) // stride + 1


def feature_size(variant: str, h: int, w: int) -> Tuple[int, int]:
    """Spatial size after the last max-pool (before any avg-pool); < 1 if too small."""
    for c in spec(variant).convs:
        h, w = conv_out(h, c.k, c.stride, c.pad), conv_out(w, c.k, c.stride, c.pad)
        if h < 1 or w < 1:
            return h, w
        if c.pool_after:
            h, w = conv_out(h, 3, 2, 0), conv_out(w, 3, 2, 0)
            if h < 1 or w < 1:
                return h, w
    return h, w
