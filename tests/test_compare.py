import json

import numpy as np
import pytest

from captioner.data.vocabulary import tokenize
from captioner.evaluation.compare import bleu_statistics, corpus_bleu_from, load_captions, paired_bootstrap
from captioner.evaluation.metrics import bleu_scores

REFERENCES = [
    ["a dog runs on the grass", "a brown dog is running through a field", "the dog plays outside"],
    ["a man rides a bike", "a person is riding a bicycle down the street", "a cyclist on a road"],
    ["two children play in the water", "kids splash in a pool", "two young girls swim in the pool"],
    ["a woman sits on a bench", "a lady is sitting on a park bench", "a woman rests outside"],
]
GOOD = ["a brown dog is running on the grass", "a man is riding a bike down the street",
        "two children play in a pool", "a woman is sitting on a bench"]
POOR = ["a man in a shirt", "a dog", "a man in a shirt", "a dog in the water"]


def _tokens(texts):
    return [tokenize(t) for t in texts]


def _references(scale=1):
    return [[tokenize(r) for r in refs] for refs in REFERENCES * scale]


def test_corpus_bleu_from_per_image_statistics_equals_nltk():
    statistics = np.stack([bleu_statistics(h, r) for h, r in zip(_tokens(GOOD + POOR), _references(2))])
    expected = bleu_scores(_tokens(GOOD + POOR), REFERENCES * 2)["bleu4"]
    assert corpus_bleu_from(statistics) == pytest.approx(expected, abs=1e-9)
    # A batch of draws at once: each row of indices is one set of images.
    draws = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    np.testing.assert_allclose(corpus_bleu_from(statistics[draws]),
                               [bleu_scores(_tokens(GOOD), REFERENCES)["bleu4"], corpus_bleu_from(statistics[4:])])


def test_identical_captions_differ_by_exactly_nothing():
    report = paired_bootstrap(_tokens(GOOD * 5), _tokens(GOOD * 5), _references(5), draws=200)
    for row in report.values():
        assert row["difference"] == 0 and row["interval"] == (0.0, 0.0) and row["b_ahead"] == 0


def test_clearly_better_captions_win_every_draw_and_swapping_flips_the_sign():
    better = paired_bootstrap(_tokens(POOR * 5), _tokens(GOOD * 5), _references(5), draws=300)
    worse = paired_bootstrap(_tokens(GOOD * 5), _tokens(POOR * 5), _references(5), draws=300)
    for metric in ("CIDEr-D", "BLEU-4"):
        low, high = better[metric]["interval"]
        assert 0 < low <= better[metric]["difference"] <= high
        assert better[metric]["b_ahead"] == 1.0
        assert worse[metric]["difference"] == pytest.approx(-better[metric]["difference"])


def test_captions_file_must_cover_the_split(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps([{"image_id": "a.jpg", "caption": "a dog"}]))
    assert load_captions(path, ["a.jpg"]) == ["a dog"]
    with pytest.raises(ValueError, match="no caption for 1 of"):
        load_captions(path, ["a.jpg", "b.jpg"])
    path.write_text("[{")
    with pytest.raises(ValueError, match="captions.json: not a captions file"):
        load_captions(path, ["a.jpg"])
