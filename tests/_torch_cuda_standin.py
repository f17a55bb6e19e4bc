"""A stand-in for torch's CUDA device, for running benchmarks/bench_gpu.py end to end on
the CUDA emulator (tests/test_cuda_emulator.py), where torch has no CUDA.

Importing it makes torch believe in one GPU: `.cuda()` and `device="cuda"` stay on the
CPU, CUDA events read the wall clock, and the device is an sm_90 with 132 SMs. What it
proves is only that the script's own logic runs (every row and table filled in, the
layer names of both sides matching, the JSON written): its times mean nothing.
"""
import time
from types import SimpleNamespace

import torch

_empty = torch.empty


class _Event:
    def __init__(self, enable_timing: bool = False) -> None:
        self.t = None

    def record(self, stream=None) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: "_Event") -> float:
        return (end.t - self.t) * 1e3


def _empty_on_cpu(*size: int, device=None, **kw):
    # bench_gpu's bandwidth probe asks for 2 GiB twice: a few MB tell the logic as much.
    if str(device).startswith("cuda"):
        size = tuple(min(s, 1 << 22) for s in size)
    return _empty(*size, **kw)


torch.cuda.is_available = lambda: True
torch.cuda.get_device_properties = lambda i=0: SimpleNamespace(
    name="torch CUDA stand-in (CPU)", major=9, minor=0, multi_processor_count=132)
torch.cuda.Event = _Event
torch.cuda.synchronize = lambda device=None: None
torch.cuda.empty_cache = lambda: None
torch.Tensor.cuda = lambda self, *a, **kw: self
torch.nn.Module.cuda = lambda self, *a, **kw: self
torch.empty = _empty_on_cpu
torch.backends.cudnn.version = lambda: None   # its probe would look for a CUDA build
