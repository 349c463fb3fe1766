import numpy as np
import pytest
import tensorflow as tf
from helpers import make_captioner

from captioner.config import Config
from captioner.model.attention import SCORES
from captioner.training import Trainer, caption_loss


def _features_and_tokens(captioner, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    locations, size = captioner.feature_shape
    features = rng.normal(size=(batch, locations, size)).astype("float32")
    tokens = captioner.vocabulary.encode_batch(["a small red circle", "a blue square", "there is a circle"][:batch], 8)
    return features, tokens


def test_attention_weights_sum_to_one_and_move_between_steps(small_captioner):
    features, tokens = _features_and_tokens(small_captioner)
    logits, weights = small_captioner.decoder(features, tokens[:, :-1])
    weights = np.asarray(weights)
    assert logits.shape == (3, tokens.shape[1] - 1, len(small_captioner.vocabulary))
    assert weights.shape == (3, tokens.shape[1] - 1, small_captioner.feature_shape[0])
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
    assert np.abs(np.diff(weights, axis=1)).max() > 1e-4  # not one map repeated for every word


def test_padding_does_not_change_the_loss(small_captioner):
    features, tokens = _features_and_tokens(small_captioner)
    padded = np.concatenate([tokens, np.zeros((tokens.shape[0], 5), tokens.dtype)], axis=1)
    losses = []
    for ids in (tokens, padded):
        logits, weights = small_captioner.decoder(features, ids[:, :-1])
        losses.append([float(x) for x in caption_loss(logits, ids[:, 1:], weights, attention_lambda=1.0)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_loss_is_a_mean_over_real_words_not_padding():
    targets = tf.constant([[5, 6, 0, 0]])
    logits = tf.one_hot([[5, 6, 1, 1]], 8) * 20.0  # confident and right on the real words
    attention = tf.fill([1, 4, 2], 0.5)
    _, cross_entropy, _ = caption_loss(logits, targets, attention, 0.0)
    assert float(cross_entropy) < 1e-6


def test_label_smoothing_matches_a_smoothed_target_and_keeps_the_plain_cross_entropy():
    rng = np.random.default_rng(4)
    logits = tf.constant(rng.normal(size=(2, 3, 5)), tf.float32)
    targets = tf.constant([[1, 2, 0], [3, 0, 0]])
    attention = tf.fill([2, 3, 4], 0.25)
    plain, plain_cross_entropy, _ = caption_loss(logits, targets, attention, 0.0)
    smoothed, cross_entropy, _ = caption_loss(logits, targets, attention, 0.0, label_smoothing=0.2)
    log_p = tf.nn.log_softmax(logits).numpy()
    soft_targets = 0.8 * np.eye(5)[targets.numpy()] + 0.2 / 5
    mask = targets.numpy() != 0
    expected = -(soft_targets * log_p).sum(-1)[mask].mean()
    np.testing.assert_allclose(float(smoothed), expected, rtol=1e-5)
    assert float(cross_entropy) == float(plain_cross_entropy) == float(plain)


def test_initial_state_depends_on_the_image(small_captioner):
    features, _ = _features_and_tokens(small_captioner)
    _, _, (hidden, cell) = small_captioner.decoder.prepare(features)
    assert np.abs(np.asarray(hidden[0]) - np.asarray(hidden[1])).max() > 1e-4
    assert np.abs(np.asarray(cell[0]) - np.asarray(cell[1])).max() > 1e-4


@pytest.mark.parametrize("score", SCORES)
def test_each_attention_score_trains_a_step(score):
    captioner = make_captioner(attention=score, feature_units=32, units=32)
    config = Config(learning_rate=3e-3, lr_schedule="constant", batch_size=3)
    features, tokens = _features_and_tokens(captioner)
    trainer = Trainer(captioner, config)
    before = [np.array(v) for v in captioner.decoder.trainable_variables]
    first = float(trainer.train_step(features, tokens)[0])
    for _ in range(10):
        last = float(trainer.train_step(features, tokens)[0])
    changed = [not np.allclose(b, np.array(v)) for b, v in zip(before, captioner.decoder.trainable_variables)]
    assert all(changed), "every trainable variable should get a gradient"
    assert last < first
