"""Running alexnet_c in a child process: the child must import the same alexnet_c
as the tests (the installed package in CI, the in-place build in a checkout), and
must not start in the repository root, where the source folder without the built
extension would shadow an installed package."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Dict, Sequence

import alexnet_c

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(alexnet_c.__file__)))


def child_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_python(args: Sequence[str], *, cwd: str = None, timeout: float = 300, env=None,
               **kwargs) -> subprocess.CompletedProcess:
    """python <args> in a neutral folder (a temp dir unless cwd is given)."""
    return subprocess.run([sys.executable, *args], cwd=cwd or tempfile.gettempdir(),
                          env=env or child_env(), timeout=timeout, capture_output=True, text=True, **kwargs)


def run_neutral(*args, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run, started in a temp dir unless the caller gives cwd."""
    kwargs.setdefault("cwd", tempfile.gettempdir())
    return subprocess.run(*args, **kwargs)
