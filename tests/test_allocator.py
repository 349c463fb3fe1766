"""The command-line tools' TensorFlow pools its CPU memory (BFC), unless the user says otherwise."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Only the BFC allocator counts its bytes: with TensorFlow's default CPU allocator get_memory_info raises.
ALLOCATOR_IN_USE = """
from captioner.utils.quiet import import_tensorflow_quietly
import_tensorflow_quietly()
import tensorflow as tf
tf.ones((256, 256)) @ tf.ones((256, 256))
try:
    info = tf.config.experimental.get_memory_info("CPU:0")
except ValueError:
    print("malloc")
else:
    print("pooled" if info["peak"] >= 256 * 256 * 4 else f"pooled but counted {info}")
"""


def allocator_in_use(environment: dict) -> str:
    finished = subprocess.run([sys.executable, "-c", ALLOCATOR_IN_USE], cwd=ROOT, capture_output=True, text=True,
                              env=environment, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return finished.stdout.strip()


@pytest.fixture
def environment():
    return {key: value for key, value in os.environ.items() if key != "TF_CPU_ALLOCATOR_USE_BFC"}


def test_the_tools_tensorflow_pools_cpu_memory(environment):
    assert allocator_in_use(environment) == "pooled"


def test_a_users_own_allocator_setting_wins(environment):
    assert allocator_in_use({**environment, "TF_CPU_ALLOCATOR_USE_BFC": "false"}) == "malloc"
