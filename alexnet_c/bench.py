"""CPU benchmark: alexnet_c against PyTorch (oneDNN), measured side by side.

    python -m alexnet_c bench [--quick] [--plot layers.png]     (or benchmarks/bench_cpu.py)

What it prints, per variant (torchvision 224x224, original 227x227) and batch size:
whole-network milliseconds, images/s, the time ratio to PyTorch (alternating runs in
this one process, medians), the fraction of this machine's fp32 FMA peak and, at
batch 1, the roofline (conv FLOPs at the FMA peak + FC weight bytes at the read
bandwidth); then a per-layer table of both libraries' ops (alexnet_c.conv2d etc. vs
torch.nn.functional) and the "lightness" figures (peak RSS of a load-and-run job,
import time, load time), each measured in fresh subprocesses. Everything also goes
to a JSON file for later comparison (by default benchmarks/results/cpu_latest.json in a
source checkout, else $XDG_CACHE_HOME/alexnet_c/cpu_latest.json, ~/.cache by default).

Machine figures:
- FMA peak: acn_measure_fma_peak, a C loop of 24 independent fp32 FMA chains on the
  active ISA (AVX-512 here), run on the benchmark's thread count, best of 5.
- Read bandwidth: acn_measure_read_bw, a vectorised streaming sum over a 512 MiB
  buffer (far larger than the L3), same threads, 8 sequential streams per thread
  (one stream alone reads ~30% slower than the memory can deliver), each software-
  prefetched into L2 2 KB ahead as the FC kernel's are (the hardware prefetchers
  alone reached 30 of 49 GB/s on a Zen 4 VM), best of 3.
Both are C functions of the extension (alexnet_c._C.measure_fma_peak / measure_read_bw).

torch is imported only when the benchmark runs, never by `import alexnet_c`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import arch

# Layer tables from alexnet_c.arch (the same layout the C network is built from).
_CONVS = {v: [(c.in_c, c.out_c, c.k, c.stride, c.pad, int(c.pool_after)) for c in s.convs]
          for v, s in arch.SPECS.items()}
_SIZE = {"torchvision": 224, "original": 227}
_FCS = [(arch.SPECS["torchvision"].fc_in, 4096), (4096, 4096), (4096, 1000)]


# ---------------------------------------------------------------- layer plan

def layer_plan(variant: str, hw: int) -> List[dict]:
    """Every layer with its input shape (per image) and multiply-add count per image."""
    layers, C, H = [], 3, hw
    for i, (c, oc, k, s, p, pool) in enumerate(_CONVS[variant], 1):
        OH = (H + 2 * p - k) // s + 1
        layers.append(dict(name=f"conv{i}", kind="conv", in_shape=(C, H, H), weight=(oc, c, k, k),
                           stride=s, pad=p, out_hw=OH, macs=oc * OH * OH * c * k * k))
        layers.append(dict(name=f"relu{i}", kind="relu", in_shape=(oc, OH, OH), macs=0))
        C, H = oc, OH
        if pool:
            layers.append(dict(name=f"pool{i}", kind="pool", in_shape=(C, H, H), macs=0))
            H = (H - 3) // 2 + 1
    if variant == "torchvision":
        layers.append(dict(name="avgpool", kind="avgpool", in_shape=(C, H, H), macs=0))
    for i, (a, b) in enumerate(_FCS, 1):
        layers.append(dict(name=f"fc{i}", kind="fc", in_shape=(a,), weight=(b, a), macs=a * b))
        if i < 3:
            layers.append(dict(name=f"fc_relu{i}", kind="relu", in_shape=(b,), macs=0))
    return layers


def model_macs(variant: str, hw: int) -> Tuple[int, int, int]:
    """(total, conv, fc) multiply-adds per image."""
    plan = layer_plan(variant, hw)
    conv = sum(l["macs"] for l in plan if l["kind"] == "conv")
    fc = sum(l["macs"] for l in plan if l["kind"] == "fc")
    return conv + fc, conv, fc


def winograd_layers(variant: str, hw: int, batch: int) -> List[str]:
    """The conv layers that take the Winograd path at this batch, now (mode, ISA, threads)."""
    from . import _C
    return [l["name"] for l in layer_plan(variant, hw) if l["kind"] == "conv" and l["stride"] == 1
            and _C.winograd_applies(l["weight"][2], batch, l["out_hw"], l["out_hw"])]


def performed_macs(variant: str, hw: int, batch: int) -> int:
    """Multiply-adds per image that alexnet_c's GEMMs actually perform: a Winograd
    layer does 16 per 2x2 output tile and (output, input) channel pair and 3x3
    block of its kernel, where model_macs counts the direct convolution's."""
    wino, total = set(winograd_layers(variant, hw, batch)), 0
    for l in layer_plan(variant, hw):
        if l["name"] in wino:
            oc, c, k, _ = l["weight"]
            tiles = ((l["out_hw"] + 1) // 2) ** 2
            total += 16 * oc * c * ((k + 2) // 3) ** 2 * tiles
        else:
            total += l["macs"]
    return total


# ---------------------------------------------------------------- machine

def measure_fma_once(threads: int) -> float:
    """One probe (GFLOP/s, the best of 5 short runs in C): the machine's speed now."""
    from . import _C
    return _C.measure_fma_peak(threads, 1.0)


def measure_fma_peak(threads: int) -> Tuple[float, str]:
    """(GFLOP/s, method) of `threads` threads doing fp32 FMAs."""
    # best of 3 x 5 one-second runs: on a shared host a core often runs slow for seconds
    return (max(measure_fma_once(threads) for _ in range(3)),
            "C FMA loop (24 independent chains, active ISA), best of 15")


def host_steal() -> Optional[Tuple[int, int]]:
    """(steal, all) CPU time in clock ticks since boot from /proc/stat, or None
    where there is none: the time a hypervisor ran something else on our vCPUs."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (ticks[7], sum(ticks)) if len(ticks) == 8 else None


def steal_percent(before: Optional[Tuple[int, int]], after: Optional[Tuple[int, int]]) -> Optional[float]:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def measure_read_bw(threads: int, mib: int = 512) -> Tuple[float, str]:
    """(GB/s, method) of `threads` threads streaming through a buffer far larger than the caches."""
    from . import _C
    buf = np.ones(mib << 18, dtype=np.float32)
    return _C.measure_read_bw(buf, 3, threads), f"C streaming sum, 8 streams per thread prefetched into L2, over {mib} MiB, best of 3"


# ---------------------------------------------------------------- timing

def _time(fn, reps: int) -> List[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def alternate_runs(ours, theirs, reps: int, warmup: int = 1) -> Tuple[List[float], List[float]]:
    """Seconds of each run of ours() and theirs(), run alternately."""
    for _ in range(warmup):
        ours()
        theirs()
    a, b = [], []
    for _ in range(reps):
        a += _time(ours, 1)
        b += _time(theirs, 1)
    return a, b


def alternate(ours, theirs, reps: int, warmup: int = 1) -> Tuple[float, float]:
    """Median seconds of ours() and theirs(), run alternately."""
    a, b = alternate_runs(ours, theirs, reps, warmup)
    return float(np.median(a)), float(np.median(b))


def build_models(variant: str, seed: int = 0):
    import torch
    import alexnet_c as ac
    ours = ac.AlexNet(num_classes=1000, variant=variant, seed=seed)
    from .reference import torch_alexnet
    theirs = torch_alexnet(variant)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    return ours, theirs.eval()


def bench_network(variant: str, batch: int, reps: int, peak: float, bw: float) -> dict:
    import torch
    ours, theirs = build_models(variant)
    hw = _SIZE[variant]
    x = np.random.default_rng(0).random((batch, 3, hw, hw), dtype=np.float32)
    xt = torch.from_numpy(x)

    def run_theirs():
        with torch.no_grad():
            theirs(xt)

    runs_ours, runs_theirs = alternate_runs(lambda: ours(x), run_theirs, reps, warmup=2 if batch == 1 else 1)
    t_ours, t_theirs = float(np.median(runs_ours)), float(np.median(runs_theirs))
    total, conv, fc = model_macs(variant, hw)
    flops = 2.0 * total * batch
    r = dict(variant=variant, batch=batch, reps=reps, ours_ms=t_ours * 1e3, torch_ms=t_theirs * 1e3,
             ours_img_s=batch / t_ours, torch_img_s=batch / t_theirs, time_ratio=t_ours / t_theirs,
             speedup=t_theirs / t_ours, gflop_per_image=2.0 * total / 1e9,
             ours_min_ms=min(runs_ours) * 1e3, torch_min_ms=min(runs_theirs) * 1e3,
             min_ratio=min(runs_ours) / min(runs_theirs),
             ours_pct_peak=100.0 * flops / t_ours / 1e9 / peak,
             torch_pct_peak=100.0 * flops / t_theirs / 1e9 / peak)
    done = performed_macs(variant, hw, batch)
    r.update(winograd_layers=winograd_layers(variant, hw, batch), performed_gflop_per_image=2.0 * done / 1e9,
             ours_pct_peak_performed=100.0 * 2.0 * done * batch / t_ours / 1e9 / peak)
    if batch == 1:
        roof = 2.0 * conv / (peak * 1e9) + 4.0 * fc / (bw * 1e9)
        r.update(roofline_ms=roof * 1e3, ours_over_roofline=t_ours / roof)
    return r


def bench_layers(variant: str, batch: int, reps: int, peak: float) -> List[dict]:
    """Each layer alone: alexnet_c's op (NumPy in/out) vs torch.nn.functional, alternating."""
    import torch
    import torch.nn.functional as F
    import alexnet_c as ac
    rng = np.random.default_rng(0)
    rows = []
    for l in layer_plan(variant, _SIZE[variant]):
        x = rng.standard_normal((batch,) + l["in_shape"], dtype=np.float32)
        xt = torch.from_numpy(x)
        if l["kind"] in ("conv", "fc"):
            w = (rng.standard_normal(l["weight"], dtype=np.float32) * 0.01)
            b = np.zeros(l["weight"][0], np.float32)
            wt, bt = torch.from_numpy(w), torch.from_numpy(b)
        kind = l["kind"]
        if kind == "conv":
            s, p = l["stride"], l["pad"]
            ours = lambda: ac.conv2d(x, w, b, s, p)                                   # noqa: E731
            theirs = lambda: F.conv2d(xt, wt, bt, s, p)                               # noqa: E731
        elif kind == "fc":
            ours = lambda: ac.linear(x, w, b)                                         # noqa: E731
            theirs = lambda: F.linear(xt, wt, bt)                                     # noqa: E731
        elif kind == "relu":
            ours = lambda: ac.relu(x)                                                 # noqa: E731
            theirs = lambda: F.relu(xt)                                               # noqa: E731
        elif kind == "pool":
            ours = lambda: ac.max_pool2d(x, 3, 2)                                     # noqa: E731
            theirs = lambda: F.max_pool2d(xt, 3, 2)                                   # noqa: E731
        else:
            ours = lambda: ac.adaptive_avg_pool2d(x, (6, 6))                          # noqa: E731
            theirs = lambda: F.adaptive_avg_pool2d(xt, (6, 6))                        # noqa: E731
        with torch.no_grad():
            a, t = alternate(ours, theirs, reps)
        rows.append(_table_row(l, a, t, batch, peak))
    return rows


def _table_row(layer: dict, a: float, t: float, batch: int, peak: float) -> dict:
    """One row of a per-layer / per-stage table from our and PyTorch's seconds; a
    stage that alexnet_c skips (a = 0) gets no rates."""
    flops = 2.0 * layer["macs"] * batch
    row = dict(layer=layer["name"], ours_ms=a * 1e3, torch_ms=t * 1e3, ratio=a / t if t > 0 else float("nan"))
    if flops and a > 0:
        row.update(ours_gflops=flops / a / 1e9, torch_gflops=flops / t / 1e9,
                   ours_pct_peak=100.0 * flops / a / 1e9 / peak,
                   torch_pct_peak=100.0 * flops / t / 1e9 / peak)
    if layer["kind"] == "fc" and a > 0:
        row["ours_weight_gbs"] = 4.0 * layer["macs"] / a / 1e9
    return row


def stage_plan(variant: str, hw: int) -> List[dict]:
    """The stages AlexNet.profile reports: each ReLU folded into the conv / fc before it."""
    stages: List[dict] = []
    for l in layer_plan(variant, hw):
        if l["kind"] == "relu":
            stages[-1]["relu"] = True
            continue
        stages.append(dict(l, name="avgpool" if l["kind"] == "avg" else l["name"], relu=False))
    if variant == "original":
        stages.append(dict(name="log_softmax", kind="log_softmax", macs=0, relu=False))
    return stages


def bench_stages(variant: str, batch: int, reps: int, peak: float) -> List[dict]:
    """Each stage inside the forward pass: alexnet_c's own (AlexNet.profile, the real
    C forward with its fused ReLUs) vs the same stages through torch.nn.functional on
    the same weights and activations, the two passes run alternately."""
    import torch
    import torch.nn.functional as F
    ours, _ = build_models(variant)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    weights = iter([(sd[w], sd[b]) for w, b in zip(list(sd)[0::2], list(sd)[1::2])])
    plan = stage_plan(variant, _SIZE[variant])
    fns = []
    for st in plan:
        kind, relu = st["kind"], st["relu"]
        if kind in ("conv", "fc"):
            w, b = next(weights)
            if kind == "conv":
                f = (lambda a, w=w, b=b, s=st["stride"], p=st["pad"]: F.conv2d(a, w, b, s, p))
            else:
                f = (lambda a, w=w, b=b: F.linear(a.flatten(1), w, b))
            fns.append((lambda a, f=f: F.relu(f(a))) if relu else f)
        elif kind == "pool":
            fns.append(lambda a: F.max_pool2d(a, 3, 2))
        elif kind == "log_softmax":
            fns.append(lambda a: F.log_softmax(a, 1))
        else:
            fns.append(lambda a: F.adaptive_avg_pool2d(a, (6, 6)))
    x = np.random.default_rng(0).random((batch, 3, _SIZE[variant], _SIZE[variant]), dtype=np.float32)

    def torch_pass() -> List[float]:
        a, times = torch.from_numpy(x), []
        with torch.no_grad():
            for f in fns:
                t = time.perf_counter()
                a = f(a)
                times.append(time.perf_counter() - t)
        return times

    ours_runs, torch_runs = [], []
    ours.profile(x)
    torch_pass()
    for _ in range(reps):
        ours_runs.append(dict(ours._net.profile(x)[1]))
        torch_runs.append(torch_pass())
    rows = [_table_row(st, float(np.median([r.get(st["name"], 0.0) for r in ours_runs])),
                       float(np.median([r[i] for r in torch_runs])), batch, peak)
            for i, st in enumerate(plan)]
    wino = winograd_layers(variant, _SIZE[variant], batch)
    for row in rows:
        row["winograd"] = row["layer"] in wino
    return rows


# ---------------------------------------------------------------- lightness

_RSS_OURS = r"""
import sys, numpy as np
import alexnet_c as ac
ac.set_num_threads({threads})
m = ac.load(sys.argv[1])
x = np.random.default_rng(0).random(({batch}, 3, 224, 224), dtype=np.float32)
m(x)
print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
"""

_RSS_TORCH = r"""
import sys, numpy as np, torch, torchvision
torch.set_num_threads({threads})
m = torchvision.models.alexnet()
m.load_state_dict(torch.load(sys.argv[1], map_location='cpu', weights_only=True))
m.eval()
x = torch.from_numpy(np.random.default_rng(0).random(({batch}, 3, 224, 224), dtype=np.float32))
with torch.no_grad():
    m(x)
print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
"""

_IMPORT = r"""
import time
t = time.perf_counter()
import alexnet_c
print(time.perf_counter() - t)
"""

_LOAD_OURS = r"""
import sys, time
import alexnet_c as ac
t = time.perf_counter()
m = ac.load(sys.argv[1])
print(time.perf_counter() - t)
"""

_LOAD_TORCH = r"""
import sys, time, torch, torchvision
m = torchvision.models.alexnet()
t = time.perf_counter()
m.load_state_dict(torch.load(sys.argv[1], map_location='cpu', weights_only=True))
print(time.perf_counter() - t)
"""


def _run_py(code: str, *args: str) -> float:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def make_checkpoint(directory: str) -> str:
    """A torchvision AlexNet state dict saved by torch.save (~233 MB)."""
    import torch
    import torchvision
    path = os.path.join(directory, "alexnet_tv.pth")
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


def bench_lightness(checkpoint: Optional[str], threads: int, batch: int, reps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoint or make_checkpoint(tmp)
        rss_ours = _run_py(_RSS_OURS.format(threads=threads, batch=batch), path) / 1024.0
        rss_torch = _run_py(_RSS_TORCH.format(threads=threads, batch=batch), path) / 1024.0
        imports = [_run_py(_IMPORT) for _ in range(reps)]
        load_ours, load_torch = [], []
        for _ in range(reps):   # alternating, file in the page cache after the first
            load_ours.append(_run_py(_LOAD_OURS, path))
            load_torch.append(_run_py(_LOAD_TORCH, path))
        size = os.path.getsize(path)
    return dict(checkpoint_mb=size / 1e6, batch=batch,
                rss_ours_mb=rss_ours, rss_torch_mb=rss_torch, rss_ratio=rss_ours / rss_torch,
                import_s=float(np.median(imports)), load_ours_s=float(np.median(load_ours)),
                load_torch_s=float(np.median(load_torch)),
                load_ratio=float(np.median(load_ours)) / float(np.median(load_torch)))


# ---------------------------------------------------------------- report

def _fmt_net(r: dict) -> str:
    s = (f"{r['variant']:<12} {r['batch']:>5} {r['ours_ms']:>10.2f} {r['torch_ms']:>10.2f} "
         f"{r['ours_img_s']:>9.1f} {r['torch_img_s']:>9.1f} {r['time_ratio']:>6.2f} "
         f"{r['ours_pct_peak']:>6.1f}% {r['torch_pct_peak']:>6.1f}% {r['min_ratio']:>9.2f}")
    if "roofline_ms" in r:
        s += f"  roofline {r['roofline_ms']:.2f} ms (x{r['ours_over_roofline']:.2f})"
    if r.get("winograd_layers"):
        s += (f"  [Winograd {','.join(r['winograd_layers'])}: {r['performed_gflop_per_image']:.3f} GFLOP/image "
              f"performed, {r['ours_pct_peak_performed']:.1f}% pk]")
    return s


def _fmt_layers(rows: List[dict]) -> str:
    lines = [f"  {'layer':<10} {'ours ms':>9} {'torch ms':>9} {'ratio':>6} {'ours GF/s':>10} "
             f"{'torch GF/s':>10} {'ours %pk':>9} {'torch %pk':>9}"]
    for r in rows:
        extra = ""
        if "ours_gflops" in r:
            extra = (f"{r['ours_gflops']:>10.1f} {r['torch_gflops']:>10.1f} {r['ours_pct_peak']:>8.1f}% "
                     f"{r['torch_pct_peak']:>8.1f}%")
        if "ours_weight_gbs" in r:
            extra += f"  ({r['ours_weight_gbs']:.1f} GB/s weights)"
        if r.get("winograd"):
            extra += "  Winograd (GF/s: the direct conv's FLOPs / time)"
        lines.append(f"  {r['layer']:<10} {r['ours_ms']:>9.3f} {r['torch_ms']:>9.3f} {r['ratio']:>6.2f} {extra}")
    tot_o = sum(r["ours_ms"] for r in rows)
    tot_t = sum(r["torch_ms"] for r in rows)
    lines.append(f"  {'sum':<10} {tot_o:>9.3f} {tot_t:>9.3f} {tot_o / tot_t:>6.2f}")
    return "\n".join(lines)


def _is_checkout(root: str) -> bool:
    return (os.path.isfile(os.path.join(root, "benchmarks", "bench_cpu.py"))
            and os.path.isfile(os.path.join(root, "alexnet_c", "bench.py")))


def _default_json() -> str:
    """benchmarks/results/cpu_latest.json of the alexnet_c source checkout at hand (the
    one this module runs from when built in place, else the current directory when it
    is one), else $XDG_CACHE_HOME/alexnet_c/cpu_latest.json: an installed package never
    writes into site-packages."""
    for root in (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.getcwd()):
        if _is_checkout(root):
            return os.path.join(root, "benchmarks", "results", "cpu_latest.json")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "alexnet_c", "cpu_latest.json")


def main(argv: Optional[Sequence[str]] = None, default_json: Optional[str] = None) -> int:
    p = argparse.ArgumentParser(prog="alexnet-c bench",
                                description="alexnet_c vs PyTorch on the CPU, measured side by side")
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions, torchvision only, per-layer table at batch 1 only, no lightness")
    p.add_argument("--threads", type=int, default=2, help="threads for both libraries (default 2)")
    p.add_argument("--variants", default=None, help="comma list: torchvision,original (default both)")
    p.add_argument("--batches", default="1,64", help="comma list of batch sizes (default 1,64)")
    p.add_argument("--reps", type=int, default=None, help="timed runs per batch (default 40 at batch 1, 7 else)")
    p.add_argument("--no-layers", action="store_true", help="skip the per-stage tables")
    p.add_argument("--ops-layers", action="store_true",
                   help="also time each layer alone through the ops API (alexnet_c.conv2d & co., which "
                        "pack weights per call) against torch.nn.functional")
    p.add_argument("--layer-batches", default=None, help="batch sizes for the per-layer tables (default: --batches)")
    p.add_argument("--no-lightness", action="store_true", help="skip RSS / import / load measurements")
    p.add_argument("--checkpoint", default=None, help="torchvision .pth for the lightness runs "
                                                        "(default: a fresh one in a temp dir)")
    p.add_argument("--json", default=default_json or _default_json(),
                   help="where to write the results ('' for nowhere)")
    p.add_argument("--plot", default=None, metavar="PNG", help="per-layer bar chart (needs matplotlib)")
    args = p.parse_args(argv)

    import torch
    import alexnet_c as ac
    torch.set_num_threads(args.threads)
    ac.set_num_threads(args.threads)
    variants = (args.variants.split(",") if args.variants
                else (["torchvision"] if args.quick else ["torchvision", "original"]))
    batches = [int(b) for b in args.batches.split(",")]
    layer_batches = ([int(b) for b in args.layer_batches.split(",")] if args.layer_batches
                     else ([1] if args.quick else batches))

    peak, peak_how = measure_fma_peak(args.threads)
    bw, bw_how = measure_read_bw(args.threads)
    isa = ac.cpu_isa()
    print(f"alexnet_c {ac.__version__} (ISA {isa[0]}), torch {torch.__version__}, threads {args.threads}")
    print(f"FMA peak {peak:.1f} GFLOP/s [{peak_how}]; read bandwidth {bw:.1f} GB/s [{bw_how}]")
    for v in variants:
        total, conv, fc = model_macs(v, _SIZE[v])
        print(f"{v} {_SIZE[v]}x{_SIZE[v]}: {total:,} multiply-adds/image = {2 * total / 1e9:.4f} GFLOP "
              f"(conv {2 * conv / 1e9:.4f}, fc {2 * fc / 1e9:.4f}); fc weights {4 * fc / 1e6:.1f} MB")

    results = dict(time=time.strftime("%Y-%m-%d %H:%M:%S"), threads=args.threads, isa=isa[0],
                   torch=torch.__version__, peak_gflops=peak, peak_method=peak_how,
                   read_bw_gbs=bw, bw_method=bw_how, networks=[], layers={}, lightness=None)
    print()
    print(f"{'variant':<12} {'batch':>5} {'ours ms':>10} {'torch ms':>10} {'ours i/s':>9} {'torch i/s':>9} "
          f"{'ratio':>6} {'ours%pk':>7} {'torch%pk':>8} {'min ratio':>9}")
    steal0 = host_steal()
    for v in variants:
        for n in batches:
            reps = args.reps or ((8 if args.quick else 40) if n == 1 else (3 if args.quick else 7))
            r = bench_network(v, n, reps, peak, bw)
            results["networks"].append(r)
            print(_fmt_net(r), flush=True)
    # A shared host changes speed while we measure: say how it stood after the
    # timed runs (the %pk columns stay against the first, best-of-15 probe).
    steal = steal_percent(steal0, host_steal())
    peak_after = measure_fma_once(args.threads)
    results.update(peak_after_gflops=peak_after, steal_percent=steal)
    print(f"after these runs: FMA probe {peak_after:.1f} GFLOP/s ({100.0 * peak_after / peak:.0f}% of the first); "
          + (f"host steal {steal:.1f}% of CPU time during them" if steal is not None else "host steal unknown"))

    plot_rows = None
    if not args.no_layers:
        results["stages"] = {}
        for v in variants:
            for n in layer_batches:
                reps = args.reps or ((5 if args.quick else 20) if n == 1 else (2 if args.quick else 5))
                rows = bench_stages(v, n, reps, peak)
                results["stages"][f"{v}/{n}"] = rows
                print(f"\nper stage inside the forward pass, {v}, batch {n} (ours: AlexNet.profile; torch: the "
                      f"same stages via torch.nn.functional; alternating, median of {reps}):")
                print(_fmt_layers(rows), flush=True)
                if plot_rows is None:
                    plot_rows = [(r["layer"], r["ours_ms"], r["torch_ms"]) for r in rows]
    if args.ops_layers:
        for v in variants:
            for n in layer_batches:
                reps = args.reps or ((5 if args.quick else 20) if n == 1 else (2 if args.quick else 5))
                rows = bench_layers(v, n, reps, peak)
                results["layers"][f"{v}/{n}"] = rows
                print(f"\nper layer alone, {v}, batch {n} (ops API, alternating, median of {reps}):")
                print(_fmt_layers(rows), flush=True)

    if not (args.no_lightness or args.quick):
        li = bench_lightness(args.checkpoint, args.threads, 64, 3)
        results["lightness"] = li
        print(f"\nlightness (checkpoint {li['checkpoint_mb']:.0f} MB, load + batch {li['batch']}, subprocesses):")
        print(f"  peak RSS   ours {li['rss_ours_mb']:.0f} MB, torch {li['rss_torch_mb']:.0f} MB, "
              f"ratio {li['rss_ratio']:.2f}")
        print(f"  import alexnet_c {li['import_s']:.3f} s")
        print(f"  load       ours {li['load_ours_s']:.3f} s, torch.load+load_state_dict {li['load_torch_s']:.3f} s, "
              f"ratio {li['load_ratio']:.2f}")

    if args.json:
        prev = None
        if os.path.exists(args.json):
            try:
                with open(args.json) as f:
                    prev = json.load(f)
            except (OSError, ValueError):
                prev = None
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nwrote {args.json}")
        if prev:
            old = {(r["variant"], r["batch"]): r for r in prev.get("networks", [])}
            for r in results["networks"]:
                o = old.get((r["variant"], r["batch"]))
                if o:
                    print(f"  vs previous ({prev.get('time')}): {r['variant']} batch {r['batch']}: "
                          f"ours {o['ours_ms']:.2f} -> {r['ours_ms']:.2f} ms, "
                          f"ratio {o['time_ratio']:.2f} -> {r['time_ratio']:.2f}")
    if args.plot and plot_rows:
        try:
            from .plots import plot_layer_times
        except ImportError:
            print("no alexnet_c.plots.plot_layer_times: --plot skipped")
        else:
            print(f"plot: {plot_layer_times(plot_rows, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
