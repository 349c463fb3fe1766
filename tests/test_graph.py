"""Compiled steps are traced from the code that was loaded, not from the source file as it is now.

A run traces new step functions long after it started (the first dev pass, a new caption
length). With AutoGraph, `tf.function` reads the function's source from disk at that moment;
after an edit that moved lines, the dev pass ran the training step's code and trained on the
dev captions. These tests make the file on disk "edited" and check nothing changes.
"""

import inspect
import linecache

import numpy as np
from helpers import make_captioner

from captioner.config import Config
from captioner.training import trainer as training
from captioner.training.trainer import Trainer
from captioner.utils.graph import compile_function


def _pretend_file_was_edited(monkeypatch, module, shift: int):
    """linecache (which inspect and AutoGraph read) now sees `shift` new lines at the top of `module`."""
    path = inspect.getsourcefile(module)
    real_getlines = linecache.getlines

    def getlines(filename, module_globals=None):
        lines = real_getlines(filename, module_globals)
        return ["# an edit\n"] * shift + lines if filename == path else lines

    monkeypatch.setattr(linecache, "getlines", getlines)


def test_dev_step_never_runs_the_training_step_after_an_edit(monkeypatch):
    captioner = make_captioner(feature_units=16, units=16)
    trainer = Trainer(captioner, Config(batch_size=2))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, *captioner.feature_shape)).astype(np.float32)
    tokens = rng.integers(4, len(captioner.vocabulary), size=(2, 6)).astype(np.int32)
    trainer.train_step(features, tokens)
    # Lines move so that the dev step's first line now holds the training step's `def`.
    shift = Trainer._eval_step.__code__.co_firstlineno - Trainer._train_step.__code__.co_firstlineno
    _pretend_file_was_edited(monkeypatch, training, shift)
    before = [np.array(v) for v in captioner.decoder.trainable_variables]
    steps = int(trainer.optimizer.iterations)
    outputs = trainer.eval_step(features, tokens)
    assert len(outputs) == 3  # loss, cross-entropy, penalty: the dev step's own results
    assert int(trainer.optimizer.iterations) == steps
    assert all(np.array_equal(b, np.array(v)) for b, v in zip(before, captioner.decoder.trainable_variables))


def test_compile_function_uses_the_loaded_code(tmp_path, monkeypatch):
    source = tmp_path / "steps_module.py"
    source.write_text("def train(x):\n    return x + 1000\n\n\ndef evaluate(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import steps_module

    source.write_text("# edited\n" * 4 + source.read_text())  # `evaluate`'s old first line is now `train`'s
    linecache.checkcache(str(source))
    import tensorflow as tf

    compiled = compile_function(steps_module.evaluate, [tf.TensorSpec([], tf.float32)])
    assert float(compiled(tf.constant(0.0))) == 1.0
