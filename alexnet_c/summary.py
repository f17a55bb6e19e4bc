"""Model summary (torchsummary's table), repr (nn.Module's) and an HTML table.

Everything here is computed from `arch.spec(model.variant)` and `model.num_classes`:
no forward pass, no weights, no torch. The default text is character-for-character
what torchsummary 1.5.1 prints for the equivalent nn.Module, so notebooks that used
`torchsummary.summary(net, (3, 224, 224))` read the same with alexnet_c.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

from . import arch

InputSize = Union[Sequence[int], Sequence[Sequence[int]]]

_RULE = "-" * 64
_DOUBLE_RULE = "=" * 64
_MB = 1024.0 ** 2
_BYTES_PER_VALUE = 4.0            # torchsummary assumes float32 everywhere

# torchvision builds ReLU(inplace=True); the "original" reference class uses ReLU().
_RELU_INPLACE = {"torchvision": True, "original": False}

# The features-block pooling and the avg-pool are fixed by the AlexNet layouts.
_POOL_K, _POOL_S = 3, 2
_AVGPOOL_OUT = (6, 6)
_DROPOUT_P = 0.5


@dataclass(frozen=True)
class Layer:
    """One leaf module, in the order torchsummary's forward hooks see them."""
    kind: str                   # torch class name: "Conv2d", "ReLU", ...
    where: str                  # attribute path inside the nn.Module, e.g. "features.3"
    shape: Tuple[int, ...]      # output shape of one sample (no batch dim)
    params: int
    macs: int                   # multiply-adds for one sample (conv and linear only)


def default_input_size(variant: str) -> Tuple[int, int, int]:
    """The input size each layout was designed for (torchvision 224, original 227)."""
    arch.spec(variant)  # validates the name
    return (3, 224, 224) if variant == "torchvision" else (3, 227, 227)


def _normalize_input_size(input_size: InputSize) -> Tuple[int, int, int]:
    # torchsummary also takes a one-element list of tuples (its multi-input form).
    if (isinstance(input_size, (list, tuple)) and len(input_size) == 1
            and isinstance(input_size[0], (list, tuple))):
        input_size = input_size[0]
    if not isinstance(input_size, (list, tuple)) or len(input_size) != 3:
        raise ValueError(f"input_size must be (C, H, W), got {input_size!r}")
    try:
        c, h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise TypeError(f"input_size must hold integers, got {input_size!r}") from None
    if any(int(v) != v for v in input_size):
        raise TypeError(f"input_size must hold integers, got {input_size!r}")
    if c != 3:
        raise ValueError(f"AlexNet takes 3 input channels, got input_size {(c, h, w)}")
    return c, h, w


def _min_side(variant: str) -> int:
    """Smallest H (or W) whose feature map after the last max-pool is non-empty."""
    n = 1
    while arch.feature_size(variant, n, n)[0] < 1:
        n += 1
    return n


def check_input_size(variant: str, input_size: InputSize) -> Tuple[int, int, int]:
    """(C, H, W) as ints, or ValueError naming what the variant accepts."""
    c, h, w = _normalize_input_size(input_size)
    fh, fw = arch.feature_size(variant, h, w)
    s = arch.spec(variant)
    if fh < 1 or fw < 1:
        m = _min_side(variant)
        raise ValueError(f"input too small for the {variant} layout: H and W must be >= {m}, "
                         f"got input_size {(c, h, w)}")
    if not s.avgpool and (fh, fw) != _AVGPOOL_OUT:
        # Without the adaptive avg-pool, fc1's 9216 inputs fix the feature map at 6x6.
        raise ValueError(f"the {variant} layout needs input 227x227 (a 6x6 map before its "
                         f"{s.fc_in}-input fc layer), got input_size {(c, h, w)} "
                         f"(feature map {fh}x{fw})")
    return c, h, w


def layers(variant: str, num_classes: int, input_size: InputSize) -> List[Layer]:
    """The leaf modules of the variant's nn.Module in forward order, with shapes."""
    s = arch.spec(variant)
    c, h, w = check_input_size(variant, input_size)
    out: List[Layer] = []
    idx = 0
    for conv in s.convs:
        h = arch.conv_out(h, conv.k, conv.stride, conv.pad)
        w = arch.conv_out(w, conv.k, conv.stride, conv.pad)
        params = conv.out_c * conv.in_c * conv.k * conv.k + conv.out_c
        macs = conv.out_c * h * w * conv.in_c * conv.k * conv.k
        out.append(Layer("Conv2d", f"features.{idx}", (conv.out_c, h, w), params, macs))
        out.append(Layer("ReLU", f"features.{idx + 1}", (conv.out_c, h, w), 0, 0))
        idx += 2
        if conv.pool_after:
            h, w = arch.conv_out(h, _POOL_K, _POOL_S, 0), arch.conv_out(w, _POOL_K, _POOL_S, 0)
            out.append(Layer("MaxPool2d", f"features.{idx}", (conv.out_c, h, w), 0, 0))
            idx += 1
        c = conv.out_c
    if s.avgpool:
        h, w = _AVGPOOL_OUT
        out.append(Layer("AdaptiveAvgPool2d", "avgpool", (c, h, w), 0, 0))
    fcs = [(s.fc_in, s.fc_hidden), (s.fc_hidden, s.fc_hidden), (s.fc_hidden, num_classes)]
    idx = 0
    for i, (fin, fout) in enumerate(fcs):
        if s.dropout and i < 2:
            out.append(Layer("Dropout", f"classifier.{idx}", (fin,), 0, 0))
            idx += 1
        out.append(Layer("Linear", f"classifier.{idx}", (fout,), fin * fout + fout, fin * fout))
        idx += 1
        if i < 2:
            out.append(Layer("ReLU", f"classifier.{idx}", (fout,), 0, 0))
            idx += 1
    return out


