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

import numpy as np
from PIL import Image

from captioner.utils.atomic import atomic_write_text

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
    return (PAGE.replace("%TITLE%", html.escape(title)).replace("%NOTES%", html.escape(notes))
            .replace("%DATA%", data))


def write_report(entries: list[ReportEntry], path, title: str = "Captions and attention", notes: str = "") -> None:
    atomic_write_text(path, render_report(entries, title, notes))


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; padding: 0 1em; }
  h1 { font-size: 1.4em; margin-bottom: 0.2em; }
  .notes { color: #666; margin-top: 0; }
  .entry { display: flex; gap: 1.5em; align-items: flex-start; border-top: 1px solid #ddd; padding: 1.2em 0; }
  canvas { max-width: 480px; width: 100%; height: auto; border-radius: 4px; background: #000; }
  .side { flex: 1; min-width: 16em; }
  .name { color: #888; font-size: 0.85em; word-break: break-all; }
  .caption { font-size: 1.3em; margin: 0.3em 0 0.6em; }
  .word { padding: 0.05em 0.2em; border-radius: 3px; cursor: pointer; }
  .word:hover, .word:focus, .word.active { background: #ffd54f; outline: none; }
  .hint { color: #888; font-size: 0.85em; }
  .peak { color: #555; font-size: 0.9em; min-height: 1.4em; }
  ol { padding-left: 1.4em; color: #444; }
  .score { color: #999; font-size: 0.85em; }
</style>
</head>
<body>
<h1>%TITLE%</h1>
<p class="notes">%NOTES%</p>
<p class="hint">Hover, click or tab to a word to see where the model looked when it chose that word;
leave the caption to see the whole image.</p>
<main id="entries"></main>
<script id="report-data" type="application/json">%DATA%</script>
<script>
"use strict";
const DIM = 0.25;  // brightness left where the model did not look, as in the PNG overlays
const entries = JSON.parse(document.getElementById("report-data").textContent);

function drawEntry(canvas, image, entry, wordIndex) {
  const context = canvas.getContext("2d");
  context.globalCompositeOperation = "source-over";
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  canvas.dataset.word = String(wordIndex);
  if (wordIndex < 0) return;
  const [rows, columns] = entry.grid;
  const weights = entry.attention[wordIndex];
  const peak = Math.max(...weights) || 1;
  // One pixel per grid cell, dark where attention is low; scaled up smoothly, each pixel's
  // centre lands on its cell's centre, where that cell's receptive field is centred.
  const grid = document.createElement("canvas");
  grid.width = columns;
  grid.height = rows;
  const gridContext = grid.getContext("2d");
  const pixels = gridContext.createImageData(columns, rows);
  for (let cell = 0; cell < rows * columns; cell++) {
    pixels.data[cell * 4 + 3] = Math.round(255 * (1 - DIM) * (1 - weights[cell] / peak));
  }
  gridContext.putImageData(pixels, 0, 0);
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  context.drawImage(grid, 0, 0, canvas.width, canvas.height);
  // The human boxes of the phrases this word heads (captioner caption --entities), dashed green.
  const boxes = entry.boxes ? entry.boxes[wordIndex] : [];
  context.setLineDash([8, 5]);
  context.lineWidth = Math.max(2, canvas.width / 240);
  context.strokeStyle = "#69f0ae";
  for (const [x0, y0, x1, y1] of boxes) {
    context.strokeRect(x0 * canvas.width, y0 * canvas.height, (x1 - x0) * canvas.width, (y1 - y0) * canvas.height);
  }
  context.setLineDash([]);
  // Hard attention: the one cell the model read for this word, outlined in white.
  if (entry.chosen) {
    const [row, column] = entry.chosen[wordIndex];
    const cellWidth = canvas.width / columns, cellHeight = canvas.height / rows;
    context.strokeStyle = "#ffffff";
    context.strokeRect(column * cellWidth, row * cellHeight, cellWidth, cellHeight);
  }
}

function addEntry(entry, number) {
  const section = document.createElement("section");
  section.className = "entry";
  section.id = "entry-" + number;
  const canvas = document.createElement("canvas");
  const side = document.createElement("div");
  side.className = "side";
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = entry.name;
  const caption = document.createElement("div");
  caption.className = "caption";
  const peak = document.createElement("div");
  peak.className = "peak";
  const image = new Image();
  image.onload = () => {
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    drawEntry(canvas, image, entry, -1);
    section.dataset.ready = "1";
  };
  image.src = entry.image;
  const show = (index, span) => {
    caption.querySelectorAll(".word").forEach(w => w.classList.toggle("active", w === span));
    if (image.complete) drawEntry(canvas, image, entry, index);
    const boxed = index >= 0 && entry.boxes && entry.boxes[index].length ?
      `; dashed: the ${entry.boxes[index].length} annotated box(es) of "${entry.words[index]}"` : "";
    const read = index >= 0 && entry.chosen ?
      `; outlined: the one cell it read (row ${entry.chosen[index][0] + 1}, column ${entry.chosen[index][1] + 1})` : "";
    peak.textContent = index < 0 ? "" :
      `"${entry.words[index]}": peak weight ${Math.max(...entry.attention[index]).toFixed(2)}${read}${boxed}`;
  };
  entry.words.forEach((word, index) => {
    const span = document.createElement("span");
    span.className = "word";
    span.tabIndex = 0;
    span.textContent = word;
    span.dataset.index = String(index);
    span.addEventListener("mouseenter", () => show(index, span));
    span.addEventListener("focus", () => show(index, span));
    span.addEventListener("click", () => show(index, span));
    caption.appendChild(span);
    caption.appendChild(document.createTextNode(" "));
  });
  caption.addEventListener("mouseleave", () => { if (!caption.contains(document.activeElement)) show(-1, null); });
  side.append(name, caption, peak);
  if (entry.score !== null) {
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = "beam score (log probability, length-normalised if asked): " + entry.score.toFixed(3);
    side.appendChild(score);
  }
  if (entry.alternatives.length) {
    const heading = document.createElement("div");
    heading.className = "hint";
    heading.textContent = "Other beams:";
    const list = document.createElement("ol");
    list.className = "alternatives";
    for (const [text, score] of entry.alternatives) {
      const item = document.createElement("li");
      item.textContent = text + " ";
      const small = document.createElement("span");
      small.className = "score";
      small.textContent = "(" + score.toFixed(3) + ")";
      item.appendChild(small);
      list.appendChild(item);
    }
    side.append(heading, list);
  }
  section.append(canvas, side);
  document.getElementById("entries").appendChild(section);
}

entries.forEach(addEntry);
</script>
</body>
</html>
"""
