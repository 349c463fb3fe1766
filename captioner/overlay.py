"""Per-word attention overlays: the image, then one panel per word with where the model looked."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from captioner.io_utils import atomic_path  # noqa: E402

PANEL_INCHES = 2.2
MAX_COLUMNS = 5
DIM = 0.25  # brightness left where the model did not look


def upsample_attention(attention: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (rows, columns) map resized smoothly to (height, width), scaled to a peak of 1.

    Bicubic resizing treats each value as the centre of its grid cell, which is
    where that cell's receptive field is centred in the image.
    """
    grid = Image.fromarray(attention.astype(np.float32), mode="F")
    smooth = np.asarray(grid.resize((width, height), Image.BICUBIC))
    smooth = np.clip(smooth, 0, None)
    peak = smooth.max()
    return smooth / peak if peak > 0 else smooth


def spotlight(image: np.ndarray, mask: np.ndarray, dim: float = DIM) -> np.ndarray:
    """The image darkened where attention is low: what the model looked at stays bright."""
    weight = dim + (1.0 - dim) * mask[..., None]
    return (image.astype(np.float32) * weight).astype(np.uint8)


def draw_overlay(image: np.ndarray, words: list[str], attention: np.ndarray, path, style: str = "spotlight",
                 colormap: str = "inferno", alpha: float = 0.5):
    """Write a PNG: the image, then for each word its attention map over the image.

    image (H, W, 3) uint8; attention (at least len(words), rows, columns).
    style "spotlight" dims what the model did not look at; "heatmap" lays a colour map over the image.
    """
    if style not in ("spotlight", "heatmap"):
        raise ValueError(f"unknown overlay style {style!r}; use spotlight or heatmap")
    panels = len(words) + 1
    columns = min(panels, MAX_COLUMNS)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * PANEL_INCHES, rows * PANEL_INCHES * 1.1))
    axes = np.atleast_1d(axes).ravel()
    height, width = image.shape[:2]
    axes[0].imshow(image)
    axes[0].set_title("input", fontsize=10)
    for index, word in enumerate(words):
        ax = axes[index + 1]
        mask = upsample_attention(attention[index], height, width)
        if style == "spotlight":
            ax.imshow(spotlight(image, mask))
        else:
            ax.imshow(image)
            ax.imshow(mask, cmap=colormap, alpha=alpha, vmin=0, vmax=1)
        ax.set_title(f"{word} ({attention[index].max():.2f})", fontsize=10)
    for ax in axes:
        ax.axis("off")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
