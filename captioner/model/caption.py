"""What a search returns for one image: the words, the map behind each, the score and the runners-up.

Kept apart from the Keras model so that code without TensorFlow (the NumPy model of
`captioner.numpy_model`, the command line before it loads a model) can build and read captions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from captioner.data.vocabulary import Vocabulary


@dataclasses.dataclass
class Caption:
    words: list[str]
    attention: np.ndarray  # (len(words) + 1, rows, columns): one map per word, then `<end>`'s
    score: float | None = None  # beam search's (normalised) log probability
    alternatives: list[tuple[str, float]] = dataclasses.field(default_factory=list)  # beam search's runners-up
    chosen_cells: list[tuple[int, int]] | None = None  # hard attention (argmax): the one cell used for each word

    @property
    def text(self) -> str:
        return " ".join(self.words)


def best_caption(vocabulary: Vocabulary, grid: tuple[int, int], word_ids, weights, scores,
                 marks_chosen_cells: bool = False) -> Caption:
    """The best of one image's searched captions with its maps; the others as alternatives.

    word_ids (K, T) and weights (K, T, L), best first; scores (K,) (NaN for greedy search).
    marks_chosen_cells: the model used one cell per word (hard attention, argmax), so say which.
    """
    rows, columns = grid
    words = vocabulary.decode(word_ids[0])
    steps = min(len(words) + 1, word_ids.shape[1])  # the words and the `<end>` after them
    alternatives = [(" ".join(vocabulary.decode(ids)), float(score))
                    for ids, score in zip(word_ids[1:], scores[1:]) if np.isfinite(score)]
    attention = weights[0, :steps].reshape(steps, rows, columns)
    chosen = None
    if marks_chosen_cells:
        chosen = [tuple(int(i) for i in np.unravel_index(np.argmax(m), m.shape)) for m in attention]
    return Caption(words, attention, None if np.isnan(scores[0]) else float(scores[0]), alternatives, chosen)


ATTENTION_DECIMALS = 4


def caption_json(caption: Caption, grid) -> dict:
    """What `predict.py --json` and `captioner serve` say of a caption: its words, each word's attention grid
    (rows x columns), the score, the cells a hard-attention model read, and the other beams."""
    return {
        "caption": caption.text,
        "words": caption.words,
        "grid": list(grid),
        "attention": np.round(caption.attention[: len(caption.words)], ATTENTION_DECIMALS).tolist(),
        "score": caption.score,
        **({"chosen_cells": [list(cell) for cell in caption.chosen_cells[: len(caption.words)]]}
           if caption.chosen_cells else {}),
        "alternatives": [{"caption": text, "score": score} for text, score in caption.alternatives],
    }
