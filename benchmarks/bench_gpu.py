"""alexnet_c's CUDA path against PyTorch on the same GPU, measured in one process.

    python benchmarks/bench_gpu.py [--batches 1,64,256] [--variants torchvision,original]
                                   [--reps 15] [--per-layer] [--out DIR]

Per variant (torchvision at 224x224, original at 227x227) and batch size it prints:
- alexnet_c: `model(x)` on a NumPy batch, host to host (copy in, every layer on the
  GPU, logits copied out), wall clock;
- PyTorch end to end: the same NumPy batch through `.cuda()`, the model and `.cpu()`,
  wall clock: the like-for-like comparison with alexnet_c's API;
- PyTorch on the device: the model on a batch already on the GPU, CUDA events: the
  compute-only floor (cuDNN / cuBLAS, cudnn.benchmark=True, TF32 off);
with ms, images/s, ratios (alexnet_c time / PyTorch time, runs alternating, medians)
and the fraction of the GPU's fp32 peak.

fp32 peak = multiprocessors x fp32 lanes per multiprocessor x 2 (an FMA is two FLOPs) x
max SM clock. Lanes per multiprocessor by compute capability: 64 on 7.x and 8.0, 128 on
8.6, 8.9, 9.0 and later (NVIDIA's architecture whitepapers; the H100/H200 SM has 128).
The clock is the maximum SM clock from NVML (else nvidia-smi, else CuPy, else an
assumed 1980 MHz, and the JSON says which). Memory bandwidth is measured here: a
device-to-device copy of 2 GiB, bytes read + written over time, best of 5.

--per-layer adds a table of every layer: alexnet_c's kernels timed with CUDA events
inside the C forward (ALEXNET_C_CUDA_PROFILE=1, plain launches, no graph) and
PyTorch's modules timed the same way, at batch 1 and at the largest batch.

--tf32-batches (default 256) adds rows for precision="tf32" against PyTorch with TF32
allowed in cuDNN and cuBLAS (skipped below compute capability 8.0).

Results also go to $OUT/bench_gpu.json when $OUT is set, else to
benchmarks/results/gpu_latest.json. Timings are never assertions.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Built in place (an extension module for this Python in alexnet_c/): this checkout's
# alexnet_c; else the installed one (pip install .), which the checkout must not shadow.
if any(os.path.exists(os.path.join(ROOT, "alexnet_c", "_C" + s)) for s in importlib.machinery.EXTENSION_SUFFIXES):
    sys.path.insert(0, ROOT)

import alexnet_c as ac  # noqa: E402
from alexnet_c import arch  # noqa: E402

# Layer tables from alexnet_c.arch (the same layout the C network is built from).
CONVS = {v: [(c.in_c, c.out_c, c.k, c.stride, c.pad, int(c.pool_after)) for c in s.convs]
         for v, s in arch.SPECS.items()}
SIZE = {"torchvision": 224, "original": 227}
FCS = [(arch.SPECS["torchvision"].fc_in, 4096), (4096, 4096), (4096, 1000)]
FP32_LANES = {(7, 0): 64, (7, 2): 64, (7, 5): 64, (8, 0): 64}   # others: 128


def layer_flops(variant: str, hw: int) -> Dict[str, float]:
    """FLOPs per image of each layer that does arithmetic (2 per multiply-add)."""
    out, h = {}, hw
    for i, (ic, oc, k, s, p, pool) in enumerate(CONVS[variant], 1):
        h = (h + 2 * p - k) // s + 1
        out[f"conv{i}"] = 2.0 * oc * h * h * ic * k * k
        if pool:
            h = (h - 3) // 2 + 1
    for i, (a, b) in enumerate(FCS, 1):
        out[f"fc{i}"] = 2.0 * a * b
    return out


# ---- the machine ----------------------------------------------------------------

def sm_clock_mhz() -> Tuple[float, str]:
    try:
        import pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return float(pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)), "NVML max SM clock"
    except Exception:  # noqa: BLE001 - any failure: try the next source
        pass
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=30).stdout
        return float(text.split()[0]), "nvidia-smi clocks.max.sm"
    except Exception:  # noqa: BLE001
        pass
    try:
        import cupy
        return cupy.cuda.runtime.deviceGetAttribute(13, 0) / 1000.0, "CuPy cudaDevAttrClockRate"
    except Exception:  # noqa: BLE001
        pass
    return 1980.0, "assumed 1980 MHz (H100/H200 SXM boost clock): no clock source answered"


def machine() -> dict:
    import torch
    props = torch.cuda.get_device_properties(0)
    cc = (props.major, props.minor)
    lanes = FP32_LANES.get(cc, 128)
    mhz, clock_src = sm_clock_mhz()
    peak = props.multi_processor_count * lanes * 2 * mhz * 1e6
    # Bandwidth: a device-to-device copy, read + write bytes.
    n = 1 << 31
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(6):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.copy_(a)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    del a, b
    # Pageable host-to-device copies: what an API that takes NumPy arrays pays.
    host = np.ones(64 << 20, np.float32)
    t = []
    for _ in range(3):
        t0 = time.perf_counter()
        torch.from_numpy(host).cuda()
        torch.cuda.synchronize()
        t.append(time.perf_counter() - t0)
    torch.cuda.empty_cache()
    return dict(gpu=props.name, compute_capability=f"{cc[0]}.{cc[1]}", sms=props.multi_processor_count,
                fp32_lanes_per_sm=lanes, sm_clock_mhz=mhz, sm_clock_source=clock_src,
                fp32_peak_tflops=peak / 1e12, copy_bandwidth_gbs=2 * n / best / 1e9,
                h2d_pageable_gbs=host.nbytes / min(t) / 1e9,
                peak_formula="SMs x fp32 lanes/SM x 2 x max SM clock")


# ---- models ---------------------------------------------------------------------

def torch_model(variant: str):
    import torch
    from torch import nn
    torch.manual_seed(0)
    if variant == "torchvision":
        try:
            import torchvision
            model = torchvision.models.alexnet()
        except ImportError:
            model = None
        if model is not None:
            return model.eval()
        features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
        classifier = nn.Sequential(nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(),
                                   nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))
        avgpool = nn.AdaptiveAvgPool2d((6, 6))
    else:
        features = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
        classifier = nn.Sequential(nn.Linear(9216, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                                   nn.Linear(4096, 1000))
        avgpool = None

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.classifier = features, classifier
            if avgpool is not None:
                self.avgpool = avgpool

        def forward(self, x):
            x = self.features(x)
            if avgpool is not None:
                x = self.avgpool(x)
            x = self.classifier(torch.flatten(x, 1))
            return x if avgpool is not None else torch.nn.functional.log_softmax(x, dim=1)

    return Net().eval()


_MODELS: Dict[str, tuple] = {}


def models(variant: str):
    """(torch fp32 model on the GPU, alexnet_c CUDA model with the same weights, state dict),
    built once per variant."""
    if variant not in _MODELS:
        theirs = torch_model(variant)
        sd = {k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()}
        ours = ac.AlexNet.from_state_dict(sd).to("cuda")
        _MODELS[variant] = (theirs.cuda(), ours, sd)
    return _MODELS[variant]


# ---- timing -----------------------------------------------------------------------

def wall(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def events(fn: Callable[[], object]) -> float:
    return timed(fn)[0]


def timed(fn: Callable[[], object]):
    """(seconds of GPU time between two CUDA events around fn on torch's stream, fn's result)."""
    import torch
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    result = fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3, result


class torch_tf32:
    """PyTorch's TF32 switches on (cuDNN convolutions and cuBLAS matmuls) inside the block."""

    def __enter__(self):
        import torch
        self.saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True

    def __exit__(self, *exc):
        import torch
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


