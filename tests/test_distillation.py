"""Knowledge distillation (`--distill-from`): the loss, its pull toward the teacher, the flags, and a run that
learns from a trained model read through its own features."""

import json

import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY_RUN, make_captioner

from captioner.cli import train
from captioner.config import Config
from captioner.training import Trainer
from captioner.training.objectives import caption_loss


def _batch(captioner, size=4, length=6):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(size, *captioner.feature_shape)).astype(np.float32)
    tokens = rng.integers(4, len(captioner.vocabulary), size=(size, length)).astype(np.int32)
    tokens[0, 4:] = 0  # one shorter caption: its padding is no word
    return features, tokens


def test_the_word_loss_mixes_the_captions_words_and_the_teachers_distribution():
    rng = np.random.default_rng(0)
    logits, teacher = rng.normal(size=(2, 3, 5)).astype(np.float32), rng.normal(size=(2, 3, 5)).astype(np.float32)
    targets = np.array([[1, 2, 0], [3, 4, 2]], np.int32)  # 5 words; the padding is ignored
    alpha = np.full((2, 3, 4), 0.25, np.float32)
    log_p = tf.nn.log_softmax(logits).numpy()
    p_teacher = tf.nn.softmax(teacher).numpy()
    real = targets != 0
    own = -np.mean(np.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0][real])
    distilled = -np.mean(np.sum(p_teacher * log_p, axis=-1)[real])
    loss, cross_entropy, _ = caption_loss(logits, targets, alpha, 0.0, 0.0, teacher, 0.3)
    assert float(loss) == pytest.approx(0.7 * own + 0.3 * distilled, rel=1e-5)
    assert float(cross_entropy) == pytest.approx(own, rel=1e-5)  # the log still shows the captions' own
    # With all the weight on the teacher, which caption was written no longer matters; only where it ends.
    other = np.where(real, (targets % 4) + 1, 0).astype(np.int32)
    assert float(caption_loss(logits, other, alpha, 0.0, 0.0, teacher, 1.0)[0]) == pytest.approx(distilled, rel=1e-5)
    # Its minimum is the teacher's entropy, where the student agrees with it.
    entropy = -np.mean(np.sum(p_teacher * np.log(p_teacher), axis=-1)[real])
    assert float(caption_loss(teacher, targets, alpha, 0.0, 0.0, teacher, 1.0)[0]) == pytest.approx(entropy, rel=1e-5)


def _divergence(student, teacher, features, tokens) -> float:
    """KL(teacher || student) of the next-word distributions over the batch's real words."""
    inputs, real = tokens[:, :-1], tokens[:, 1:] != 0
    student_logits, _ = student.decoder(features, inputs, training=False)
    teacher_logits, _ = teacher.decoder(features, inputs, training=False)
    p = tf.nn.softmax(teacher_logits).numpy()
    kl = np.sum(p * (np.log(p) - tf.nn.log_softmax(student_logits).numpy()), axis=-1)
    return float(np.mean(kl[real]))


def test_distillation_pulls_the_students_distributions_toward_the_teachers():
    config = Config(batch_size=4, learning_rate=1e-2, lr_schedule="constant", distill_weight=0.9, jit_compile=False)
    teacher = make_captioner(seed=5)
    distilled, plain = make_captioner(seed=0), make_captioner(seed=0)
    features, tokens = _batch(distilled)
    before = _divergence(distilled, teacher, features, tokens)
    distilled_trainer, plain_trainer = Trainer(distilled, config, teacher=teacher), Trainer(plain, config)
    teacher_weights = [w.numpy().copy() for w in teacher.weights]
    for _ in range(10):
        distilled_trainer.train_step(features, tokens, teacher_features=features)
        plain_trainer.train_step(features, tokens)
    after, without = _divergence(distilled, teacher, features, tokens), _divergence(plain, teacher, features, tokens)
    assert after < 0.5 * before and after < 0.5 * without, (before, after, without)
    for old, new in zip(teacher_weights, teacher.weights):  # the teacher only teaches
        np.testing.assert_array_equal(old, new.numpy())


def test_the_teacher_and_supervision_work_together():
    config = Config(batch_size=4, learning_rate=1e-2, lr_schedule="constant", supervision_weight=1.0, jit_compile=False)
    student, teacher = make_captioner(seed=0), make_captioner(seed=5)
    features, tokens = _batch(student)
    maps = np.zeros((len(tokens), tokens.shape[1] - 1, student.feature_shape[0]), np.float32)
    maps[..., 0] = 1.0
    outputs = Trainer(student, config, teacher=teacher).train_step(features, tokens, maps, teacher_features=features)
    assert len(outputs) == 5 and all(np.isfinite(float(value)) for value in outputs)


@pytest.mark.parametrize("argv, words", [
    (["--distill-from", "t.keras", "--distill-weight", "0"], "--distill-weight must be in (0, 1]"),
    (["--distill-from", "t.keras", "--distill-weight", "1.5"], "--distill-weight must be in (0, 1]"),
    (["--distill-from", "t.keras", "--distill-weight", "nan"], "--distill-weight must be in (0, 1]"),
    (["--distill-weight", "0.5"], "--distill-weight needs --distill-from"),
    (["--distill-from", "missing.keras"], "--distill-from missing.keras: no such file"),
])
def test_bad_distillation_flags_exit_with_status_2(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.keras").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


def test_a_run_learns_from_a_trained_teacher_and_resumes_with_it(tmp_path, capsys):
    teacher_run, student_run = tmp_path / "teacher", tmp_path / "student"
    assert train.main(TINY_RUN + ["--epochs", "1", "--run-dir", str(teacher_run)]) == 0
    teacher = str(teacher_run / "best.keras")
    capsys.readouterr()
    argv = TINY_RUN + ["--epochs", "1", "--distill-from", teacher, "--distill-weight", "0.7", "--run-dir", str(student_run)]
    assert train.main(argv) == 0
    assert f"Distilling from {teacher} (weight 0.7)" in capsys.readouterr().out
    saved = json.loads((student_run / "config.json").read_text())
    assert (saved["distill_from"], saved["distill_weight"]) == (teacher, 0.7)
    assert train.main(["--resume", "--epochs", "2", "--run-dir", str(student_run)]) == 0  # the saved config teaches again
    assert "Distilling from" in capsys.readouterr().out
    rows = [json.loads(line) for line in (student_run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2] and all(np.isfinite(row["train_loss"]) for row in rows)


def test_a_teacher_with_other_words_is_refused_with_one_line(tmp_path, capsys):
    teacher = make_captioner(seed=5)  # the helpers' captions' words, not the synthetic scenes'
    path = tmp_path / "teacher.keras"
    teacher.save(path)
    status = train.main(TINY_RUN + ["--epochs", "1", "--distill-from", str(path), "--run-dir", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and error[-1].count("error:") == 1 and "teacher.keras" in error[-1] and "vocabulary" in error[-1]
