"""Our per-batch CIDEr-D against pycocoevalcap's on fixed examples, with the same document frequencies."""

import numpy as np
import pytest
from pycocoevalcap.cider.cider_scorer import CiderScorer

from captioner.evaluation.cider import CiderD
from captioner.evaluation.coco_metrics import cider_d as coco_cider_d

REFERENCES = [
    ["a dog runs on the grass", "a brown dog running outside", "the dog plays in a field"],
    ["two children play in the water", "kids splash in a pool", "two kids swimming"],
    ["a man rides a bike down the street", "a cyclist on a city road", "man riding a bicycle"],
    ["a woman holds an umbrella in the rain", "person with umbrella", "a lady walks in the rain"],
]
HYPOTHESES = ["a dog runs in a field", "two kids play in the water", "a man on a bike", "a dog in the rain"]


def test_matches_pycocoevalcap_cider_d_on_fixed_examples():
    corpus = [[r.split() for r in refs] for refs in REFERENCES]
    ours = CiderD(corpus).scores([h.split() for h in HYPOTHESES], corpus)
    theirs = coco_cider_d(dict(enumerate(REFERENCES)), dict(enumerate(HYPOTHESES)))
    assert ours.mean() == pytest.approx(theirs, rel=1e-6)
    scorer = CiderScorer(n=4, sigma=6.0)  # and image by image
    for hypothesis, refs in zip(HYPOTHESES, REFERENCES):
        scorer += (hypothesis, refs)
    _, per_image = scorer.compute_score()
    np.testing.assert_allclose(ours, per_image, rtol=1e-6)


def test_a_reference_scores_higher_than_a_wrong_caption_and_empty_scores_zero():
    corpus = [[r.split() for r in refs] for refs in REFERENCES]
    cider = CiderD(corpus)
    right = cider.score(REFERENCES[0][0].split(), corpus[0])
    wrong = cider.score(REFERENCES[1][0].split(), corpus[0])
    assert right > 1.0 > wrong >= 0.0
    assert cider.score([], corpus[0]) == 0.0