def bench_network(variant: str, batch: int, reps: int, peak: float, tf32: bool = False) -> dict:
    """tf32: alexnet_c with precision="tf32" against PyTorch with TF32 allowed, plus the
    largest difference from alexnet_c's float32 output on the same batch."""
    theirs, ours, sd = models(variant)
    if not tf32:
        return dict(_bench_pair(theirs, ours, variant, batch, reps, peak), precision="float32")
    fast = ac.AlexNet.from_state_dict(sd, device="cuda", precision="tf32")
    with torch_tf32():
        row = _bench_pair(theirs, fast, variant, batch, reps, peak)
    x = bench_input(variant, batch)
    a, b = fast(x).astype(np.float64), ours(x).astype(np.float64)
    row["max_rel_diff_vs_float32"] = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
    row["precision"] = "tf32"
    return row


def bench_input(variant: str, batch: int) -> np.ndarray:
    hw = SIZE[variant]
    return np.random.default_rng(0).standard_normal((batch, 3, hw, hw)).astype(np.float32)


def _bench_pair(theirs, ours, variant: str, batch: int, reps: int, peak: float) -> dict:
    import torch
    hw = SIZE[variant]
    x = bench_input(variant, batch)
    x_dev = torch.from_numpy(x).cuda()

    def run_ours():
        return ours(x)

    def run_torch_e2e():
        with torch.no_grad():
            return theirs(torch.from_numpy(x).cuda()).cpu()

    def run_torch_dev():
        with torch.no_grad():
            return theirs(x_dev)

    for _ in range(3):   # warm-up: cuDNN autotuning, our workspace and CUDA graph
        run_ours(), run_torch_e2e(), run_torch_dev()
    torch.cuda.synchronize()
    t_ours, t_e2e, t_dev = [], [], []
    for _ in range(reps):   # alternating, so drifts in clock or load hit all three alike
        t_ours.append(wall(run_ours))
        t_e2e.append(wall(run_torch_e2e))
        t_dev.append(events(run_torch_dev))
    ours_s, e2e_s, dev_s = (float(np.median(t)) for t in (t_ours, t_e2e, t_dev))

    a, b = run_ours().astype(np.float64), run_torch_e2e().numpy().astype(np.float64)
    rel = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
    flops = batch * sum(layer_flops(variant, hw).values())
    return dict(variant=variant, batch=batch, hw=hw, reps=reps,
                ours_ms=ours_s * 1e3, torch_e2e_ms=e2e_s * 1e3, torch_device_ms=dev_s * 1e3,
                ours_img_s=batch / ours_s, torch_e2e_img_s=batch / e2e_s, torch_device_img_s=batch / dev_s,
                ratio_vs_torch_e2e=ours_s / e2e_s, ratio_vs_torch_device=ours_s / dev_s,
                gflop_per_image=flops / batch / 1e9,
                ours_pct_peak=100 * flops / ours_s / peak, torch_e2e_pct_peak=100 * flops / e2e_s / peak,
                torch_device_pct_peak=100 * flops / dev_s / peak,
                max_rel_diff_vs_torch_fp32=rel)


