"""`no_repeat_ngram`: beam search never writes an n-gram twice in one caption, in Keras and in NumPy alike,
and a model keeps the setting it was given."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import SMALL_IMAGE, make_captioner

from captioner.model import search
from captioner.model.saving import save_model
from captioner.numpy_model import load_numpy_captioner
from captioner.numpy_model import search as numpy_search


def _banned_by_definition(words: np.ndarray, step: int, n: int, vocabulary_size: int) -> np.ndarray:
    """(N, V) True where a word would complete an n-gram already among words[:, :step], one caption at a time."""
    banned = np.zeros((len(words), vocabulary_size), bool)
    for row, caption in enumerate(words[:, :step].tolist()):
        grams = {tuple(caption[i : i + n]) for i in range(len(caption) - n + 1)}
        for word in range(vocabulary_size):
            banned[row, word] = tuple((caption + [word])[-n:]) in grams if len(caption) + 1 >= n else False
    return banned


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_the_penalty_bans_exactly_the_words_that_would_repeat_an_ngram(n):
    vocabulary_size, columns = 5, 9  # few words: repeats are common
    words = np.random.default_rng(n).integers(0, vocabulary_size, size=(40, columns)).astype(np.int32)
    for step in range(columns + 1):
        expected = _banned_by_definition(words, step, n, vocabulary_size)
        in_numpy = numpy_search.repeated_ngram_penalty(words, step, n, vocabulary_size)
        in_graph = search.repeated_ngram_penalty(tf.constant(words[:, None]), tf.constant(step), n, vocabulary_size)
        np.testing.assert_array_equal(in_numpy < 0, expected, err_msg=f"NumPy, step {step}")
        np.testing.assert_array_equal(np.asarray(in_graph)[:, 0] < 0, expected, err_msg=f"graph, step {step}")
    assert expected.any() and not expected.all()  # the case is not trivial


def _repeats(words: list[str], n: int) -> bool:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) < len(grams)


def test_beam_search_never_repeats_an_ngram_and_both_engines_agree(tmp_path):
    model = make_captioner(seed=3)
    path = tmp_path / "model.keras"
    save_model(model, path)
    numpy_model = load_numpy_captioner(path)
    images = np.random.default_rng(0).uniform(0, 255, (6, SMALL_IMAGE, SMALL_IMAGE, 3)).astype(np.float32)
    # A strong length penalty makes a random model write long captions, which repeat themselves.
    free = model.caption(images, beam_size=3, length_penalty=3.0, no_repeat_ngram=0)
    assert any(_repeats(c.words, 2) for c in free)
    for engine in (model, numpy_model):
        blocked = engine.caption(images, beam_size=3, length_penalty=3.0, no_repeat_ngram=2)
        assert not any(_repeats(c.words, 2) for c in blocked)
        assert all(not _repeats(text.split(), 2) for c in blocked for text, _ in c.alternatives)
    keras_words = [c.words for c in model.caption(images, beam_size=3, length_penalty=3.0, no_repeat_ngram=2)]
    assert keras_words == [c.words for c in numpy_model.caption(images, 3, length_penalty=3.0, no_repeat_ngram=2)]
    # Greedy search with blocking is a beam of one that obeys it too.
    assert not any(_repeats(c.words, 2) for c in model.caption(images, beam_size=1, no_repeat_ngram=2))
