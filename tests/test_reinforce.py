"""REINFORCE: the estimator matches the exact gradient, the baseline lowers its variance, hard attention trains."""

import numpy as np
import tensorflow as tf
from helpers import make_captioner

from captioner.config import Config
from captioner.training import reinforce
from captioner.training.trainer import Trainer

REWARDS = np.array([1.0, 3.0, -2.0, 0.5], np.float32)  # a reward per choice of a tiny categorical policy
LOGITS = np.array([0.2, -0.4, 0.1, 0.6], np.float32)


def _exact_gradient():
    logits = tf.Variable(LOGITS)
    with tf.GradientTape() as tape:
        expected_reward = tf.reduce_sum(tf.nn.softmax(logits) * REWARDS)
    return tape.gradient(expected_reward, logits).numpy()


def _per_sample_gradients(samples: int, rewards_table, baseline: float, seed: int = 0) -> np.ndarray:
    """(samples, 4): the REINFORCE estimate of grad E[R] from each single sample."""
    logits = tf.Variable(LOGITS)
    choices = tf.random.stateless_categorical(LOGITS[None], samples, seed=[seed, 1])[0]
    rewards = tf.gather(rewards_table, choices)
    gradients = []
    with tf.GradientTape(persistent=True) as tape:
        log_probabilities = tf.gather(tf.nn.log_softmax(logits), choices)
        losses = [reinforce.policy_gradient_loss(log_probabilities[i : i + 1], rewards[i : i + 1], baseline)
                  for i in range(samples)]
    for loss in losses:
        gradients.append(-tape.gradient(loss, logits).numpy())  # the loss is minus the estimate
    return np.array(gradients)


def test_score_function_estimate_matches_the_exact_gradient_on_average():
    logits = tf.Variable(LOGITS)
    samples = 200_000
    choices = tf.random.stateless_categorical(LOGITS[None], samples, seed=[3, 4])[0]
    with tf.GradientTape() as tape:
        log_probabilities = tf.gather(tf.nn.log_softmax(logits), choices)
        loss = reinforce.policy_gradient_loss(log_probabilities, tf.gather(REWARDS, choices), 0.0)
    estimate = -tape.gradient(loss, logits).numpy()
    np.testing.assert_allclose(estimate, _exact_gradient(), atol=0.02)


def test_a_baseline_keeps_the_estimate_unbiased_and_lowers_its_variance():
    # Rewards like log-likelihoods: all well below zero. Shifting them changes nothing in expectation.
    rewards = REWARDS - 6.0
    expected_reward = float(np.sum(tf.nn.softmax(LOGITS).numpy() * rewards))
    plain = _per_sample_gradients(1500, rewards, baseline=0.0)
    with_baseline = _per_sample_gradients(1500, rewards, baseline=expected_reward)
    np.testing.assert_allclose(with_baseline.mean(axis=0), _exact_gradient(), atol=0.1)
    np.testing.assert_allclose(plain.mean(axis=0), _exact_gradient(), atol=0.4)  # unbiased too, but noisier
    assert with_baseline.var(axis=0).sum() < 0.25 * plain.var(axis=0).sum()


def test_moving_average_baseline_starts_at_the_first_mean_then_moves_a_tenth_of_the_way():
    first = reinforce.moving_average_baseline(tf.constant(0.0), tf.constant([2.0, 4.0]), tf.constant(False))
    assert float(first) == 3.0
    second = reinforce.moving_average_baseline(first, tf.constant([13.0]), tf.constant(True))
    assert np.isclose(float(second), 0.9 * 3.0 + 0.1 * 13.0)


def test_entropy_of_uniform_and_one_hot():
    np.testing.assert_allclose(reinforce.entropy(tf.fill([1, 8], 1 / 8)).numpy(), [np.log(8)], rtol=1e-5)
    assert float(reinforce.entropy(tf.one_hot([2], 8))[0]) < 1e-6


def test_hard_decoder_uses_one_location_per_word():
    captioner = make_captioner(units=32, feature_units=32)
    hard = make_captioner(units=32, feature_units=32, hard_attention=True)  # same seed: the same weights
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, *captioner.feature_shape)).astype(np.float32)
    tokens = rng.integers(4, len(captioner.vocabulary), size=(3, 5)).astype(np.int32)
    logits, weights, chosen = hard.decoder.sample_locations(features, tokens)
    assert chosen.shape == (3, 5) and np.all((np.asarray(chosen) >= 0) & (np.asarray(chosen) < captioner.feature_shape[0]))
    # The expected context (soft) and one location (argmax) give different words' logits.
    soft_logits, _ = captioner.decoder(features, tokens)
    argmax_logits, _, _ = hard.decoder._teacher_forced(features, tokens, False, "argmax")
    assert not np.allclose(np.asarray(soft_logits)[:, 1:], np.asarray(argmax_logits)[:, 1:])


