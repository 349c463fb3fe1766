"""Flickr30k Entities (Plummer et al. 2015): which words of a caption name which boxes of the photo.

Official layout (`annotations.zip` of the BryanPlummer/flickr30k_entities repository):
    Sentences/<id>.txt     the captions, one a line, phrases marked [/EN#<chain>/<type>[/<type>...] words]
    Annotations/<id>.xml   <size> of the ORIGINAL photo, then <object>s, each with one or more <name>
                           (chain ids) and either a <bndbox> (xmin ymin xmax ymax, 1-based pixels, inclusive)
                           or <scene>/<nobndbox> flags
A chain may have several boxes, a box may serve several chains, and `notvisual` phrases have the null
chain 0 and no box. Every Flickr8k photo is a Flickr30k photo: `1000268201_693b08cb0e.jpg` is id 1000268201.

Word positions are those of the project's tokenizer (`captioner.data.vocabulary.tokenize`) on the caption
without its markup, so in "[/EN#2/clothing a red , striped shirt]" the phrase is words [a, red, striped,
shirt]: punctuation never takes a position, as it never takes a step of the decoder.

    read_annotation(DIR, "1000268201")   -> Annotation (sentences with phrases, boxes per chain) or None
    box_coverage(boxes, width, height, rows, cols)   -> share of each grid cell inside the boxes
    attention_targets(split, DIR, vocabulary, max_length, grid)   -> per-word target maps for training
The XML side lives in `captioner.data.entity_boxes`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from pathlib import Path

import numpy as np

from captioner.data.entity_boxes import read_boxes
from captioner.data.readers import ReaderError
from captioner.data.vocabulary import tokenize

SENTENCES, ANNOTATIONS = "Sentences", "Annotations"
NULL_CHAIN = 0  # `notvisual` phrases: never annotated, never boxed
MAX_COVER = 0.9  # phrases whose boxes cover this much of the image say nothing about where to look
_PHRASE = re.compile(r"\[/EN#(?P<chain>\d+)(?P<types>(?:/[^/\s\[\]]+)+)\s+(?P<words>[^\[\]]*)\]")
_BRACKET = re.compile(r"[\[\]]")

Box = tuple[int, int, int, int]  # xmin, ymin, xmax, ymax: 1-based pixels of the original photo, inclusive


@dataclasses.dataclass(frozen=True)
class Phrase:
    chain: int
    types: tuple[str, ...]
    first: int  # index of its first word in `Sentence.words`
    last: int  # index of its last word: the head noun, in English noun phrases


@dataclasses.dataclass(frozen=True)
class Sentence:
    text: str  # the caption without markup
    words: tuple[str, ...]  # tokenize(text)
    phrases: tuple[Phrase, ...]  # those with at least one word


@dataclasses.dataclass(frozen=True)
class Annotation:
    image_id: str
    width: int  # of the original photo: the boxes' frame
    height: int
    boxes: dict[int, tuple[Box, ...]]  # chain -> its boxes
    scene: frozenset[int]  # chains flagged as the whole scene (no box)
    no_box: frozenset[int]  # chains flagged as not visible (no box)
    sentences: tuple[Sentence, ...]

    def boxes_of(self, phrase: Phrase) -> tuple[Box, ...]:
        """The phrase's boxes; none for `notvisual` phrases and chains without a box."""
        if phrase.chain == NULL_CHAIN or "notvisual" in phrase.types:
            return ()
        return self.boxes.get(phrase.chain, ())


def image_id(path) -> str:
    """The Flickr30k id of a Flickr8k file name: the part before `_` (`1000268201_693b08cb0e.jpg` -> 1000268201)."""
    return Path(path).stem.split("_")[0]


# ---- Sentences/<id>.txt -------------------------------------------------------------------------------------

def _pieces(line: str, where: str) -> list[tuple[str, tuple[int, tuple[str, ...]] | None]]:
    """The line cut into (text, None) outside phrases and (words, (chain, types)) for each phrase."""
    pieces, position = [], 0
    while (bracket := _BRACKET.search(line, position)) is not None:
        pieces.append((line[position : bracket.start()], None))
        column = bracket.start() + 1
        if bracket.group() == "]":
            raise ReaderError(f"{where}: column {column}: ']' closes no phrase")
        match = _PHRASE.match(line, bracket.start())
        if match is None:
            close = line.find("]", bracket.start())
            problem = "is never closed" if close < 0 else "must read [/EN#<chain>/<type> words] (no nesting)"
            raise ReaderError(f"{where}: column {column}: phrase {line[bracket.start():][:40]!r} {problem}")
        pieces.append((match["words"], (int(match["chain"]), tuple(match["types"].strip("/").split("/")))))
        position = match.end()
    pieces.append((line[position:], None))
    return pieces


