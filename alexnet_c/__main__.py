"""The alexnet-c command line (also `python -m alexnet_c`).

    alexnet-c summary [--variant V] [--input 3,224,224] [--num-classes N] [--flops]
    alexnet-c predict IMAGE_OR_FOLDER_OR_GLOB... [--weights FILE|IMAGENET1K_V1] [--topk 5] [--json]
                      [--device cpu|cuda] [--precision float32|tf32]
    alexnet-c check [--variant V] [--batch N] [--size S] [--device D] [--precision P]
                                                               parity with torchvision (needs torch)
    alexnet-c bench [...]                                      alexnet_c vs PyTorch timings
    alexnet-c convert IN OUT                                   .pth <-> .safetensors / .npz

A bad argument or an unusable file prints one line and exits with status 2; a failure
while running (a CUDA error, memory running out) prints one line and exits with 1.
predict reports an image it cannot read or decode on a line of its own, scores the
rest, and then exits with 1. A closed output pipe ends it quietly with 141.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from typing import Optional, Sequence

from .ops import PARITY_TOLERANCE   # one entry per precision the ops accept


class UsageError(Exception):
    """A problem with what the user asked for: one line, exit status 2."""


def _input_size(text: str):
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 3,224,224, got {text!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive sizes C,H,W, got {text!r}")
    return dims


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _check_device(device: str, precision: str) -> None:
    """Refuse an impossible --device/--precision before any weights are read or fetched."""
    import alexnet_c as ac
    if device == "cuda" and not ac.cuda_is_available():
        raise UsageError(f"--device cuda: CUDA is not available: {ac.cuda_unavailable_reason()}")
    if precision == "tf32" and device != "cuda":
        raise UsageError("--precision tf32 needs --device cuda (the CPU computes float32 only)")


def _load_model(weights: str, variant: str, device: str, precision: str = "float32"):
    import alexnet_c as ac
    _check_device(device, precision)
    if weights.upper() in ("IMAGENET1K_V1", "DEFAULT"):
        return ac.alexnet(weights=weights.upper(), device=device, precision=precision)
    if weights.lower() in ("random", "none"):
        return ac.AlexNet(variant=variant, seed=0, device=device, precision=precision)
    if not os.path.exists(weights):
        raise UsageError(f"weights file not found: {weights}")
    return ac.load(weights, device=device, precision=precision)


def cmd_summary(args) -> int:
    from .summary import default_input_size, summary_string
    size = args.input or default_input_size(args.variant)
    text, _ = summary_string(_Layout(args.variant, args.num_classes), size, show_flops=args.flops)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


class _Layout:
    """What summary() reads of a model: no weights are made for a table."""

    def __init__(self, variant: str, num_classes: int) -> None:
        self.variant, self.num_classes, self.device = variant, num_classes, "cpu"


def _finds_an_image(src: str) -> bool:
    """Whether a folder holds an image file or a glob matches a file, by the rules
    predict expands them with (the first one found is enough). A plain file is taken
    as it is."""
    from .images import _folder_images, _glob_files
    if os.path.exists(src) and not os.path.isdir(src):
        return True
    return next(_folder_images(src) if os.path.isdir(src) else _glob_files(src), None) is not None


def cmd_predict(args) -> int:
    from .images import iter_predict
    for src in args.images:
        remote = "://" in src and (args.scheduler or args.out)
        if not (remote or os.path.exists(src) or any(ch in src for ch in "*?[")):
            raise UsageError(f"image not found: {src}")
        if not remote and not _finds_an_image(src):
            raise UsageError(f"no images in folder {src}" if os.path.isdir(src) else f"no file matches {src}")
    if args.scheduler or args.out:
        if args.device != "cpu" or args.precision != "float32":
            raise UsageError("--scheduler/--out score on the Dask workers' CPUs: "
                             "--device and --precision do not apply there")
        from . import distributed
        frame = distributed.predict(args.images if len(args.images) > 1 else args.images[0],
                                    weights=args.weights, address=args.scheduler, batch_size=args.batch_size,
                                    topk=args.topk)
        if args.out:
            frame.to_parquet(args.out)
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            print(frame.compute().to_string())
        return 0
    model = _load_model(args.weights, args.variant, args.device, args.precision)
    failures = 0
    for src in args.images:
        for path, result in iter_predict(model, src, topk=args.topk, batch_size=args.batch_size,
                                         progress=not args.json and sys.stderr.isatty()):
            failed = isinstance(result, Exception)
            failures += failed
            if args.json:
                row = {"path": str(path)}
                if failed:
                    row["error"] = f"{type(result).__name__}: {result}"
                else:
                    # NaN logits give NaN probabilities: null, as strict JSON has no NaN
                    row["predictions"] = [{"category": c, "probability": p if math.isfinite(p) else None}
                                          for c, p in result]
                print(json.dumps(row, allow_nan=False), flush=True)
            elif failed:
                print(f"{path}: error: {type(result).__name__}: {result}")
            else:
                print(f"{path}:")
                for c, p in result:
                    print(f"  {p:7.2%}  {c}")
    return 1 if failures else 0


def cmd_check(args) -> int:
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError:
        raise UsageError("check needs torch and torchvision: pip install 'alexnet_c[torch]'") from None
    import numpy as np

    import alexnet_c as ac
    from .reference import torch_alexnet
    _check_device(args.device, args.precision)
    torch.manual_seed(0)
    ref_model = torch_alexnet(args.variant, args.num_classes)
    size = args.size or (224 if args.variant == "torchvision" else 227)
    with torch.no_grad():
        for m in ref_model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    ref_model.eval()
    x = np.random.default_rng(0).standard_normal((args.batch, 3, size, size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"alexnet_{args.variant}.pth")
        torch.save(ref_model.state_dict(), path)
        t0 = time.perf_counter()
        model = ac.load(path, device=args.device, precision=args.precision)
        load_s = time.perf_counter() - t0
    torch.set_num_threads(ac.get_num_threads())
    with torch.no_grad():
        ours_s, ours = _time_forward(lambda: model(x))
        torch_s, torch_where = _time_torch(torch, ref_model, x, args.device, args.precision)
        ref = ref_model.cpu().double()(torch.from_numpy(x).double()).numpy()
    tol = PARITY_TOLERANCE[args.precision]
    err = float(np.abs(ours - ref).max() / np.abs(ref).max())
    top1, ties = _top1_agrees(ours, ref)
    ok = err <= tol and top1
    if args.device == "cuda":
        emulated = ", on the CPU emulator: its times say nothing" if ac._C.CUDA_EMULATED else ""
        where = f"CUDA ({model.precision}{emulated})"
    else:
        where = f"{ac.get_num_threads()} threads, ISA {ac.cpu_isa()[0]}"
    print(f"alexnet_c {ac.__version__} check: {args.variant} AlexNet, {args.num_classes} classes, "
          f"input {(args.batch, 3, size, size)}, {where}")
    print(f"  weights loaded from a torch.save file in {load_s * 1e3:.0f} ms (without torch)")
    tie_note = f" ({ties} near-tie row{'s' * (ties != 1)} not compared)" if ties else ""
    print(f"  max |ours - torch float64| / max |torch| = {err:.2e} (limit {tol:g}); "
          f"top-1 agrees: {top1}{tie_note}")
    print(f"  forward: alexnet_c {ours_s * 1e3:.1f} ms, PyTorch {torch_where} {torch_s * 1e3:.1f} ms "
          f"(ratio {ours_s / torch_s:.2f})")
    print("  PASS" if ok else "  FAIL")
    return 0 if ok else 1


def _time_forward(forward):
    """(seconds of the second call, its result): the first call warms up (graphs, workspaces)."""
    forward()
    t0 = time.perf_counter()
    out = forward()
    return time.perf_counter() - t0, out


def _time_torch(torch, ref_model, x, device: str, precision: str):
    """PyTorch's float32 forward timed like ours: NumPy in, NumPy out, copies included.
    With --device cuda it runs on the GPU when this torch has CUDA (TF32 allowed only
    for --precision tf32), else on the CPU, and the label says which."""
    on_gpu = device == "cuda" and torch.cuda.is_available()
    dev = "cuda" if on_gpu else "cpu"
    model = ref_model.to(dev)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        seconds, _ = _time_forward(lambda: model(torch.from_numpy(x).to(dev)).cpu().numpy())
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    if on_gpu:
        label = "CUDA " + ("TF32" if precision == "tf32" else "float32")
    elif device == "cuda":
        label = "float32 on the CPU (this torch has no CUDA)"
    else:
        label = "float32"
    return seconds, label


def _top1_agrees(ours, ref):
    """(top-1 agrees on every row that has no near tie, number of near-tie rows): a row is a
    near tie when the reference's two best logits are within twice the largest difference."""
    import numpy as np
    err = float(np.abs(ours - ref).max())
    best2 = np.sort(ref, axis=1)[:, -2:]
    decided = best2[:, 1] - best2[:, 0] > 2 * err
    agree = ours.argmax(1) == ref.argmax(1)
    return bool(agree[decided].all()), int((~decided).sum())


