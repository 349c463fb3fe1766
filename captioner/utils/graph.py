"""Compiling Python functions into TensorFlow graphs, safely for long runs.

`tf.function` normally runs AutoGraph, which rewrites a function from its source
file, read from disk when the function is first traced. Training traces new
functions hours into a run (a caption length not seen before, the first dev pass),
so if that file has been edited since the run started, the graph is built from the
new text, and, when the edit moved lines, from the wrong function: we once had a dev
pass that ran the training step's code and trained on the dev captions.
Our functions need none of AutoGraph's rewriting (their loops are over Python
ranges of known length), so they are traced as plain Python, from the code that
was loaded.
"""

from __future__ import annotations

import tensorflow as tf


def compile_function(function, input_signature, jit_compile: bool = False):
    """`function` as a TensorFlow graph function, traced from the loaded code (no AutoGraph).

    jit_compile: compile the graph with XLA, which fuses the decoder's many small per-word
    operations (a Flickr8k training step +28 % median on CPU, bench/RESULTS.md; the synthetic demo's small
    step gains nothing and compiles three times as long: docs/synthetic.md).

    Each call makes a new graph function over a fresh wrapper: the trainer compiles one per caption
    length on purpose, and TensorFlow would otherwise count those as accidental retracing of one
    Python function and warn about it.
    """

    def traced(*args):
        return function(*args)

    traced.__name__ = getattr(function, "__name__", "traced")
    return tf.function(traced, input_signature=input_signature, autograph=False, jit_compile=jit_compile)
