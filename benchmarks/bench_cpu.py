"""alexnet_c vs PyTorch on the CPU, side by side: see alexnet_c/bench.py (python benchmarks/bench_cpu.py --help)."""
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if glob.glob(os.path.join(ROOT, "alexnet_c", "_C.*")):   # built in place: this checkout's alexnet_c,
    sys.path.insert(0, ROOT)                              # else the installed one (pip install .)

from alexnet_c.bench import main  # noqa: E402

if __name__ == "__main__":
    # The results go to this checkout's benchmarks/results unless --json says otherwise
    # (argparse keeps the last --json given).
    sys.exit(main(["--json", os.path.join(ROOT, "benchmarks", "results", "cpu_latest.json")] + sys.argv[1:]))
