"""tests/c/kernel_check.c: the C kernels against the naive C references with no
Python in between, built with this machine's C compiler and run for every ISA
path the CPU has (the same program runs on aarch64 under qemu, see
benchmarks/portable_check.sh)."""
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from alexnet_c import _C

ROOT = Path(__file__).resolve().parent.parent


def _compiler():
    cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) or shutil.which("cc") or shutil.which("gcc")


def test_kernels_match_references_in_c(tmp_path):
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler on PATH")
    # Under .ci/sanitize.sh (libasan preloaded into Python) the program is built with
    # the sanitizers itself; the compiler and the program never get the preload.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    sanitize = "libasan" in os.environ.get("LD_PRELOAD", "")
    flags = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"] if sanitize else ["-O2"]
    sources = sorted(str(p) for p in (ROOT / "csrc" / "cpu").glob("*.c"))
    exe = tmp_path / "kernel_check"
    build = subprocess.run([cc, "-std=c11", *flags, "-Wall", "-Wextra", "-Werror", "-fopenmp",
                            "-I", str(ROOT / "csrc"), *sources, str(ROOT / "tests" / "c" / "kernel_check.c"),
                            "-lm", "-o", str(exe)], capture_output=True, text=True, env=env)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600,
                         env=dict(env, OMP_NUM_THREADS="2"))
    assert run.returncode == 0, run.stdout + run.stderr
    paths = ["generic", "avx2", "avx512"].index(_C.get_isa()[1]) + 1
    assert f"{paths} ISA path(s)" in run.stdout, run.stdout
