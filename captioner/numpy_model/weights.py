"""A captioner's `.keras` file read without Keras: its config, and its weights by layer path.

A `.keras` file is a zip archive of `config.json` (how to build the model) and `model.weights.h5`,
where each layer's variables sit at `<path of the layer>/vars/<index>`, in the order the layer made
them (a Dense layer: kernel, bias). A layer's path is the attribute that holds it (`decoder/lstm_cell`);
the layers of a list or a functional model are named by their class, numbered in order
(`encoder/backbone/layers/conv2d_3`, `decoder/members/decoder_with_attention_1`).

Packed files (`save_model(..., weights_dtype="packed")`, the shipped models) store their matrices through HDF5's
scale-offset filter, whose decoding took 0.41 s of a 0.9 s cold `predict.py` on 2 CPU cores; their decoded
float32 weights are kept in the user's cache (`<cache>/weights/`, one file per model path, made again when the
model file changes), which loads in about a tenth of that.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np

from captioner.utils.atomic import atomic_path
from captioner.utils.cache import cache_root

SOURCE_KEY = "source size and mtime"  # the cache entry's record of the model file it was decoded from


def numbered_layer(name: str) -> tuple[str, int]:
    """A saved layer name as (class, number): `conv2d_3` -> ("conv2d", 3), `depthwise_conv2d` -> (.., 0)."""
    kind, _, number = name.rpartition("_")
    return (kind, int(number)) if number.isdigit() else (name, 0)


class KerasFile:
    """config: the model's own config (Captioner.get_config()); `variables(path)` its layers' weights, float32."""

    def __init__(self, path):
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such model file")
        if not zipfile.is_zipfile(path):  # the messages are `captioner.model.saving.load_captioner`'s
            raise ValueError(f"{path}: not a .keras model file (not a zip archive, or cut short)")
        self.path = path
        with self._archive() as archive:
            saved = json.loads(archive.read("config.json"))
        if not isinstance(saved, dict) or saved.get("class_name") != "Captioner":
            kind = saved.get("class_name") if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"{path}: holds a {kind}, not a Captioner")
        self.config = saved["config"]
        stat = os.stat(path)
        source = np.array([stat.st_size, stat.st_mtime_ns], np.int64)
        self._arrays = _cached_weights(path, source)
        if self._arrays is None:
            self._arrays, packed = self._decode_weights()
            if packed:  # read through the scale-offset filter, slow to decode: worth keeping decoded
                _cache_weights(path, source, self._arrays)

    @contextlib.contextmanager
    def _archive(self):
        """The model's zip archive; any failure to read it is the file's problem, said in one line."""
        try:
            with zipfile.ZipFile(self.path) as archive:
                yield archive
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as error:
            raise ValueError(f"{self.path}: not a captioner model ({error})") from error

    def _decode_weights(self) -> tuple[dict[str, np.ndarray], bool]:
        """Every weight of the file as float32 (float16 storage computes in float32), by its path; and whether any
        was packed."""
        with self._archive() as archive:
            weights = archive.read("model.weights.h5")
        arrays, packed = {}, []

        def keep(name: str, item) -> None:
            if isinstance(item, h5py.Dataset):
                arrays[name] = np.asarray(item[()], dtype=np.float32)
                packed.append(item.scaleoffset is not None)
        try:
            with h5py.File(io.BytesIO(weights), "r") as store:
                store.visititems(keep)
        except OSError as error:  # h5py's error for a damaged file
            raise ValueError(f"{self.path}: not a captioner model (its weights cannot be read: {error})") from error
        return arrays, any(packed)

    def layer_counts(self, parent: str) -> dict[str, int]:
        """How many layers of each class hold weights directly under `parent` (`conv2d`, `conv2d_1`: 2 conv2d)."""
        counts: dict[str, int] = {}
        for name in {key[len(parent) + 1 :].split("/")[0] for key in self._arrays if key.startswith(parent + "/")}:
            kind, _ = numbered_layer(name)
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def variables(self, layer_path: str) -> list[np.ndarray]:
        """The variables of the layer at `layer_path`, in order; ValueError if it has none."""
        found = []
        while f"{layer_path}/vars/{len(found)}" in self._arrays:
            found.append(self._arrays[f"{layer_path}/vars/{len(found)}"])
        if not found:
            raise ValueError(f"{self.path}: no weights for {layer_path}")
        return found


def _cache_entry(path) -> Path:
    return cache_root() / "weights" / (hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:24] + ".npz")


def _cached_weights(path, source: np.ndarray) -> dict[str, np.ndarray] | None:
    """The decoded weights of `path` from the cache, if they were decoded from this very file; else None."""
    try:
        with np.load(_cache_entry(path), allow_pickle=False) as entry:
            if not np.array_equal(entry[SOURCE_KEY], source):
                return None
            return {name: entry[name] for name in entry.files if name != SOURCE_KEY}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # none yet, or unreadable: decode again
        return None


def _cache_weights(path, source: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
    """Keep decoded weights for the next process; a cache that cannot be written only costs that speed."""
    try:
        with atomic_path(_cache_entry(path)) as temporary:
            np.savez(temporary, **arrays, **{SOURCE_KEY: source})
    except OSError:
        pass
