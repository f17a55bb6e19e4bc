"""alexnet_c vs PyTorch on the CPU, side by side: see alexnet_c/bench.py (python benchmarks/bench_cpu.py --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alexnet_c.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
