"""TensorFlow functions converted to LiteRT, and run with ai-edge-litert when it is installed.

Two users: `captioner export` writes the whole captioner as a `.tflite` file, and the feature cache runs the
frozen encoder with LiteRT because its CPU kernels (XNNPACK) run MobileNetV2 about five times as fast as
TensorFlow's on our 2-core machines (bench/RESULTS.md: the Flickr8k cache and the demo's scenes).

The function is frozen first (its variables become constants: the converter does not freeze variables read
inside a loop, and the file would hold no weights) and converted with LiteRT's builtin ops only, so the
runtime alone runs it.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from captioner.utils.quiet import quiet_stderr

# How a file stores its weights: float32 as trained; float16 (half the size, computed in float32); int8 (about a
# quarter: each weight matrix quantised per channel, LiteRT's dynamic-range quantisation).
WEIGHT_STORAGE = ("float32", "float16", "int8")


def convert(function: tf.types.experimental.ConcreteFunction, weights: str = "float32") -> bytes:
    """A concrete function as the bytes of a `.tflite` file, its weights stored as `weights`."""
    if weights not in WEIGHT_STORAGE:
        raise ValueError(f"unknown LiteRT weights {weights!r}; use one of {', '.join(WEIGHT_STORAGE)}")
    with quiet_stderr(), _absl_errors_only():  # the converter's deprecation notices
        converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(function)])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if weights != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if weights == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


@contextlib.contextmanager
def _absl_errors_only():
    """absl's Python logging (the converter's warnings) at ERROR while the block runs."""
    from absl import logging

    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(level)


class LiteRTFunction:
    """One-input, one-output `.tflite` model as a NumPy function over batches of any size."""

    def __init__(self, model: bytes):
        from ai_edge_litert.interpreter import Interpreter

        with quiet_stderr():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter = Interpreter(model_content=model, num_threads=usable_cores())
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch_shape = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape != self.batch_shape:  # a new batch size (the last batch): tensors re-allocated
            self.interpreter.resize_tensor_input(self.input, batch.shape)
            self.interpreter.allocate_tensors()
            self.batch_shape = batch.shape
        self.interpreter.set_tensor(self.input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)


def litert_function(function: tf.types.experimental.GenericFunction) -> LiteRTFunction | None:
    """`function` (a tf.function with a one-tensor input signature) run by LiteRT, or None where it cannot be:
    ai-edge-litert is not installed, or the conversion fails (an op LiteRT lacks). Callers then keep TensorFlow."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return None
    try:
        return LiteRTFunction(convert(function.get_concrete_function()))
    except Exception:  # the converter raises several kinds (ConverterError, ValueError, RuntimeError)
        return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
