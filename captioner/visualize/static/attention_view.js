// Drawing a word's attention over its photo, shared by the HTML report and the `captioner serve` page.
// An entry: {name, image (a URL), words, grid [rows, columns], attention (one flat row-major grid per word),
// score, alternatives [[text, score]], boxes (per word, fractions of the image) or null, chosen (per word,
// the [row, column] a hard-attention model read) or null}.
"use strict";
const DIM = 0.25;  // brightness left where the model did not look, as in the PNG overlays

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

// One section per captioned image: the canvas, the caption's words to hover, click or tab to, the beams.
// Used by the HTML report (inlined) and by `captioner serve`'s page (served as /static/attention_view.js).
function addEntry(entry, number, container) {
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
  (container || document.getElementById("entries")).appendChild(section);
  return section;
}

