"""Per-word attention overlays: the image, then one panel per word showing where the model looked.

The encoder saw the image squeezed into a square and cut into a grid of cells; cell
(i, j)'s receptive field is centred on the centre of that cell in the squeezed image,
so on the original image (any aspect ratio) it is centred on the same fraction of the
width and height. Each map is upsampled with the cell values placed at those centres
and interpolated smoothly in between (bicubic), as the paper's figures do.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # figures without pyplot: no display, no global backend switch
from matplotlib.patches import Rectangle
from PIL import Image

from captioner.utils.atomic import atomic_path

PANEL_INCHES = 2.2
MAX_COLUMNS = 5
DIM = 0.25  # brightness left where the model did not look
STYLES = ("spotlight", "heatmap")
BOX_COLOUR = "#69f0ae"  # the human boxes of the phrases a word heads (`--entities`): green, apart from the map


def upsample_attention(attention: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (rows, columns) map resized smoothly to (height, width), scaled to a peak of 1.

    Pillow's resize treats each value as the centre of its grid cell, which is where that
    cell's receptive field is centred in the image.
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


def _draw_boxes(ax, boxes, height: int, width: int) -> None:
    """Dashed outlines of boxes given as fractions (x0, y0, x1, y1) of the image's width and height."""
    for x0, y0, x1, y1 in boxes:
        ax.add_patch(Rectangle((x0 * width - 0.5, y0 * height - 0.5), (x1 - x0) * width, (y1 - y0) * height,
                               fill=False, edgecolor=BOX_COLOUR, linewidth=1.5, linestyle="--"))


def _draw_panel(ax, image, attention_map, title, style, colormap, alpha, chosen_cell=None, boxes=None):
    height, width = image.shape[:2]
    mask = upsample_attention(attention_map, height, width)
    if style == "spotlight":
        ax.imshow(spotlight(image, mask))
    else:
        ax.imshow(image)
        ax.imshow(mask, cmap=colormap, alpha=alpha, vmin=0, vmax=1)
    if chosen_cell is not None:  # hard attention: the one cell the model used for this word
        rows, columns = attention_map.shape
        row, column = chosen_cell
        cell_height, cell_width = height / rows, width / columns
        ax.add_patch(Rectangle((column * cell_width - 0.5, row * cell_height - 0.5), cell_width, cell_height,
                               fill=False, edgecolor="#00e5ff", linewidth=2))
    if boxes is not None:
        _draw_boxes(ax, boxes, height, width)
    ax.set_title(title, fontsize=10)
    ax.axis("off")


def _figure(panels: int, columns: int, panel_inches: float, aspect: float):
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(columns * panel_inches, rows * (panel_inches * aspect + 0.3)))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    return figure, axes.ravel()


def _save(figure, path) -> Path:
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    return Path(path)


def _check(style: str, words, attention) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown overlay style {style!r}; use {' or '.join(STYLES)}")
    if len(attention) < len(words):
        raise ValueError(f"{len(words)} words but only {len(attention)} attention maps")


def draw_overlay(image: np.ndarray, words: list[str], attention: np.ndarray, path, style: str = "spotlight",
                 colormap: str = "inferno", alpha: float = 0.5, panel_inches: float = PANEL_INCHES,
                 max_columns: int = MAX_COLUMNS, chosen_cells=None, boxes=None) -> Path:
    """Write one PNG: the image, then one panel per word with its attention over the image.

    image (H, W, 3) uint8, any aspect ratio; attention (at least len(words), rows, columns).
    style "spotlight" dims what the model did not look at; "heatmap" lays `colormap` over
    the image with transparency `alpha`. chosen_cells: for hard attention, the (row, column)
    used for each word, outlined. boxes: for each word, (K, 4) reference boxes as fractions of the
    image (`captioner.data.entity_matching.boxes_of_words`), drawn dashed. Panels wrap after `max_columns`.
    """
    _check(style, words, attention)
    panels = len(words) + 1
    figure, axes = _figure(panels, min(panels, max_columns), panel_inches, image.shape[0] / image.shape[1])
    axes[0].imshow(image)
    axes[0].set_title("input", fontsize=10)
    for index, word in enumerate(words):
        chosen = None if chosen_cells is None else chosen_cells[index]
        _draw_panel(axes[index + 1], image, attention[index], f"{word} ({attention[index].max():.2f})", style,
                    colormap, alpha, chosen, None if boxes is None else boxes[index])
    return _save(figure, path)


def draw_word_overlays(image: np.ndarray, words: list[str], attention: np.ndarray, directory, stem: str,
                       style: str = "spotlight", colormap: str = "inferno", alpha: float = 0.5,
                       panel_inches: float = 4.0, chosen_cells=None, boxes=None) -> list[Path]:
    """One PNG per word, `STEM_NN_WORD.png` in `directory`: the same panels as `draw_overlay`, larger."""
    _check(style, words, attention)
    paths = []
    for index, word in enumerate(words):
        figure, axes = _figure(1, 1, panel_inches, image.shape[0] / image.shape[1])
        chosen = None if chosen_cells is None else chosen_cells[index]
        _draw_panel(axes[0], image, attention[index], f"{word} ({attention[index].max():.2f})", style, colormap,
                    alpha, chosen, None if boxes is None else boxes[index])
        safe_word = re.sub(r"[^\w-]", "_", word)
        paths.append(_save(figure, Path(directory) / f"{stem}_{index:02d}_{safe_word}.png"))
    return paths


def draw_comparison(image: np.ndarray, rows: list[tuple[str, list[str], np.ndarray, list | None]], path,
                    style: str = "spotlight", colormap: str = "inferno", alpha: float = 0.5,
                    panel_inches: float = PANEL_INCHES) -> Path:
    """One PNG with a row per model, word by word, as the paper's Figure 2 sets soft beside hard attention.

    rows: (label, words, attention (at least len(words), rows, columns), chosen cells or None) for each model;
    each row starts with the image under the model's label, so captions of different lengths line up by word.
    """
    for _, words, attention, _ in rows:
        _check(style, words, attention)
    columns = 1 + max(len(words) for _, words, _, _ in rows)
    aspect = image.shape[0] / image.shape[1]
    figure = Figure(figsize=(columns * panel_inches, len(rows) * (panel_inches * aspect + 0.3)))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for row_axes, (label, words, attention, chosen_cells) in zip(axes, rows):
        row_axes[0].imshow(image)
        row_axes[0].set_title(label, fontsize=10, fontweight="bold")
        for index, word in enumerate(words):
            chosen = None if chosen_cells is None else chosen_cells[index]
            _draw_panel(row_axes[index + 1], image, attention[index], f"{word} ({attention[index].max():.2f})", style,
                        colormap, alpha, chosen)
    return _save(figure, path)
