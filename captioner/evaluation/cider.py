"""CIDEr-D for every caption of every batch: the reward of self-critical training.

CIDEr-D (Vedantam et al. 2015, as in the COCO toolkit) compares a caption with each
reference as TF-IDF vectors of its 1- to 4-grams: n-grams that many images' references
use (\"a\", \"in the\") count for little, rare ones for much. Per n: the cosine-like
similarity with the candidate's counts clipped to the reference's, times a Gaussian
penalty on the length difference (sigma 6); averaged over n, over references, times 10.

Document frequencies are fixed once, from the training references, so a caption's reward
does not depend on what else is in its batch. The references' vectors are computed once
per image and reused every epoch. `tests/test_cider.py` checks the scores against
pycocoevalcap's on the same corpus.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np

MAX_N = 4
SIGMA = 6.0
SCALE = 10.0


def ngram_counts(words: Sequence[str]) -> Counter:
    return Counter(tuple(words[i : i + n]) for n in range(1, MAX_N + 1) for i in range(len(words) - n + 1))


class _Vector:
    """A caption as TF-IDF weights per n-gram order, their norms, and its length."""

    __slots__ = ("weights", "norms", "length")

    def __init__(self, counts: Counter, idf):
        self.weights = [dict() for _ in range(MAX_N)]
        squares = np.zeros(MAX_N)
        self.length = 0
        for ngram, count in counts.items():
            order = len(ngram) - 1
            weight = count * idf(ngram)
            self.weights[order][ngram] = weight
            squares[order] += weight * weight
            if order == 1:
                # The COCO toolkit measures length in bigrams; kept so the scores match the published ones.
                self.length += count
        self.norms = np.sqrt(squares)


class CiderD:
    """CIDEr-D with document frequencies from a fixed corpus of reference sets (one set per image)."""

    def __init__(self, corpus: Sequence[Sequence[Sequence[str]]]):
        """corpus: for each image, its reference captions as word lists."""
        self.document_frequency = Counter()
        for references in corpus:
            self.document_frequency.update(set().union(*(ngram_counts(r) for r in references)))
        self.log_images = math.log(float(len(corpus)))
        self._references: dict = {}

    def _idf(self, ngram) -> float:
        return self.log_images - math.log(max(1.0, self.document_frequency.get(ngram, 0)))

    def _vectors(self, references) -> list[_Vector]:
        key = tuple(tuple(r) for r in references)
        if key not in self._references:
            self._references[key] = [_Vector(ngram_counts(r), self._idf) for r in references]
        return self._references[key]

    def _similarity(self, candidate: _Vector, reference: _Vector) -> float:
        penalty = math.exp(-((candidate.length - reference.length) ** 2) / (2 * SIGMA**2))
        total = 0.0
        for order in range(MAX_N):
            if candidate.norms[order] == 0 or reference.norms[order] == 0:
                continue
            ref_weights = reference.weights[order]
            overlap = sum(min(weight, ref_weights[ngram]) * ref_weights[ngram]
                          for ngram, weight in candidate.weights[order].items() if ngram in ref_weights)
            total += penalty * overlap / (candidate.norms[order] * reference.norms[order])
        return total / MAX_N

    def score(self, candidate: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        vector = _Vector(ngram_counts(candidate), self._idf)
        reference_vectors = self._vectors(references)
        return SCALE * sum(self._similarity(vector, r) for r in reference_vectors) / len(reference_vectors)

    def scores(self, candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> np.ndarray:
        """One score per candidate; references[i] are candidate i's image's references."""
        return np.array([self.score(c, r) for c, r in zip(candidates, references)], dtype=np.float32)
