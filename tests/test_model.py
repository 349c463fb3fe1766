import numpy as np
import pytest
from helpers import make_captioner

from captioner.model.saving import load_captioner


def test_keras_file_round_trip_gives_identical_captions(tmp_path, random_images):
    captioner = make_captioner(seed=3)
    path = tmp_path / "model.keras"
    captioner.save(path)
    loaded = load_captioner(path)
    for beam in (1, 3):
        original = captioner.caption(random_images, beam_size=beam)
        again = loaded.caption(random_images, beam_size=beam)
        assert [c.words for c in original] == [c.words for c in again]
        for a, b in zip(original, again):
            np.testing.assert_allclose(a.attention, b.attention, atol=1e-6)
    assert loaded.vocabulary.words == captioner.vocabulary.words


def test_beam_width_one_equals_greedy(random_images):
    captioner = make_captioner(seed=4)
    greedy = captioner.caption(random_images, beam_size=1)
    features = captioner.encoder(random_images)
    from captioner.model.search import beam_search

    vocabulary = captioner.vocabulary
    word_ids, weights, _ = beam_search(captioner.decoder, features, vocabulary.start_id, vocabulary.end_id, 8, beam_size=1)
    for caption, ids, attention in zip(greedy, word_ids.numpy(), weights.numpy()):
        assert caption.words == vocabulary.decode(ids)
        steps = len(caption.attention)
        np.testing.assert_allclose(caption.attention.reshape(steps, -1), attention[:steps], atol=1e-6)


def test_wide_beam_finds_the_most_likely_caption(random_images):
    """With every prefix kept, beam search must return the best caption found by enumerating them all."""
    import itertools

    import tensorflow as tf

    from captioner.model.search import beam_search

    captioner = make_captioner(seed=5)
    vocabulary = captioner.vocabulary
    features = captioner.encoder(random_images[:1])
    never = (vocabulary.pad_id, vocabulary.start_id, vocabulary.end_id, vocabulary.unknown_id)
    words = [i for i in range(len(vocabulary)) if i not in never]
    max_length = 2
    candidates = [list(c) for n in (1, 2) for c in itertools.product(words, repeat=n)]
    token_ids = np.array([[vocabulary.start_id] + c + [vocabulary.end_id] * (3 - len(c)) for c in candidates])
    logits, _ = captioner.decoder(np.repeat(features, len(candidates), axis=0), token_ids[:, :-1])
    log_probs = tf.nn.log_softmax(logits).numpy()
    totals = [sum(log_probs[row, t, token_ids[row, t + 1]] for t in range(len(c) + 1)) for row, c in enumerate(candidates)]
    best = int(np.argmax(totals))
    ids, _, score = beam_search(captioner.decoder, features, vocabulary.start_id, vocabulary.end_id, max_length,
                                beam_size=len(vocabulary) ** 2)
    assert vocabulary.decode(ids.numpy()[0]) == vocabulary.decode(candidates[best])
    np.testing.assert_allclose(score.numpy()[0], totals[best], rtol=1e-4)


def test_unknown_word_is_never_written(random_images):
    captioner = make_captioner(seed=7)
    # Make `<unk>` the most likely word everywhere: the searches must still pick real words.
    bias = captioner.decoder.output_projection.bias
    bias.assign(np.where(np.arange(bias.shape[0]) == captioner.vocabulary.unknown_id, 50.0, np.asarray(bias)))
    for beam_size in (1, 3):
        for caption in captioner.caption(random_images, beam_size=beam_size, max_length=4):
            assert "<unk>" not in caption.words and caption.words


def test_captions_respect_max_length_and_carry_one_map_per_word(random_images):
    captioner = make_captioner(seed=6)
    for caption in captioner.caption(random_images, beam_size=2, max_length=3):
        assert len(caption.words) <= 3
        assert caption.attention.shape[1:] == captioner.grid
        assert len(caption.attention) >= len(caption.words)
        np.testing.assert_allclose(caption.attention.sum(axis=(1, 2)), 1.0, atol=1e-5)


def test_loading_a_missing_or_wrong_file_says_so(tmp_path):
    with pytest.raises(ValueError, match="no such model file"):
        load_captioner(tmp_path / "missing.keras")
    bad = tmp_path / "bad.keras"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="bad.keras"):
        load_captioner(bad)