def _prod(xs: Sequence[int]) -> int:
    p = 1
    for x in xs:
        p *= x
    return p


@dataclass(frozen=True)
class _Totals:
    params: int
    input_mb: float
    activations_mb: float
    params_mb: float
    total_mb: float
    macs: int


def _totals(rows: List[Layer], input_size: Tuple[int, int, int], batch_size: int) -> _Totals:
    # torchsummary multiplies every shape by batch_size (-1 by default) and takes abs()
    # at the end; |batch| * sum gives the same floats. Activations count twice (values
    # and their gradients). The order of the float operations follows torchsummary's so
    # that the two-decimal rounding agrees in the last digit.
    b = abs(batch_size)
    input_mb = _prod(input_size) * b * _BYTES_PER_VALUE / _MB
    activations_mb = 2.0 * sum(_prod(r.shape) * b for r in rows) * _BYTES_PER_VALUE / _MB
    params = sum(r.params for r in rows)
    params_mb = params * _BYTES_PER_VALUE / _MB
    return _Totals(params, input_mb, activations_mb, params_mb,
                   params_mb + activations_mb + input_mb, sum(r.macs for r in rows))


def _model_fields(model: Any) -> Tuple[str, int]:
    try:
        return str(model.variant), int(model.num_classes)
    except AttributeError:
        raise TypeError("expected an alexnet_c.AlexNet (with .variant and .num_classes), "
                        f"got {type(model).__name__}") from None


def summary_string(model: Any, input_size: InputSize, batch_size: int = -1, *,
                   show_flops: bool = False,
                   device: Optional[str] = None) -> Tuple[str, Tuple[int, int]]:
    """torchsummary's text for `model` at `input_size` (C, H, W), and (total, trainable).

    With show_flops=True a "Mult-Adds" column (per sample; conv and linear layers) and
    the total mult-adds / GFLOPs (2 FLOPs per mult-add) per sample are added.
    device is accepted so that torchsummary calls (`device="cpu"`) port unchanged;
    the table does not depend on it.
    """
    if device is not None and str(device).lower() not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    variant, num_classes = _model_fields(model)
    size = check_input_size(variant, input_size)
    rows = layers(variant, num_classes, size)
    t = _totals(rows, size, batch_size)
    extra = 16 if show_flops else 0      # the Mult-Adds column: " {:>15}"
    rule, double = _RULE + "-" * extra, _DOUBLE_RULE + "=" * extra

    def row(name: str, shape: str, params: str, macs: str) -> str:
        line = "{:>20}  {:>25} {:>15}".format(name, shape, params)
        return line + " {:>15}".format(macs) if show_flops else line

    lines = [rule, row("Layer (type)", "Output Shape", "Param #", "Mult-Adds"), double]
    lines += [row(f"{r.kind}-{i}", str([batch_size, *r.shape]), f"{r.params:,}", f"{r.macs:,}")
              for i, r in enumerate(rows, 1)]
    lines += [
        double,
        # Every parameter of a freshly built model has requires_grad=True.
        f"Total params: {t.params:,}",
        f"Trainable params: {t.params:,}",
        "Non-trainable params: 0",
        rule,
        "Input size (MB): %0.2f" % t.input_mb,
        "Forward/backward pass size (MB): %0.2f" % t.activations_mb,
        "Params size (MB): %0.2f" % t.params_mb,
        "Estimated Total Size (MB): %0.2f" % t.total_mb,
    ]
    if show_flops:
        lines += ["Mult-adds per sample (G): %0.3f" % (t.macs / 1e9),
                  "GFLOPs per sample: %0.3f" % (2 * t.macs / 1e9)]
    lines.append(rule)
    # torchsummary prints line by line, so its text ends with a newline.
    return "\n".join(lines) + "\n", (t.params, t.params)