# ---- per layer --------------------------------------------------------------------

_LAYER_LINE = re.compile(r"^alexnet_c\.cuda\.layer (\w+) N=(\d+) H=\d+ W=\d+ ms=([-0-9.]+)$", re.M)


def ours_per_layer(sd: dict, x: np.ndarray, reps: int) -> Dict[str, float]:
    """Median ms per layer from ALEXNET_C_CUDA_PROFILE's stderr lines (fd 2 redirected
    to a file meanwhile); the first forward (workspace, kernel loading) is dropped."""
    os.environ["ALEXNET_C_CUDA_PROFILE"] = "1"
    try:
        model = ac.AlexNet.from_state_dict(sd).to("cuda")
    finally:
        del os.environ["ALEXNET_C_CUDA_PROFILE"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as f:
        os.dup2(f.fileno(), 2)
        try:
            for _ in range(reps + 1):
                model(x)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read()
    times: Dict[str, List[float]] = {}
    for name, _, ms in _LAYER_LINE.findall(text):
        times.setdefault(name, []).append(float(ms))
    return {k: float(np.median(v[1:])) for k, v in times.items() if len(v) > 1}


def torch_per_layer(theirs, x: np.ndarray, reps: int) -> Dict[str, float]:
    """Median ms per layer of the torch model, named like alexnet_c's layers
    (convK includes its ReLU, fcK its ReLU, as alexnet_c fuses them)."""
    import torch
    mods = list(theirs.features)
    stages, i, k = [], 0, 0
    while i < len(mods):
        if isinstance(mods[i], torch.nn.Conv2d):
            k += 1
            stages.append((f"conv{k}", mods[i:i + 2]))   # conv + its ReLU
            i += 2
        else:
            stages.append((f"pool{k}", [mods[i]]))
            i += 1
    fcs = [m for m in theirs.classifier if isinstance(m, torch.nn.Linear)]
    for j, fc in enumerate(fcs, 1):
        stages.append((f"fc{j}", [fc, torch.nn.ReLU()] if j < len(fcs) else [fc]))
    avgpool = getattr(theirs, "avgpool", None)

    def run(seq, h):
        for m in seq:
            h = m(h)
        return h

    times: Dict[str, List[float]] = {}
    with torch.no_grad():
        for _ in range(reps + 1):   # the first round is a warm-up
            h = torch.from_numpy(x).cuda()
            for name, seq in stages:
                if name == "fc1":
                    if avgpool is not None and h.shape[-1] != 6:   # alexnet_c skips a 6x6 -> 6x6 pool
                        t, h = timed(lambda h=h: avgpool(h))
                        times.setdefault("avgpool", []).append(t * 1e3)
                    h = torch.flatten(h, 1)
                t, h = timed(lambda seq=seq, h=h: run(seq, h))
                times.setdefault(name, []).append(t * 1e3)
            if avgpool is None:
                t, h = timed(lambda h=h: torch.nn.functional.log_softmax(h, dim=1))
                times.setdefault("log_softmax", []).append(t * 1e3)
    return {k: float(np.median(v[1:])) for k, v in times.items()}


def bench_layers(variant: str, batch: int, reps: int, peak: float) -> List[dict]:
    import torch
    theirs, _, sd = models(variant)
    hw = SIZE[variant]
    x = np.random.default_rng(1).standard_normal((batch, 3, hw, hw)).astype(np.float32)
    ours = ours_per_layer(sd, x, reps)
    ref = torch_per_layer(theirs, x, reps)
    flops = layer_flops(variant, hw)
    rows = []
    for name, ms in ours.items():
        row = dict(layer=name, ours_ms=ms, torch_ms=ref.get(name), ratio=ms / ref[name] if ref.get(name) else None)
        if name in flops and ms > 0:
            row["ours_pct_peak"] = 100 * batch * flops[name] / (ms / 1e3) / peak
            if ref.get(name):
                row["torch_pct_peak"] = 100 * batch * flops[name] / (ref[name] / 1e3) / peak
        if name.startswith("fc") and ms > 0:
            i, o = FCS[int(name[2:]) - 1]
            row["ours_weight_gbs"] = 4.0 * i * o / (ms / 1e3) / 1e9
        rows.append(row)
    if ours and ref:
        rows.append(dict(layer="total", ours_ms=sum(ours.values()), torch_ms=sum(ref.values()),
                         ratio=sum(ours.values()) / sum(ref.values())))
    torch.cuda.empty_cache()
    return rows


# ---- main -------------------------------------------------------------------------

def fmt(v, width: int, decimals: int, suffix: str = "") -> str:
    """v right-aligned in width columns, or '-' when there is no value."""
    text = f"{v:.{decimals}f}{suffix}" if isinstance(v, (int, float)) else "-"
    return text.rjust(width)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,64,256")
    p.add_argument("--variants", default="torchvision,original")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--per-layer", action="store_true")
    p.add_argument("--tf32-batches", default="256",
                   help="batch sizes for the opt-in TF32 rows, against PyTorch with TF32 allowed ('' for none)")
    p.add_argument("--out", default=None, help="folder for bench_gpu.json (default $OUT, else benchmarks/results)")
    args = p.parse_args(argv)

    if not ac.cuda_is_available():
        print(f"alexnet_c cannot use CUDA: {ac.cuda_unavailable_reason()}", file=sys.stderr)
        return 2
    import torch
    if not torch.cuda.is_available():
        print("torch has no CUDA: nothing to compare against", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    t_start = time.perf_counter()
    mach = machine()
    peak = mach["fp32_peak_tflops"] * 1e12
    print(f"{mach['gpu']} (sm_{mach['compute_capability'].replace('.', '')}), {mach['sms']} SMs x "
          f"{mach['fp32_lanes_per_sm']} fp32 lanes x 2 x {mach['sm_clock_mhz']:.0f} MHz "
          f"({mach['sm_clock_source']}) = {mach['fp32_peak_tflops']:.1f} TFLOP/s fp32 peak; "
          f"copy {mach['copy_bandwidth_gbs']:.0f} GB/s, pageable H2D {mach['h2d_pageable_gbs']:.1f} GB/s")
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, cudnn.benchmark on, TF32 off\n")

    batches = [int(b) for b in args.batches.split(",") if b]
    variants = [v for v in args.variants.split(",") if v]
    rows = []
    head = (f"{'variant':<12} {'N':>4} {'ours ms':>9} {'torch e2e':>10} {'torch dev':>10} "
            f"{'ours img/s':>11} {'vs e2e':>7} {'vs dev':>7} {'ours %pk':>9} {'dev %pk':>8} {'diff':>8}")
    print(head)
    for variant in variants:
        for batch in batches:
            r = bench_network(variant, batch, args.reps, peak)
            rows.append(r)
            print(f"{variant:<12} {batch:>4} {r['ours_ms']:>9.3f} {r['torch_e2e_ms']:>10.3f} "
                  f"{r['torch_device_ms']:>10.3f} {r['ours_img_s']:>11.1f} {r['ratio_vs_torch_e2e']:>7.2f} "
                  f"{r['ratio_vs_torch_device']:>7.2f} {r['ours_pct_peak']:>8.1f}% "
                  f"{r['torch_device_pct_peak']:>7.1f}% {r['max_rel_diff_vs_torch_fp32']:>8.1e}", flush=True)
    print("vs e2e / vs dev: alexnet_c time over PyTorch's (host to host / on the device); < 1 is faster.")

    tf32_batches = [int(b) for b in args.tf32_batches.split(",") if b]
    if tf32_batches and float(mach["compute_capability"]) < 8.0:
        print("\nTF32 rows skipped: this GPU has no TF32 tensor cores (compute capability < 8.0)")
        tf32_batches = []
    if tf32_batches:
        print("\nprecision='tf32' against PyTorch with TF32 allowed (cuDNN and cuBLAS); %pk is of the fp32 "
              "peak; diff is against alexnet_c's float32 output")
        print(head)
    for variant in variants:
        for batch in tf32_batches:
            r = bench_network(variant, batch, max(1, args.reps // 3), peak, tf32=True)
            rows.append(r)
            print(f"{variant:<12} {batch:>4} {r['ours_ms']:>9.3f} {r['torch_e2e_ms']:>10.3f} "
                  f"{r['torch_device_ms']:>10.3f} {r['ours_img_s']:>11.1f} {r['ratio_vs_torch_e2e']:>7.2f} "
                  f"{r['ratio_vs_torch_device']:>7.2f} {r['ours_pct_peak']:>8.1f}% "
                  f"{r['torch_device_pct_peak']:>7.1f}% {r['max_rel_diff_vs_float32']:>8.1e}", flush=True)

    layers = {}
    if args.per_layer:
        for variant in variants:
            for batch in sorted({min(batches), max(batches)}):
                key = f"{variant}-N{batch}"
                layers[key] = bench_layers(variant, batch, max(1, args.reps // 2), peak)
                print(f"\nper layer, {variant} N={batch} (device time, CUDA events; conv/fc include ReLU)")
                print(f"{'layer':<12} {'ours ms':>9} {'torch ms':>9} {'ratio':>7} {'ours %pk':>9} "
                      f"{'torch %pk':>10} {'ours GB/s':>10}")
                for row in layers[key]:
                    print(f"{row['layer']:<12} {fmt(row['ours_ms'], 9, 4)} {fmt(row.get('torch_ms'), 9, 4)} "
                          f"{fmt(row.get('ratio'), 7, 2)} {fmt(row.get('ours_pct_peak'), 9, 1, '%')} "
                          f"{fmt(row.get('torch_pct_peak'), 10, 1, '%')} {fmt(row.get('ours_weight_gbs'), 10, 0)}",
                          flush=True)

    out_dir = args.out or os.environ.get("OUT") or os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench_gpu.json" if (args.out or os.environ.get("OUT")) else "gpu_latest.json")
    with open(path, "w") as f:
        json.dump(dict(machine=mach, torch=torch.__version__, networks=rows, layers=layers,
                       seconds=time.perf_counter() - t_start), f, indent=1)
    print(f"\nwrote {path} ({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
