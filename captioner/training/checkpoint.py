"""Training checkpoints: model weights, optimizer state and loop state in one file, written atomically.

One `.npz` file per checkpoint means there is never a moment with new weights
but an old optimizer: the file is complete or it is the previous one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from captioner.utils.atomic import atomic_path

FORMAT_VERSION = 1


def _named_arrays(prefix: str, variables) -> dict[str, np.ndarray]:
    return {f"{prefix}/{index:04d}": np.asarray(v.numpy()) for index, v in enumerate(variables)}


def save_checkpoint(path, model_variables, optimizer_variables, state: dict) -> None:
    """Write variables and a JSON-able `state` (epoch, metrics, ...) to `path` atomically."""
    arrays = {
        **_named_arrays("model", model_variables),
        **_named_arrays("optimizer", optimizer_variables),
        "model_names": np.array([v.path for v in model_variables]),
        "state": np.array(json.dumps({**state, "format_version": FORMAT_VERSION})),
    }
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, **arrays)


def load_checkpoint(path, model_variables, optimizer_variables=None) -> dict:
    """Assign saved values to the given variables (same model config) and return the saved state."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable checkpoint ({error})") from None
    with archive:
        # Names carry Keras's per-process counters ("dropout_3"), so match on count and shapes.
        saved = [archive[f"model/{index:04d}"] for index in range(len(archive["model_names"]))]
        if [a.shape for a in saved] != [tuple(v.shape) for v in model_variables]:
            raise ValueError(f"{path}: checkpoint was written by a model of a different configuration")
        for value, variable in zip(saved, model_variables):
            variable.assign(value)
        if optimizer_variables is not None:
            saved = sorted(key for key in archive.files if key.startswith("optimizer/"))
            if len(saved) != len(optimizer_variables):
                raise ValueError(f"{path}: optimizer state does not match ({len(saved)} saved, {len(optimizer_variables)} now)")
            for key, variable in zip(saved, optimizer_variables):
                variable.assign(archive[key])
        return json.loads(str(archive["state"]))
