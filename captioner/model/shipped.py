"""Where the models this package ships live: the default of every command that takes --model, and the names
`--model soft` and `--model hard` stand for.

Apart from `captioner.model.saving` so that finding them does not import Keras.
"""

from __future__ import annotations

import os
from pathlib import Path

PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained"
SHIPPED_MODEL = PRETRAINED / "flickr8k_mobilenetv2.keras"  # soft attention, an ensemble: the default
SHIPPED_MODELS = {
    "soft": SHIPPED_MODEL,
    "hard": PRETRAINED / "flickr8k_mobilenetv2_hard.keras",  # hard attention: one cell a word
}


def default_model_path(model: str | os.PathLike | None = None) -> Path:
    """The path of `model`: a shipped model's name (soft, hard), a file, or None for the default model (the
    soft one in captioner/pretrained/, or $CAPTIONER_MODEL)."""
    if model is None:
        return Path(os.environ.get("CAPTIONER_MODEL", SHIPPED_MODEL))
    if str(model) in SHIPPED_MODELS and not Path(model).exists():  # a file of that name in the folder still wins
        return SHIPPED_MODELS[str(model)]
    return Path(model)
