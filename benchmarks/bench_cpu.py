"""alexnet_c vs PyTorch on the CPU, side by side: see alexnet_c/bench.py (python benchmarks/bench_cpu.py --help)."""
import importlib.machinery
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Built in place (an extension module for this Python in alexnet_c/): this checkout's
# alexnet_c; else the installed one (pip install .), which the checkout must not shadow.
if any(os.path.exists(os.path.join(ROOT, "alexnet_c", "_C" + s)) for s in importlib.machinery.EXTENSION_SUFFIXES):
    sys.path.insert(0, ROOT)

from alexnet_c.bench import main  # noqa: E402

if __name__ == "__main__":
    # The results go to this checkout's benchmarks/results unless --json says otherwise.
    sys.exit(main(sys.argv[1:], default_json=os.path.join(ROOT, "benchmarks", "results", "cpu_latest.json")))
