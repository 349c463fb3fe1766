import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import SMALL_IMAGE, make_captioner  # noqa: E402


@pytest.fixture(scope="session")
def small_captioner():
    return make_captioner()


@pytest.fixture
def random_images():
    return np.random.default_rng(0).integers(0, 256, size=(4, SMALL_IMAGE, SMALL_IMAGE, 3)).astype(np.uint8)