def cmd_bench(args) -> int:
    try:
        from . import bench
    except ImportError as exc:
        raise UsageError(f"bench is unavailable: {exc}") from None
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    return bench.main(rest) or 0


def cmd_convert(args) -> int:
    from .weights import output_format, read_state_dict, write_state_dict
    if not os.path.exists(args.src):
        raise UsageError(f"input file not found: {args.src}")
    output_format(args.dst)   # before a large input is read
    write_state_dict(read_state_dict(args.src), args.dst)
    print(f"wrote {args.dst}", file=sys.stderr)
    return 0


def _add_device_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    s.add_argument("--precision", choices=tuple(PARITY_TOLERANCE), default="float32",
                   help="tf32: tensor cores on CUDA (compute capability 8.0+), looser tolerance")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alexnet-c", description="AlexNet inference in C, from the command line.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    variants = ("torchvision", "original")

    s = sub.add_parser("summary", help="print torchsummary's table for a layout")
    s.add_argument("--variant", choices=variants, default="torchvision")
    s.add_argument("--input", type=_input_size, default=None, help="C,H,W (default 3,224,224 or 3,227,227)")
    s.add_argument("--num-classes", type=_positive, default=1000)
    s.add_argument("--flops", action="store_true", help="add a multiply-adds column and the total GFLOPs")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("predict", help="top-k ImageNet classes for images, folders or globs")
    s.add_argument("images", nargs="+", help="image files, folders or glob patterns ('photos/**/*.jpg')")
    s.add_argument("--weights", default="IMAGENET1K_V1", help="a weights file or IMAGENET1K_V1 (default)")
    s.add_argument("--variant", choices=variants, default="torchvision", help="layout for --weights random")
    s.add_argument("--topk", type=_positive, default=5)
    _add_device_arguments(s)
    s.add_argument("--batch-size", type=_positive, default=32)
    s.add_argument("--json", action="store_true", help="one JSON object per image per line")
    s.add_argument("--scheduler", default=None, help="a Dask scheduler address (tcp://host:8786)")
    s.add_argument("--out", default=None, help="with Dask: write the predictions to this Parquet path")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("check", help="parity with torchvision on a seeded model (needs torch)")
    s.add_argument("--variant", choices=variants, default="torchvision")
    s.add_argument("--batch", type=_positive, default=2)
    s.add_argument("--size", type=_positive, default=None,
                   help="input H = W (default 224 torchvision, 227 original; at least 63 torchvision, "
                        "227 to 258 original)")
    s.add_argument("--num-classes", type=_positive, default=1000)
    _add_device_arguments(s)
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("bench", help="alexnet_c vs PyTorch, per network and per layer", add_help=False)
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("convert", help="convert weights between .pth, .safetensors and .npz")
    s.add_argument("src")
    s.add_argument("dst")
    s.set_defaults(func=cmd_convert)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # bench parses its own options (argparse's REMAINDER would swallow none that start with '-').
        argv = ["bench", "--"] + argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    from ._errors import WeightsError
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`alexnet-c predict ... | head`): stop quietly, as a shell
        # tool does, and keep the interpreter's final flush from reporting it again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (UsageError, WeightsError, OSError, ValueError, ImportError) as exc:
        print(f"alexnet-c {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as exc:
        print(f"alexnet-c {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