def summary(model: Any, input_size: InputSize, batch_size: int = -1, *,
            show_flops: bool = False, device: Optional[str] = None) -> Tuple[int, int]:
    """Print torchsummary's table for `model`; returns (total, trainable) params."""
    text, counts = summary_string(model, input_size, batch_size, show_flops=show_flops,
                                  device=device)
    print(text, end="")
    return counts


# ---------------------------------------------------------------- nn.Module repr

def _module_lines(variant: str, num_classes: int) -> List[str]:
    """The lines of repr(nn.Module) for the variant, without the device line."""
    s = arch.spec(variant)
    relu = "ReLU(inplace=True)" if _RELU_INPLACE[variant] else "ReLU()"
    pool = (f"MaxPool2d(kernel_size={_POOL_K}, stride={_POOL_S}, padding=0, dilation=1, "
            "ceil_mode=False)")
    features: List[str] = []
    for c in s.convs:
        conv = (f"Conv2d({c.in_c}, {c.out_c}, kernel_size=({c.k}, {c.k}), "
                f"stride=({c.stride}, {c.stride})")
        # nn.Conv2d.extra_repr leaves out a zero padding.
        conv += f", padding=({c.pad}, {c.pad}))" if c.pad else ")"
        features += [conv, relu] + ([pool] if c.pool_after else [])
    classifier: List[str] = []
    fcs = [(s.fc_in, s.fc_hidden), (s.fc_hidden, s.fc_hidden), (s.fc_hidden, num_classes)]
    for i, (fin, fout) in enumerate(fcs):
        if s.dropout and i < 2:
            classifier.append(f"Dropout(p={_DROPOUT_P}, inplace=False)")
        classifier.append(f"Linear(in_features={fin}, out_features={fout}, bias=True)")
        if i < 2:
            classifier.append(relu)

    def sequential(name: str, items: List[str]) -> List[str]:
        return ([f"  ({name}): Sequential("]
                + [f"    ({i}): {m}" for i, m in enumerate(items)] + ["  )"])

    lines = ["AlexNet("] + sequential("features", features)
    if s.avgpool:
        lines.append(f"  (avgpool): AdaptiveAvgPool2d(output_size={_AVGPOOL_OUT})")
    lines += sequential("classifier", classifier) + [")"]
    return lines


DEVICE_LINE = "  (device): {}"


def model_repr(model: Any) -> str:
    """repr() of the equivalent nn.Module, plus one `  (device): cpu|cuda` line before
    the closing parenthesis. Removing that line gives torch's repr exactly."""
    variant, num_classes = _model_fields(model)
    lines = _module_lines(variant, num_classes)
    device = getattr(model, "device", "cpu")
    if getattr(model, "precision", "float32") != "float32":
        device = f"{device} ({model.precision})"
    return "\n".join(lines[:-1] + [DEVICE_LINE.format(device), lines[-1]])


# ---------------------------------------------------------------- HTML

def summary_html(model: Any, input_size: Optional[InputSize] = None) -> str:
    """The summary as an HTML table (for Jupyter's `_repr_html_`), at the variant's
    default input size unless one is given."""
    variant, num_classes = _model_fields(model)
    size = check_input_size(variant, default_input_size(variant) if input_size is None
                            else input_size)
    rows = layers(variant, num_classes, size)
    t = _totals(rows, size, -1)
    e = html.escape
    device = getattr(model, "device", "cpu")
    out = ['<table class="alexnet-c-summary">',
           f"<caption>AlexNet ({e(variant)}, {num_classes} classes, {e(str(device))}), "
           f"input {e(str(list(size)))}</caption>",
           "<thead><tr><th>Layer (type)</th><th>Module</th><th>Output Shape</th>"
           "<th>Param #</th><th>Mult-Adds</th></tr></thead>", "<tbody>"]
    right = ' style="text-align:right"'
    for i, r in enumerate(rows, 1):
        out.append(f"<tr><td>{e(r.kind)}-{i}</td><td><code>{e(r.where)}</code></td>"
                   f"<td>{e(str([-1, *r.shape]))}</td><td{right}>{r.params:,}</td>"
                   f"<td{right}>{r.macs:,}</td></tr>")
    out.append("</tbody><tfoot>")
    foot = [("Total params", f"{t.params:,}"), ("Trainable params", f"{t.params:,}"),
            ("Non-trainable params", "0"),
            ("Mult-adds per sample (G)", "%0.3f" % (t.macs / 1e9)),
            ("Input size (MB)", "%0.2f" % t.input_mb),
            ("Forward/backward pass size (MB)", "%0.2f" % t.activations_mb),
            ("Params size (MB)", "%0.2f" % t.params_mb),
            ("Estimated Total Size (MB)", "%0.2f" % t.total_mb)]
    for k, v in foot:
        out.append(f'<tr><th colspan="3" style="text-align:left">{e(k)}</th>'
                   f'<td colspan="2"{right}>{e(v)}</td></tr>')
    out += ["</tfoot>", "</table>"]
    return "\n".join(out)
