"""One self-contained HTML page to explore captions and attention: no server, no network.

Each image is embedded as a JPEG data URI and each word's attention grid as numbers;
the page's script draws a map when a word is hovered, clicked or focused (keyboard),
upsampling the small grid with the browser's smooth image scaling over the image, so
the file stays small (a few numbers per word, not a picture per word).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.utils.atomic import atomic_write_text

STATIC = Path(__file__).resolve().parent / "static"
STYLE = (STATIC / "attention_view.css").read_text()  # shared with `captioner serve`'s page
SCRIPT = (STATIC / "attention_view.js").read_text()
JPEG_QUALITY = 85
GRID_DECIMALS = 4


@dataclass
class ReportEntry:
    name: str
    image: np.ndarray  # (H, W, 3) uint8, any aspect ratio
    words: list[str]
    attention: np.ndarray  # (at least len(words), rows, columns)
    score: float | None = None
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    boxes: list | None = None  # per word, (K, 4) reference boxes as fractions of the image (`--entities`)
    chosen_cells: list[tuple[int, int]] | None = None  # hard attention: the (row, column) each word read


def _data_uri(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _entry_json(entry: ReportEntry) -> dict:
    rows, columns = entry.attention.shape[1:]
    return {
        "name": entry.name,
        "image": _data_uri(entry.image),
        "words": entry.words,
        "grid": [rows, columns],
        "attention": np.round(entry.attention[: len(entry.words)], GRID_DECIMALS).reshape(len(entry.words), -1).tolist(),
        "score": entry.score,
        "alternatives": [[text, round(score, 4)] for text, score in entry.alternatives],
        "boxes": None if entry.boxes is None else [np.round(np.asarray(b, dtype=float).reshape(-1, 4), 4).tolist()
                                                   for b in entry.boxes[: len(entry.words)]],
        "chosen": None if entry.chosen_cells is None else [list(cell) for cell in entry.chosen_cells[: len(entry.words)]],
    }


def render_report(entries: list[ReportEntry], title: str = "Captions and attention", notes: str = "") -> str:
    data = json.dumps([_entry_json(entry) for entry in entries])
    data = data.replace("</", "<\\/")  # the JSON sits inside a <script> element
    return (PAGE.replace("%STYLE%", STYLE).replace("%SCRIPT%", SCRIPT).replace("%TITLE%", html.escape(title))
            .replace("%NOTES%", html.escape(notes)).replace("%DATA%", data))


def write_report(entries: list[ReportEntry], path, title: str = "Captions and attention", notes: str = "") -> None:
    atomic_write_text(path, render_report(entries, title, notes))


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
%STYLE%</style>
</head>
<body>
<h1>%TITLE%</h1>
<p class="notes">%NOTES%</p>
<p class="hint">Hover, click or tab to a word to see where the model looked when it chose that word;
leave the caption to see the whole image.</p>
<main id="entries"></main>
<script id="report-data" type="application/json">%DATA%</script>
<script>
%SCRIPT%
const entries = JSON.parse(document.getElementById("report-data").textContent);
entries.forEach((entry, number) => addEntry(entry, number));
</script>
</body>
</html>
"""
