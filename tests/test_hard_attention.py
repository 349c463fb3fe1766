"""Hard attention's per-word estimators: unbiased on a toy problem with a known gradient, the baseline leaves the
expectation unchanged and lowers the variance, supervision and a box reward move a hard policy into the boxes,
a soft decoder turns hard without losing what it knew, and the options hard attention cannot take are refused."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY_RUN, make_captioner

from captioner.config import Config
from captioner.training import objectives
from captioner.training.prepare import rebuilt
from captioner.training.trainer import Trainer

CELLS = 5
VOCABULARY = 4
TARGET_WORD = 2
ATTENTION_LOGITS = np.array([0.3, -0.2, 0.9, 0.0, -1.0], np.float32)
# Each cell's reading of the word: the logits a decoder gives after reading that one cell.
CELL_WORD_LOGITS = np.array([[0.0, 0.0, 2.0, 0.0], [1.0, 0.0, -1.0, 0.0], [0.0, 0.5, 0.5, 0.0],
                             [0.0, 0.0, 3.0, 1.0], [2.0, 2.0, 0.0, 0.0]], np.float32)


def _cell_log_likelihoods() -> np.ndarray:
    return tf.nn.log_softmax(CELL_WORD_LOGITS).numpy()[:, TARGET_WORD]


def _exact_gradient() -> np.ndarray:
    """d/d(attention logits) of E_{s ~ alpha}[log p(word | s)] = sum_s alpha_s log p(word | s)."""
    logits = tf.Variable(ATTENTION_LOGITS)
    with tf.GradientTape() as tape:
        expected = tf.reduce_sum(tf.nn.softmax(logits) * _cell_log_likelihoods())
    return tape.gradient(expected, logits).numpy()


def _estimates(estimator: str, rows: int, cells: int, expected_word_logits, seed: int = 0) -> np.ndarray:
    """(rows, CELLS): the policy gradient each row (one image, one word, `cells` draws) estimates, i.e. minus the
    gradient of its loss, times the rows (the loss is a mean over words)."""
    logits = tf.Variable(np.tile(ATTENTION_LOGITS, (rows, 1)))  # (rows, L): one word per row
    targets = tf.fill([rows, 1], TARGET_WORD)
    with tf.GradientTape() as tape:
        weights = tf.nn.softmax(logits)[:, None]  # (rows, T=1, L)
        if estimator == "top-k":
            chosen = tf.math.top_k(weights, cells).indices
        else:
            chosen = tf.random.stateless_categorical(tf.math.log(weights[:, 0]), cells, seed=[seed, 7])[:, None]
        chosen = tf.cast(chosen, tf.int32)  # (rows, 1, K)
        cell_logits = tf.gather(CELL_WORD_LOGITS, chosen)  # (rows, 1, K, V): constants, as read from each cell
        expected_logits = tf.broadcast_to(tf.constant(expected_word_logits, tf.float32), [rows, 1, VOCABULARY])
        loss, *_ = objectives.per_word_hard_attention_loss(
            expected_logits, cell_logits, targets, weights, chosen, estimator, attention_lambda=0.0,
            label_smoothing=0.0, reward_scale=1.0, entropy_bonus=0.0)
    return -tape.gradient(loss, logits).numpy() * rows


@pytest.mark.parametrize("estimator, cells", [("expected-baseline", 1), ("leave-one-out", 4)])
def test_per_word_estimate_is_unbiased_on_a_toy_problem_with_a_known_gradient(estimator, cells):
    estimates = _estimates(estimator, rows=20_000, cells=cells, expected_word_logits=[0.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(estimates.mean(axis=0), _exact_gradient(), atol=0.02)


def test_the_expected_context_baseline_leaves_the_expectation_unchanged_and_lowers_the_variance():
    close = [0.0, 0.0, 1.2, 0.0]  # a baseline near the mean reward (about -1)
    far = [5.0, 5.0, -5.0, 5.0]  # log p(word | expected context) far below every reward: almost no baseline's use
    near, distant = (_estimates("expected-baseline", 20_000, 1, logits, seed=3) for logits in (close, far))
    np.testing.assert_allclose(near.mean(axis=0), _exact_gradient(), atol=0.02)
    np.testing.assert_allclose(distant.mean(axis=0), _exact_gradient(), atol=0.15)
    assert near.var(axis=0).sum() < 0.05 * distant.var(axis=0).sum()


def test_top_k_over_every_cell_is_the_exact_marginal_likelihood():
    estimate = _estimates("top-k", rows=1, cells=CELLS, expected_word_logits=[0.0, 0.0, 1.0, 0.0])[0]
    logits = tf.Variable(ATTENTION_LOGITS)
    with tf.GradientTape() as tape:  # half of log sum_s alpha_s p(word | s): the marginal shares the loss with the
        marginal = 0.5 * tf.reduce_logsumexp(tf.nn.log_softmax(logits) + _cell_log_likelihoods())  # expected reading
    np.testing.assert_allclose(estimate, tape.gradient(marginal, logits).numpy(), rtol=1e-4, atol=1e-6)


def _inside_mass(captioner, features, tokens, cover) -> float:
    _, weights = captioner.decoder(features, tokens[:, :-1])
    return float(np.mean(np.sum(np.asarray(weights) * cover, axis=-1)))


@pytest.mark.parametrize("supervision_weight, box_reward", [(1.0, 0.0), (0.0, 2.0)])
def test_supervision_and_the_box_reward_move_a_hard_policy_into_the_boxes(supervision_weight, box_reward):
    """Scenes whose named thing sits in the same two cells: either lever alone pulls alpha there."""
    captioner = make_captioner(hard_attention=True, hard_state="expected", seed=2)
    locations = captioner.feature_shape[0]
    rng = np.random.default_rng(4)
    features = rng.normal(size=(8, *captioner.feature_shape)).astype(np.float32)
    tokens = rng.integers(4, len(captioner.vocabulary), size=(8, 6)).astype(np.int32)
    box = np.zeros(locations, np.float32)
    box[[1, 5]] = 1.0
    target_maps = np.tile(box / box.sum(), (8, 5, 1)).astype(np.float32)
    before = _inside_mass(captioner, features, tokens, box)
    config = Config(hard_attention=True, hard_estimator="expected-baseline", learning_rate=3e-3,
                    lr_schedule="constant", batch_size=8, reward_scale=1.0, supervision_loss="mass",
                    supervision_weight=supervision_weight, box_reward=box_reward, jit_compile=False)
    trainer = Trainer(captioner, config)
    outputs = [trainer.hard_train_step(features, tokens, target_maps) for _ in range(40)]
    assert len(outputs[-1]) == 8  # the supervision loss is returned with the other seven
    assert _inside_mass(captioner, features, tokens, box) > before + 0.2


def test_a_soft_decoder_turned_hard_keeps_its_weights_and_reads_the_expected_context_the_same():
    soft = make_captioner(seed=5)
    hard = rebuilt(soft, decoder_changes={"hard_attention": True, "hard_state": "expected"})
    assert hard.decoder.hard_attention and hard.decoder.hard_state == "expected"
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, *soft.feature_shape)).astype(np.float32)
    tokens = rng.integers(4, len(soft.vocabulary), size=(2, 5)).astype(np.int32)
    soft_logits, soft_weights = soft.decoder(features, tokens)
    expected_logits, cell_logits, weights, chosen = hard.decoder.read_cells(features, tokens, 3, "top", training=False)
    np.testing.assert_allclose(expected_logits, soft_logits, atol=1e-5)
    np.testing.assert_allclose(weights, soft_weights, atol=1e-6)
    assert cell_logits.shape == (2, 5, 3, len(soft.vocabulary))
    # top cells, best first; the argmax cell's reading is what argmax inference predicts from
    np.testing.assert_array_equal(np.asarray(chosen)[..., 0], np.argmax(np.asarray(weights), axis=-1))
    argmax_logits, _, _ = hard.decoder._teacher_forced(features, tokens, False, "argmax")
    np.testing.assert_allclose(np.asarray(cell_logits)[:, :, 0], argmax_logits, atol=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--hard-estimator", "expected-baseline"], "needs --attention hard"),
    (["--attention", "hard", "--hard-estimator", "leave-one-out"], "--hard-cells 2 or more"),
    (["--attention", "hard", "--hard-cells", "3"], "needs --hard-estimator"),
    (["--attention", "hard", "--box-reward", "1"], "--attention-supervision"),
    (["--attention", "hard", "--scst", "--init", "model.keras"], "--scst"),
])
def test_options_hard_attention_cannot_take_are_refused_in_one_line(flags, message, capsys):
    from captioner.cli import train

    with pytest.raises(SystemExit) as exit_info:
        train.main(TINY_RUN + flags)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error


def test_train_py_hard_attention_from_a_soft_model_with_every_estimator(tmp_path):
    import json

    from captioner.cli import train

    soft = tmp_path / "soft"
    assert train.main(TINY_RUN + ["--epochs", "1", "--run-dir", str(soft)]) == 0
    for estimator, cells in (("expected-baseline", "1"), ("leave-one-out", "2"), ("top-k", "2")):
        run_dir = tmp_path / estimator
        assert train.main(TINY_RUN + ["--init", str(soft / "best.keras"), "--attention", "hard", "--hard-estimator",
                                      estimator, "--hard-cells", cells, "--epochs", "1", "--run-dir", str(run_dir)]) == 0
        row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
        assert row["hard_batches"] == -(-row["captions"] // 8)  # every batch is a hard one (TINY_RUN: batch 8)
        assert all(np.isfinite(row[key]) for key in ("reward", "baseline", "attention_entropy"))
        saved = json.loads((run_dir / "config.json").read_text())
        assert saved["hard_estimator"] == estimator
