"""The CPU code-path switches for tests: fixtures that run a test once per ISA
path this machine has (generic, avx2, avx512) and once per thread count (1 and
2), and a context for the Winograd mode; each restores the setting afterwards."""
import contextlib

import pytest

import alexnet_c as ac
from alexnet_c import _C

_ORDER = ["generic", "avx2", "avx512"]
ISAS = _ORDER[: _ORDER.index(_C.get_isa()[1]) + 1]


@pytest.fixture(params=ISAS)
def isa(request):
    before = _C.get_isa()[0]
    _C.set_isa(request.param)
    yield request.param
    _C.set_isa(before)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = ac.get_num_threads()
    ac.set_num_threads(request.param)
    yield request.param
    ac.set_num_threads(before)


@contextlib.contextmanager
def winograd(mode):
    """Winograd 'off', 'on' or 'auto' inside the block, the previous mode after it."""
    before = _C.get_winograd()
    _C.set_winograd(mode)
    try:
        yield
    finally:
        _C.set_winograd(before)
