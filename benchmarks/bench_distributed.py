"""Images per second: one process (iter_predict) vs a Dask LocalCluster (alexnet_c.distributed).

    python benchmarks/bench_distributed.py [--images 256] [--size 64] [--batch-size 32]
                                           [--workers 2] [--repeat 2] [--weights FILE]

Both sides do the same work on the same files: read, decode and preprocess each
image (Pillow, resize to 256, crop 224) and run batches through the C kernels. The
single process uses every core through OpenMP; the cluster runs `--workers` processes
of one task thread each, alexnet_c's threads set to their share of the cores. Runs
alternate (process, cluster, process, ...) and the median is reported; the cluster's
start-up and the one-off weights load per worker are shown separately. Timings on a
shared machine are noisy: read the ratio, not the absolute numbers.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Built in place (an extension module for this Python in alexnet_c/): this checkout's
# alexnet_c; else the installed one (pip install .), which the checkout must not shadow.
if any(os.path.exists(os.path.join(ROOT, "alexnet_c", "_C" + s)) for s in importlib.machinery.EXTENSION_SUFFIXES):
    sys.path.insert(0, ROOT)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_images(folder: str, n: int, size: int, seed: int = 0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.BILINEAR)
        path = os.path.join(folder, f"img{i:04d}.{'jpg' if i % 2 else 'png'}")
        img.save(path)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=64, help="source images are SIZE x SIZE")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--weights", default=None, help="a weights file (default: a seeded random model)")
    args = p.parse_args(argv)

    import alexnet_c as ac
    from alexnet_c.images import iter_predict
    import alexnet_c.distributed as acd
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(tmp, args.images, args.size)
        weights = args.weights
        if weights is None:
            weights = os.path.join(tmp, "alexnet_seed0.npz")
            ac.AlexNet(seed=0).save(weights)
        model = ac.load(weights)
        n = len(paths)

        def one_process() -> float:
            t = time.perf_counter()
            count = sum(1 for _ in iter_predict(model, paths, batch_size=args.batch_size, progress=False))
            assert count == n
            return time.perf_counter() - t

        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
        start_s = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            frame = acd.predict(paths, weights=weights, client=client, batch_size=args.batch_size)
            register_s = time.perf_counter() - t0      # the plugin loads the weights on every worker
            worker_threads = sorted(set(client.run(ac.get_num_threads).values()))

            def on_cluster() -> float:
                t = time.perf_counter()
                out = frame.compute()
                assert len(out) == n and out.error.isna().all()
                return time.perf_counter() - t

            model(np.zeros((1, 3, 224, 224), np.float32))   # warm-up
            single, dist = [], []
            for _ in range(args.repeat):
                single.append(one_process())
                dist.append(on_cluster())
        finally:
            client.close()
            cluster.close()

    s, d = statistics.median(single), statistics.median(dist)
    print(f"alexnet_c {ac.__version__}: {n} images of {args.size}x{args.size} px (preprocessed to 224), "
          f"batch {args.batch_size}, {_cores()} cores, ISA {ac.cpu_isa()[0]}, median of {args.repeat}")
    rows = [
        (f"1 process, iter_predict, {ac.get_num_threads()} threads", s),
        (f"LocalCluster {args.workers} workers x 1 thread (alexnet_c threads {worker_threads})", d),
        ("LocalCluster, first run incl. start-up + weights load", d + start_s + register_s),
    ]
    print(f"| {'run':<62} | {'seconds':>7} | {'images/s':>8} | {'vs 1 process':>12} |")
    print(f"|{'-' * 64}|{'-' * 9}|{'-' * 10}|{'-' * 14}|")
    for name, secs in rows:
        print(f"| {name:<62} | {secs:7.2f} | {n / secs:8.1f} | {s / secs:11.2f}x |")
    print(f"(cluster start {start_s:.1f} s, weights load on the workers {register_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
