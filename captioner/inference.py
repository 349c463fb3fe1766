"""Captioning image files: load what can be loaded, report what cannot, caption the rest in batches."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from captioner.images import ImageError, load_images
from captioner.model import Caption, Captioner
from captioner.overlay import draw_overlay, draw_word_overlays
from captioner.report import ReportEntry

ATTENTION_DECIMALS = 4


@dataclasses.dataclass
class Result:
    path: str
    caption: Caption | None = None
    error: str | None = None
    display: np.ndarray | None = None  # the whole image, aspect ratio kept, for overlays and reports


def caption_files(captioner: Captioner, paths: list[str], beam_size: int = 1, max_length: int | None = None,
                  batch_size: int = 16, length_penalty: float = 0.0) -> Iterator[Result]:
    """One Result per path, in order; a bad file gives a Result with `error` and the others go on."""
    size = captioner.encoder.image_size
    for start in range(0, len(paths), batch_size):
        results, images = [], []
        for path in paths[start : start + batch_size]:
            try:
                image, display = load_images(path, size)
            except ImageError as error:
                results.append(Result(path, error=str(error)))
                continue
            results.append(Result(path, display=display))
            images.append(image)
        captions = iter(captioner.caption(np.stack(images), beam_size, max_length, length_penalty) if images else [])
        for result in results:
            if result.error is None:
                result.caption = next(captions)
            yield result


def result_json(result: Result, captioner: Captioner) -> str:
    """One JSON line: path, caption, words and each word's attention grid (rows x columns)."""
    caption = result.caption
    return json.dumps(
        {
            "path": result.path,
            "caption": caption.text,
            "words": caption.words,
            "grid": list(captioner.grid),
            "attention": np.round(caption.attention[: len(caption.words)], ATTENTION_DECIMALS).tolist(),
            "score": caption.score,
            **({"chosen_cells": caption.chosen_cells[: len(caption.words)]} if caption.chosen_cells else {}),
            "alternatives": [{"caption": text, "score": score} for text, score in caption.alternatives],
        }
    )


def overlay_path(overlay_dir, image_path: str, index: int) -> Path:
    """A unique PNG name per input: its position, then its own name."""
    return Path(overlay_dir) / f"{index:04d}_{Path(image_path).stem}.png"


def write_overlay(result: Result, overlay_dir, index: int, per_word: bool = False, **style) -> list[Path]:
    """The overlay PNG of one result (or one PNG per word); `style`: draw_overlay's drawing options."""
    caption = result.caption
    if per_word:
        stem = overlay_path(overlay_dir, result.path, index).stem
        return draw_word_overlays(result.display, caption.words, caption.attention, overlay_dir, stem,
                                  chosen_cells=caption.chosen_cells, **style)
    return [draw_overlay(result.display, caption.words, caption.attention, overlay_path(overlay_dir, result.path, index),
                         chosen_cells=caption.chosen_cells, **style)]


def report_entry(result: Result) -> ReportEntry:
    caption = result.caption
    return ReportEntry(result.path, result.display, caption.words, caption.attention, caption.score, caption.alternatives)