def test_hard_attention_trains_and_logs_reward_baseline_and_entropy():
    captioner = make_captioner(units=32, feature_units=32, hard_attention=True)
    config = Config(learning_rate=3e-3, lr_schedule="constant", batch_size=3)
    trainer = Trainer(captioner, config)
    rng = np.random.default_rng(1)
    features = rng.normal(size=(3, *captioner.feature_shape)).astype(np.float32)
    tokens = rng.integers(4, len(captioner.vocabulary), size=(3, 6)).astype(np.int32)
    outputs = [trainer.hard_train_step(features, tokens) for _ in range(30)]
    losses = [float(o[1]) for o in outputs]
    rewards = [float(o[4]) for o in outputs]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert rewards[-1] > rewards[0]  # the reward is the log-likelihood: it rises as the model learns
    assert float(outputs[0][5]) == rewards[0]  # the first baseline is the first batch's mean reward
    assert np.isclose(float(outputs[1][5]), 0.9 * rewards[0] + 0.1 * rewards[1], rtol=1e-5)
    assert 0 < float(outputs[-1][6]) <= np.log(captioner.feature_shape[0]) + 1e-5


def test_train_py_hard_attention_logs_the_policy_and_resumes(tmp_path, capsys):
    import json

    from helpers import TINY_RUN

    from captioner.cli import caption as predict
    from captioner.cli import train

    run_dir = tmp_path / "hard"
    assert train.main(TINY_RUN + ["--attention", "hard", "--epochs", "2", "--run-dir", str(run_dir)]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["hard_attention"] and config["attention"] == "additive"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert {"reward", "baseline", "attention_entropy", "gradient_norm", "hard_batches"} <= set(row)
        assert all(np.isfinite(row[key]) for key in ("reward", "baseline", "attention_entropy", "train_loss"))
    assert train.main(["--resume", "--epochs", "3", "--run-dir", str(run_dir)]) == 0  # the baseline is restored
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    scene = next(iter(sorted((run_dir / "test_scenes").glob("*.png"))))
    capsys.readouterr()
    assert predict.main([str(scene), "--model", str(run_dir / "best.keras"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["chosen_cells"]) == len(result["words"])
    assert predict.main([str(scene), "--model", str(run_dir / "best.keras"), "--json", "--hard-inference", "expected"]) == 0
    assert "chosen_cells" not in json.loads(capsys.readouterr().out)


def test_self_critical_fine_tuning_from_a_trained_model(tmp_path):
    import json

    from helpers import TINY_RUN

    from captioner.cli import train

    base = tmp_path / "base"
    assert train.main(TINY_RUN + ["--epochs", "2", "--run-dir", str(base)]) == 0
    tuned = tmp_path / "scst"
    assert train.main(TINY_RUN + ["--scst", "--init", str(base / "best.keras"), "--epochs", "2", "--lr", "1e-3",
                                  "--run-dir", str(tuned)]) == 0
    rows = [json.loads(line) for line in (tuned / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert {"sample_cider", "baseline_cider", "reward", "gradient_norm", "val_cider"} <= set(row)
        assert np.isclose(row["reward"], row["sample_cider"] - row["baseline_cider"], atol=1e-5)
    config = json.loads((tuned / "config.json").read_text())
    assert config["self_critical"] and config["learning_rate"] == 1e-3 and config["lr_schedule"] == "constant"
    assert json.loads((tuned / "vocabulary.json").read_text()) == json.loads((base / "vocabulary.json").read_text())

    # Several samples per image, each against the mean of the others: the advantages of an image's
    # samples sum to zero, and every training image gives K captions.
    several = tmp_path / "scst-samples"
    assert train.main(TINY_RUN + ["--scst", "--init", str(base / "best.keras"), "--epochs", "1", "--scst-samples", "3",
                                  "--run-dir", str(several)]) == 0
    row = json.loads((several / "metrics.jsonl").read_text().splitlines()[0])
    assert row["captions"] == 3 * 24  # TINY_RUN's 24 training scenes
    assert abs(row["reward"]) < 1e-6 and row["sample_cider"] > 0


def test_scst_without_a_model_is_refused(capsys):
    import pytest

    from captioner.cli import train

    with pytest.raises(SystemExit):
        train.main(["--scst"])
    assert "--init" in capsys.readouterr().err
