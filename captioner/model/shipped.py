"""Where the model this package ships lives: the default of every command that takes --model.

Apart from `captioner.model.saving` so that finding it does not import Keras.
"""

from __future__ import annotations

import os
from pathlib import Path

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "pretrained" / "flickr8k_mobilenetv2.keras"


def default_model_path() -> Path:
    """The model shipped in captioner/pretrained/ (or $CAPTIONER_MODEL): used when no --model is given."""
    return Path(os.environ.get("CAPTIONER_MODEL", SHIPPED_MODEL))
