"""Where the project keeps what it can make again (feature caches, decoded weights): $CAPTIONER_CACHE, or
~/.cache/captioner."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("CAPTIONER_CACHE") or Path.home() / ".cache" / "captioner")
