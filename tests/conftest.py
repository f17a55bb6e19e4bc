import os

import numpy as np
import pytest

# In CI a missing torch is a failure, not a skip: the parity suite imports it directly.
if os.environ.get("CI") == "true":
    import torch  # noqa: F401
    import torchvision  # noqa: F401


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
