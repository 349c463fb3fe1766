"""A captioner's `.keras` file read without Keras: its config, and its weights by layer path.

A `.keras` file is a zip archive of `config.json` (how to build the model) and `model.weights.h5`,
where each layer's variables sit at `<path of the layer>/vars/<index>`, in the order the layer made
them (a Dense layer: kernel, bias). A layer's path is the attribute that holds it (`decoder/lstm_cell`);
the layers of a list or a functional model are named by their class, numbered in order
(`encoder/backbone/layers/conv2d_3`, `decoder/members/decoder_with_attention_1`).
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import h5py
import numpy as np


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
        try:
            with zipfile.ZipFile(path) as archive:
                saved = json.loads(archive.read("config.json"))
                weights = archive.read("model.weights.h5")
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as error:
            raise ValueError(f"{path}: not a captioner model ({error})") from error
        if not isinstance(saved, dict) or saved.get("class_name") != "Captioner":
            kind = saved.get("class_name") if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"{path}: holds a {kind}, not a Captioner")
        self.path = path
        self.config = saved["config"]
        self._arrays: dict[str, np.ndarray] = {}
        try:
            with h5py.File(io.BytesIO(weights), "r") as store:
                store.visititems(self._keep)
        except OSError as error:  # h5py's error for a damaged file
            raise ValueError(f"{path}: not a captioner model (its weights cannot be read: {error})") from error

    def _keep(self, name: str, item) -> None:
        if isinstance(item, h5py.Dataset):
            self._arrays[name] = np.asarray(item[()], dtype=np.float32)  # float16 storage computes in float32

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