def _word_offsets(text: str) -> list[tuple[int, int]]:
    """(start, end) of each of tokenize(text)'s words in `text` (lower-cased): they come in order, so each is
    the first occurrence after the previous one (an earlier occurrence would have been the tokenizer's match)."""
    offsets, position = [], 0
    for word in tokenize(text):
        start = text.index(word, position)
        offsets.append((start, start + len(word)))
        position = start + len(word)
    return offsets


def parse_sentence(line: str, where: str = "sentence") -> Sentence:
    """One line of a Sentences file; ReaderError naming `where` (file:line) and the column if malformed."""
    text, lowered, spans = "", "", []
    for piece, header in _pieces(line.rstrip("\n"), where):
        start = len(lowered)
        text, lowered = text + piece, lowered + piece.lower()
        if header is not None:
            spans.append((start, len(lowered), header))
    offsets = _word_offsets(lowered)
    phrases = []
    for start, end, (chain, types) in spans:
        inside = [index for index, (a, b) in enumerate(offsets) if a < end and b > start]
        if inside:  # a phrase of punctuation only has no word to attend for
            phrases.append(Phrase(chain, types, inside[0], inside[-1]))
    return Sentence(text.strip(), tuple(lowered[a:b] for a, b in offsets), tuple(phrases))


def read_sentences(path: Path) -> tuple[Sentence, ...]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise ReaderError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return tuple(parse_sentence(line, f"{path}:{number}") for number, line in enumerate(lines, start=1) if line.strip())


def check_layout(entities_dir) -> Path:
    """The directory, if it holds the release's Sentences/ and Annotations/ folders; else ReaderError."""
    root = Path(entities_dir)
    if not (root / SENTENCES).is_dir() or not (root / ANNOTATIONS).is_dir():
        raise ReaderError(f"{root}: no {SENTENCES}/ and {ANNOTATIONS}/ folders (the layout annotations.zip unpacks to)")
    return root


def read_annotation(entities_dir, identifier: str) -> Annotation | None:
    """Sentences and boxes of one image, or None when either file is absent (not annotated)."""
    root = Path(entities_dir)
    sentences_file, boxes_file = root / SENTENCES / f"{identifier}.txt", root / ANNOTATIONS / f"{identifier}.xml"
    if not sentences_file.is_file() or not boxes_file.is_file():
        return None
    width, height, boxes, scene, no_box = read_boxes(boxes_file)
    return Annotation(identifier, width, height, boxes, scene, no_box, read_sentences(sentences_file))


# ---- boxes on the encoder's grid ----------------------------------------------------------------------------

def normalised_boxes(boxes, width: int, height: int) -> np.ndarray:
    """(K, 4) x0, y0, x1, y1 in [0, 1] of the square the model sees.

    The model squeezes every photo into a square without keeping its aspect ratio
    (`captioner.data.images.squeezed`), so x scales by 1/width and y by 1/height. Pixel i (1-based)
    spans [i - 1, i), so a box from pixel 1 to pixel `width` spans the whole width.
    """
    corners = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip((corners - [1, 1, 0, 0]) / [width, height, width, height], 0.0, 1.0)


@functools.cache
def _edges(cells: int) -> np.ndarray:
    """Where `cells` equal cells of [0, 1] begin and end: (cells + 1,)."""
    edges = np.linspace(0.0, 1.0, cells + 1)
    edges.flags.writeable = False  # shared between calls
    return edges


def box_coverage(boxes, width: int, height: int, rows: int, cols: int) -> np.ndarray:
    """(rows * cols,) the fraction of each grid cell covered by the UNION of `boxes` (xmin, ymin, xmax, ymax,
    1-based pixels of a width x height photo); cells in the encoder's row-major order (index row * cols + col).

    The square is cut along every box edge and every cell edge: each piece then lies in one cell and is wholly
    inside the union or wholly outside, so overlapping boxes count once.
    """
    corners = normalised_boxes(boxes, width, height)
    col_edges, row_edges = _edges(cols), _edges(rows)
    if len(corners) == 1:  # the common case, separable: (covered share of each row) x (of each column)
        x0, y0, x1, y1 = corners[0]
        across = np.clip(np.minimum(x1, col_edges[1:]) - np.maximum(x0, col_edges[:-1]), 0, None) * cols
        down = np.clip(np.minimum(y1, row_edges[1:]) - np.maximum(y0, row_edges[:-1]), 0, None) * rows
        return np.clip(np.outer(down, across).ravel(), 0.0, 1.0)
    if not len(corners):
        return np.zeros(rows * cols)
    xs = np.unique(np.concatenate([corners[:, [0, 2]].ravel(), col_edges]))
    ys = np.unique(np.concatenate([corners[:, [1, 3]].ravel(), row_edges]))
    mid_x, mid_y = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    inside_x = (corners[:, 0, None] <= mid_x) & (mid_x <= corners[:, 2, None])  # (K, X)
    inside_y = (corners[:, 1, None] <= mid_y) & (mid_y <= corners[:, 3, None])  # (K, Y)
    covered = (inside_y[:, :, None] & inside_x[:, None, :]).any(axis=0)  # (Y, X)
    area = np.outer(np.diff(ys), np.diff(xs)) * covered
    cell_row = np.minimum((mid_y * rows).astype(int), rows - 1)
    cell_col = np.minimum((mid_x * cols).astype(int), cols - 1)
    cells = (cell_row[:, None] * cols + cell_col[None, :]).ravel()
    per_cell = np.bincount(cells, weights=area.ravel(), minlength=rows * cols)
    return np.clip(per_cell * rows * cols, 0.0, 1.0)  # area / cell area


