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


def test_a_fused_grid_is_projected_per_coarse_cell_with_the_same_result_and_gradients():
    """W [a; repeat(b)] = W_a a + repeat(W_b b): the fast projection of fused features changes no number."""
    from captioner.model.decoder import DecoderWithAttention

    layout = [[4, 4, 6], [2, 2, 5]]  # a 4x4 grid of 6 channels beside a 2x2 grid of 5, repeated 2x2
    rng = np.random.default_rng(0)
    fine, coarse = rng.normal(size=(3, 4, 4, 6)), rng.normal(size=(3, 2, 2, 5))
    repeated = coarse.repeat(2, axis=1).repeat(2, axis=2)
    features = tf.constant(np.concatenate([fine, repeated], -1).reshape(3, 16, 11), tf.float32)
    tokens = tf.constant([[1, 4, 5], [1, 6, 2], [1, 3, 3]])
    plain, fast = (DecoderWithAttention(9, embedding_dim=4, units=8, attention_units=4, feature_units=7, dropout=0.0,
                                        fused_layout=fused) for fused in (None, layout))
    for decoder in (plain, fast):
        decoder.build(features.shape)
    fast.set_weights(plain.get_weights())

    def loss_and_gradients(decoder):
        with tf.GradientTape() as tape:
            logits, weights = decoder(features, tokens)
            loss = tf.reduce_sum(logits**2) + tf.reduce_sum(decoder.prepare(features)[0])
        return loss, tape.gradient(loss, decoder.trainable_variables)

    np.testing.assert_allclose(fast.prepare(features)[0], plain.prepare(features)[0], rtol=1e-5, atol=1e-5)
    (plain_loss, plain_gradients), (fast_loss, fast_gradients) = map(loss_and_gradients, (plain, fast))
    np.testing.assert_allclose(fast_loss, plain_loss, rtol=1e-5)
    for fast_gradient, plain_gradient in zip(fast_gradients, plain_gradients):
        np.testing.assert_allclose(tf.convert_to_tensor(fast_gradient), tf.convert_to_tensor(plain_gradient),
                                   rtol=1e-4, atol=1e-5)  # (embedding gradients come as IndexedSlices)
    assert DecoderWithAttention.from_config(fast.get_config()).fused_layout == layout


def test_a_captioner_tells_its_decoders_the_layout_of_a_fused_encoder():
    from captioner.data.vocabulary import SPECIAL_TOKENS
    from captioner.model.captioner import Captioner

    decoder = dict(embedding_dim=4, units=8, attention_units=4, feature_units=8, dropout=0.0)
    fused = Captioner([*SPECIAL_TOKENS, "dog"], dict(backbone="mobilenet_v2", weights=None, image_size=96,
                                         layer="block_13_expand_relu+out_relu"), [decoder, decoder])
    assert [member.fused_layout for member in fused.decoder.members] == [[[6, 6, 576], [3, 3, 1280]]] * 2
    single = Captioner([*SPECIAL_TOKENS, "dog"], dict(backbone="mobilenet_v2", weights=None, image_size=96), decoder)
    assert single.decoder.fused_layout is None
