"""Saving and loading captioner models, and the model this package ships.

A `.keras` file holds the whole model (encoder weights, decoder, vocabulary); float16 storage
halves it without changing the captions, and "packed" storage takes about 40 % off that.
"""

from __future__ import annotations

import contextlib
import os

import keras
import numpy as np

from captioner.model.captioner import Captioner
from captioner.model.shipped import SHIPPED_MODEL, default_model_path  # noqa: F401 (re-exported)
from captioner.model.storage_rounding import PACKED_MIN_VALUES, packed_decimal_digits
from captioner.utils.atomic import atomic_path

WEIGHT_STORAGES = ("float32", "float16", "packed")


def save_model(model: Captioner, path, weights_dtype: str = "float32") -> None:
    """Write `model` to one .keras file atomically; weights_dtype "float16" halves the file, "packed" takes
    about 40 % off that again.

    Either is only how the weights are stored: loading gives float32 variables, so computation (and speed)
    stays float32. float16 loses nothing that moves the captions; "packed" rounds each big matrix to a
    step of 1/32 of its standard deviation (its effect on captions and maps: docs/results.md). A packed
    matrix is a float32 dataset under HDF5's scale-offset filter, which HDF5 itself undoes as it reads, so
    Keras and the NumPy model read the file as they read any other.
    """
    if weights_dtype not in WEIGHT_STORAGES:
        raise ValueError(f"weights_dtype must be one of {', '.join(WEIGHT_STORAGES)}; got {weights_dtype!r}")
    with atomic_path(path) as temporary:
        model.save(temporary)
        if weights_dtype != "float32":
            _store_weights_smaller(temporary, packed=weights_dtype == "packed")


def _store_weights_smaller(keras_file, packed: bool) -> None:
    """Rewrite the float32 arrays of a .keras file's `model.weights.h5` as float16 (packed: the big ones
    through the scale-offset filter), everything else as it is."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(keras_file) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]

    def copy(source, target):
        target.attrs.update(source.attrs)
        for name, item in source.items():
            if isinstance(item, h5py.Group):
                copy(item, target.create_group(name))
                continue
            values, options = item[()], {}
            if getattr(values, "dtype", None) == np.float32:
                if packed and values.size >= PACKED_MIN_VALUES and np.all(np.isfinite(values)):
                    options = {"scaleoffset": packed_decimal_digits(values)}
                else:
                    values = values.astype(np.float16)
            target.create_dataset(name, data=values, **options).attrs.update(item.attrs)

    with zipfile.ZipFile(keras_file, "w") as archive:
        for info, data in entries:
            if info.filename.endswith(".h5"):
                converted = io.BytesIO()
                with h5py.File(io.BytesIO(data), "r") as source, h5py.File(converted, "w") as target:
                    copy(source, target)
                data = converted.getvalue()
            archive.writestr(info, data)


@contextlib.contextmanager
def _initializers_skipped():
    """Variables made inside start as zeros instead of drawing their random initial values.

    Loading builds the whole model (MobileNetV2 and every decoder) before it reads the weights, and
    the initial values it draws are all overwritten: Keras refuses a file that lacks any of them.
    Drawing them, three orthogonal LSTM matrices (a QR decomposition each) among them, took about 30 %
    of the shipped model's load time (bench/RESULTS.md, "Cold start"). Only Keras initializers are
    replaced: other initial values (a dropout layer's random seed, which the file does not hold) are
    made as usual. Keras has no public switch for this, so the variable class's hook is wrapped for
    the duration (and left alone if a Keras version lacks it); loading is not meant to run beside
    other threads that build models.
    """
    variable_class, hook = keras.Variable, "_initialize_with_initializer"
    original = getattr(variable_class, hook, None)
    if original is None:
        yield
        return
    own = hook in vars(variable_class)  # else inherited from the backend's class: remove ours afterwards

    def initialize(variable, initializer):
        if isinstance(initializer, keras.initializers.Initializer):
            initializer = keras.initializers.Zeros()
        original(variable, initializer)

    setattr(variable_class, hook, initialize)
    try:
        yield
    finally:
        if own:
            setattr(variable_class, hook, original)
        else:
            delattr(variable_class, hook)


def load_captioner(path) -> Captioner:
    """Load a model written by `Captioner.save`; raises ValueError with the path on failure."""
    import zipfile

    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .keras model file (not a zip archive, or cut short)")
    try:
        with _initializers_skipped():
            model = keras.models.load_model(path, compile=False)
    except Exception as error:
        raise ValueError(f"{path}: not a captioner model ({str(error).splitlines()[0] if str(error) else error})")
    if not isinstance(model, Captioner):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a Captioner")
    return model
