import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# What the code under test caches (decoded weights, features) stays out of the user's cache unless told where it is.
if not os.environ.get("CAPTIONER_CACHE"):
    os.environ["CAPTIONER_CACHE"] = tempfile.mkdtemp(prefix="captioner-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CAPTIONER_CACHE"], ignore_errors=True)

from captioner.utils.allocator import use_pooled_cpu_allocator  # noqa: E402

use_pooled_cpu_allocator()  # TensorFlow in the tests pools its CPU memory as in the tools

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import SMALL_IMAGE, make_captioner  # noqa: E402


@pytest.fixture(scope="session")
def small_captioner():
    return make_captioner()


@pytest.fixture
def random_images():
    return np.random.default_rng(0).integers(0, 256, size=(4, SMALL_IMAGE, SMALL_IMAGE, 3)).astype(np.uint8)