# ---- targets for attention supervision ----------------------------------------------------------------------

def phrase_coverage(annotation: Annotation, phrase: Phrase, grid: tuple[int, int], cache: dict) -> np.ndarray | None:
    """box_coverage of the phrase's boxes on the grid, None when it has none; kept in `cache` per chain."""
    boxes = annotation.boxes_of(phrase)
    if not boxes:
        return None
    if phrase.chain not in cache:
        cache[phrase.chain] = box_coverage(boxes, annotation.width, annotation.height, *grid)
    return cache[phrase.chain]


def _fill_targets(rows: np.ndarray, sentence: Sentence, annotation: Annotation, length: int, grid, max_cover: float,
                  cache: dict, counts: collections.Counter) -> None:
    """Write the normalised box map of each boxed phrase of `sentence` into `rows` (max_length + 1, L)."""
    for phrase in sentence.phrases:
        coverage = phrase_coverage(annotation, phrase, grid, cache)
        if coverage is None or phrase.first >= length or not coverage.any():
            continue  # no box (or boxes outside the photo), or cut off with the caption's end
        if coverage.mean() >= max_cover:
            counts["phrases_too_large"] += 1
            continue
        last = min(phrase.last, length - 1)
        rows[phrase.first : last + 1] = coverage / coverage.sum()
        counts["phrases_supervised"] += 1
        counts["words_supervised"] += last + 1 - phrase.first


def attention_targets(split, entities_dir, vocabulary, max_length: int, grid: tuple[int, int],
                      max_cover: float = MAX_COVER) -> tuple[np.ndarray, dict]:
    """Per-caption target maps: float16 (P, max_length + 1, rows * cols) and a summary of counts.

    P and the caption order are `caption_pairs`' (captioner/training/prepare.py): image-major, every caption
    of `split.captions[i]` in order. Row t is the map for word t (0-based) as `vocabulary.encode_batch(...,
    max_length)` encodes the caption: the decoder's step t (input ids[:, :-1], target ids[:, 1:]) predicts it.
    A word inside a phrase whose chain has boxes gets the boxes' coverage of each cell, normalised to sum 1;
    every other row is zero (unsupervised). A caption is matched to the Entities sentence of its image with
    the same words (tokenize ignores case and punctuation); unmatched captions stay zero. Phrases whose boxes
    cover `max_cover` of the image or more are left out; images without annotation files are counted.
    """
    root = check_layout(entities_dir)
    references = [caption for captions in split.captions for caption in captions]
    targets = np.zeros((len(references), max_length + 1, grid[0] * grid[1]), dtype=np.float16)
    counts = collections.Counter(images=len(split.captions), captions=len(references))
    annotations: dict[str, Annotation | None] = {}  # each file parsed once per call
    row = 0
    for path, captions in zip(split.paths, split.captions):
        identifier = image_id(path)
        if identifier not in annotations:
            annotations[identifier] = read_annotation(root, identifier)
        annotation = annotations[identifier]
        counts["images_annotated" if annotation is not None else "images_missing"] += 1
        by_words, cache = {}, {}
        for sentence in annotation.sentences if annotation is not None else ():
            by_words.setdefault(sentence.words, sentence)
        for caption in captions:
            sentence = by_words.get(tuple(tokenize(caption)))
            if sentence is not None:
                counts["captions_matched"] += 1
                length = len(vocabulary.encode(caption, max_length)) - 2  # the words the encoding keeps
                _fill_targets(targets[row], sentence, annotation, length, grid, max_cover, cache, counts)
            row += 1
    keys = ("images", "images_annotated", "images_missing", "captions", "captions_matched", "phrases_supervised",
            "words_supervised", "phrases_too_large")
    return targets, {key: int(counts[key]) for key in keys}

