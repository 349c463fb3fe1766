"""Caption scores, and how well attention lands on the object a word names.

BLEU here is nltk's `corpus_bleu` (Papineni et al. 2002: corpus-level n-gram
precision with brevity penalty, no smoothing) on our tokenizer's words. The COCO
toolkit's BLEU tokenises differently and can differ in the second decimal.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from nltk.translate.bleu_score import corpus_bleu

from captioner.data.synthetic import Scene, phrases_in_caption
from captioner.data.vocabulary import tokenize

BLEU_WEIGHTS = {
    "bleu1": (1.0,),
    "bleu2": (0.5, 0.5),
    "bleu3": (1 / 3, 1 / 3, 1 / 3),
    "bleu4": (0.25, 0.25, 0.25, 0.25),
}


def bleu_scores(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 of tokenised hypotheses against each image's reference captions (strings)."""
    tokenised_references = [[tokenize(r) for r in refs] for refs in references]
    hypotheses = [list(h) for h in hypotheses]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns when an n-gram order has no match; the score says so
        return {
            name: float(corpus_bleu(tokenised_references, hypotheses, weights=weights))
            for name, weights in BLEU_WEIGHTS.items()
        }


def cider_d(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """CIDEr-D of tokenised hypotheses against each image's references (pycocoevalcap's, no Java).

    Document frequencies come from the references given, as in the COCO evaluation.
    """
    from captioner.evaluation.coco_metrics import cider_d as coco_cider_d

    return coco_cider_d(dict(enumerate(references)), {i: " ".join(h) for i, h in enumerate(hypotheses)})


def exact_match(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """Share of hypotheses equal, word for word, to one of their references."""
    hits = [list(h) in [tokenize(r) for r in refs] for h, refs in zip(hypotheses, references)]
    return float(np.mean(hits)) if hits else 0.0


def attention_mass_inside(attention: np.ndarray, mask: np.ndarray) -> float:
    """Share of one attention map (rows, columns) that falls inside a pixel mask (H, W).

    Each grid cell's weight is spread evenly over the pixels the cell covers, so
    no smoothing flatters the number.
    """
    rows, columns = attention.shape
    height, width = mask.shape
    row_of_pixel = np.minimum(np.arange(height) * rows // height, rows - 1)
    column_of_pixel = np.minimum(np.arange(width) * columns // width, columns - 1)
    cell_pixels = np.zeros((rows, columns))
    np.add.at(cell_pixels, (row_of_pixel[:, None], column_of_pixel[None, :]), 1.0)
    per_pixel = (attention / cell_pixels)[row_of_pixel[:, None], column_of_pixel[None, :]]
    return float(per_pixel[mask].sum() / per_pixel.sum())


def cells_covering(mask: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """(rows, columns) booleans: which grid cells cover any pixel of the mask (H, W)."""
    height, width = mask.shape
    return np.array([[mask[r * height // rows : (r + 1) * height // rows, c * width // columns : (c + 1) * width // columns].any()
                      for c in range(columns)] for r in range(rows)])


def attention_peaks(captions, scenes: Sequence[Scene]) -> dict[str, float]:
    """Where the maps of object words peak: the silent bugs (uniform or copied maps) fail both numbers.

    peak_on_object: share of shape words whose map peaks on a cell covering the named object;
    peak_chance: the same share for a cell picked at random;
    distinct_peaks: for captions naming two or more objects, share where every object's shape
    word peaks in a different cell.
    """
    hits, chance, distinct = [], [], []
    for caption, scene in zip(captions, scenes):
        peaks = []
        for position, colour, shape in phrases_in_caption(caption.words):
            named = [o for o in scene.objects if o.colour == colour and o.shape == shape]
            if len(named) != 1:
                continue
            attention = caption.attention[position]
            covering = cells_covering(named[0].mask, *attention.shape)
            peak = int(np.argmax(attention))
            hits.append(bool(covering.flat[peak]))
            chance.append(float(covering.mean()))
            peaks.append(peak)
        if len(peaks) >= 2:
            distinct.append(len(set(peaks)) == len(peaks))
    return {
        "peak_on_object": float(np.mean(hits)) if hits else 0.0,
        "peak_chance": float(np.mean(chance)) if chance else 0.0,
        "distinct_peaks": float(np.mean(distinct)) if distinct else 0.0,
    }


def attention_grounding(captions, scenes: Sequence[Scene]) -> dict[str, float]:
    """For each generated colour or shape word, the attention mass on the object it names.

    captions: objects with `.words` and `.attention` (one map per word). A phrase
    "colour shape" names the scene object with that colour and shape; phrases that
    name no object in the scene are skipped. Chance is the object's share of the image.
    """
    inside, chance = [], []
    for caption, scene in zip(captions, scenes):
        for position, colour, shape in phrases_in_caption(caption.words):
            named = [o for o in scene.objects if o.colour == colour and o.shape == shape]
            if len(named) != 1:
                continue
            for word_position in (position - 1, position):  # the colour word, then the shape word
                inside.append(attention_mass_inside(caption.attention[word_position], named[0].mask))
                chance.append(float(named[0].mask.mean()))
    if not inside:
        return {"grounding": 0.0, "grounding_chance": 0.0, "grounding_ratio": 0.0, "grounded_words": 0}
    grounding, chance_level = float(np.mean(inside)), float(np.mean(chance))
    return {
        "grounding": grounding,
        "grounding_chance": chance_level,
        "grounding_ratio": grounding / chance_level,
        "grounded_words": len(inside),
    }
