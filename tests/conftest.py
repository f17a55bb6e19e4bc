import os

import numpy as np
import pytest

IN_CI = os.environ.get("CI") == "true"

# In CI a missing torch is a failure, not a skip: the parity suite needs it.
if IN_CI:
    import torch  # noqa: F401
    import torchvision  # noqa: F401


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _skip_is_allowed(item) -> bool:
    # Only GPU tests may skip in CI (there is no GPU there); any other skip would
    # let CI count as passed a test that did not run.
    return item is not None and item.get_closest_marker("cuda") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if IN_CI and rep.skipped and not hasattr(rep, "wasxfail") and not _skip_is_allowed(item):
        rep.outcome = "failed"
        rep.longrepr = f"skipped in CI, which counts as a failure here: {rep.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    rep = outcome.get_result()
    if IN_CI and rep.skipped and "test_cuda" not in str(getattr(collector, "path", "")):
        rep.outcome = "failed"
        rep.longrepr = f"module skipped in CI, which counts as a failure here: {rep.longrepr}"
