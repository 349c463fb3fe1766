"""Attention supervision (Liu et al. 2017): the loss, its pull on alpha, the batches that carry the maps,
the flags, and a fine-tuning run from a trained model on Flickr30k Entities boxes of the training photos.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY_RUN, make_captioner

from captioner.cli import train
from captioner.config import Config
from captioner.data import pipeline
from captioner.training import Trainer, attention_supervision_loss
from captioner.training.objectives import attention_mass_loss, attention_pointing_loss

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "fixtures" / "flickr8k"
CENTRE = 4  # of the 3x3 grid the small test models see


def test_the_loss_is_the_cross_entropy_of_the_supervised_words_only():
    rng = np.random.default_rng(0)
    alpha = rng.dirichlet(np.ones(4), size=(2, 3)).astype(np.float32)  # (B=2, T=3, L=4)
    target = np.zeros_like(alpha)
    target[0, 1] = [0.5, 0.5, 0.0, 0.0]
    target[1, 2] = [0.0, 0.0, 0.0, 1.0]
    expected = np.mean([-(0.5 * np.log(alpha[0, 1, 0]) + 0.5 * np.log(alpha[0, 1, 1])), -np.log(alpha[1, 2, 3])])
    assert float(attention_supervision_loss(alpha, target)) == pytest.approx(expected, rel=1e-5)
    moved = alpha.copy()
    moved[0, 0] = moved[1, 1] = [0.97, 0.01, 0.01, 0.01]  # unsupervised words may look anywhere
    assert float(attention_supervision_loss(moved, target)) == pytest.approx(expected, rel=1e-5)
    assert float(attention_supervision_loss(alpha, np.zeros_like(target))) == 0.0  # nothing supervised: no loss


def test_the_mass_loss_is_the_attention_outside_the_boxes_wherever_inside_it_lands():
    box = np.zeros((1, 2, 4), np.float32)  # (B=1, T=2, L=4): word 0 names a box covering cell 0 and half of cell 1
    box[0, 0] = np.array([1.0, 0.5, 0.0, 0.0]) / 1.5  # the target map: the cover, normalised to sum 1
    alpha = np.array([[[0.2, 0.4, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25]]], np.float32)
    # The grounding measure's mass: 0.2 x 1 + 0.4 x 0.5; word 1 is not supervised.
    assert float(attention_mass_loss(alpha, box)) == pytest.approx(-np.log(0.2 + 0.4 * 0.5), rel=1e-5)
    inside = np.array([[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]], np.float32)
    assert float(attention_mass_loss(inside, box)) == pytest.approx(0.0, abs=1e-6)  # on the fully covered cell: 0
    # The cross-entropy would still pull that map toward the whole box (cell 1 too).
    assert float(attention_supervision_loss(inside, box)) > 1.0
    assert float(attention_mass_loss(alpha, np.zeros_like(box))) == 0.0  # nothing supervised: no loss


def test_the_pointing_loss_scores_where_the_peak_lies_not_the_spread():
    box = np.zeros((1, 2, 4), np.float32)  # word 0 names a box covering cells 0 and 1
    box[0, 0] = [0.5, 0.5, 0.0, 0.0]
    spread_inside = np.array([[[0.3, 0.3, 0.4, 0.0], [0.25] * 4]], np.float32)  # 60 % inside, peak outside
    peak_inside = np.array([[[0.45, 0.0, 0.3, 0.25], [0.25] * 4]], np.float32)  # 45 % inside, peak inside
    # The mass loss prefers the first map; the pointing loss, like the pointing game, the second.
    assert float(attention_mass_loss(spread_inside, box)) < float(attention_mass_loss(peak_inside, box))
    assert float(attention_pointing_loss(spread_inside, box)) > float(attention_pointing_loss(peak_inside, box))
    # At sharpness 1 it is the mass loss; its value is the mass of alpha^s renormalised.
    assert float(attention_pointing_loss(spread_inside, box, sharpness=1.0)) == pytest.approx(
        float(attention_mass_loss(spread_inside, box)), rel=1e-5)
    sharpened = spread_inside[0, 0] ** 4 / np.sum(spread_inside[0, 0] ** 4)
    assert float(attention_pointing_loss(spread_inside, box)) == pytest.approx(-np.log(sharpened[:2].sum()), rel=1e-4)


@pytest.mark.parametrize("loss", ["mass", "pointing"])
def test_training_with_the_mass_or_pointing_loss_pulls_attention_into_the_box(loss):
    config = Config(batch_size=4, learning_rate=1e-2, lr_schedule="constant", supervision_weight=1.0,
                    supervision_loss=loss)
    captioner = make_captioner(feature_units=16, units=16)
    features, tokens = _batch(captioner)
    maps = np.zeros((len(tokens), tokens.shape[1] - 1, captioner.feature_shape[0]), np.float32)
    maps[..., CENTRE] = 1.0
    before = _centre_attention(captioner, features, tokens)
    trainer = Trainer(captioner, config)
    for _ in range(8):
        *_, supervision = trainer.train_step(features, tokens, maps)
    after = _centre_attention(captioner, features, tokens)
    if loss == "mass":
        assert after > 2 * before, (before, after)
        assert float(supervision) < -np.log(before)
    else:  # the peak's loss moves the peak; the mass follows it more slowly
        assert after > before + 0.05, (before, after)


def _batch(captioner, size=4, length=6):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(size, *captioner.feature_shape)).astype(np.float32)
    tokens = rng.integers(4, len(captioner.vocabulary), size=(size, length)).astype(np.int32)
    return features, tokens


def _centre_attention(captioner, features, tokens) -> float:
    _, weights = captioner.decoder(features, tokens[:, :-1], training=False)
    return float(np.mean(np.asarray(weights)[..., CENTRE]))


def test_supervision_pulls_attention_onto_the_target_cell():
    config = Config(batch_size=4, learning_rate=1e-2, lr_schedule="constant", supervision_weight=1.0)
    supervised, plain = make_captioner(feature_units=16, units=16), make_captioner(feature_units=16, units=16)
    features, tokens = _batch(supervised)
    maps = np.zeros((len(tokens), tokens.shape[1] - 1, supervised.feature_shape[0]), np.float32)
    maps[..., CENTRE] = 1.0  # every word: look at the centre cell
    before = _centre_attention(supervised, features, tokens)
    assert before == pytest.approx(_centre_attention(plain, features, tokens))  # the same start
    supervised_trainer, plain_trainer = Trainer(supervised, config), Trainer(plain, config)
    for _ in range(8):
        *_, supervision = supervised_trainer.train_step(features, tokens, maps)
        plain_trainer.train_step(features, tokens)
    after, unsupervised = _centre_attention(supervised, features, tokens), _centre_attention(plain, features, tokens)
    assert after > 2 * before and after > 2 * unsupervised, (before, after, unsupervised)
    assert float(supervision) < -np.log(before)  # the loss fell with it


def test_all_zero_maps_train_exactly_like_no_supervision():
    config = Config(batch_size=4, learning_rate=1e-2, lr_schedule="constant", supervision_weight=3.0, jit_compile=False)
    with_maps, without = make_captioner(feature_units=16, units=16), make_captioner(feature_units=16, units=16)
    features, tokens = _batch(with_maps)
    zeros = np.zeros((len(tokens), tokens.shape[1] - 1, with_maps.feature_shape[0]), np.float32)
    trainers = Trainer(with_maps, config), Trainer(without, config)
    for _ in range(3):
        supervised = trainers[0].train_step(features, tokens, zeros)
        plain = trainers[1].train_step(features, tokens)
        assert len(plain) == 4 and len(supervised) == 5 and float(supervised[4]) == 0.0
        np.testing.assert_allclose([float(x) for x in supervised[:4]], [float(x) for x in plain], rtol=1e-6)
    for a, b in zip(with_maps.decoder.variables, without.decoder.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7, err_msg=a.path)


def test_batches_carry_each_pairs_maps_cut_like_its_ids():
    rng = np.random.default_rng(2)
    pairs, width, cells = 20, 12, 9
    lengths = rng.integers(3, width + 1, size=pairs)
    token_ids = np.where(np.arange(width)[None] < lengths[:, None], 5, 0).astype(np.int32)
    maps = rng.random((pairs, width - 1, cells)).astype(np.float16)
    features = rng.normal(size=(5, cells, 3)).astype(np.float16)
    image_index = rng.integers(0, 5, size=pairs)
    batches = pipeline.epoch_batches(token_ids, 6, seed=0, epoch=0)
    plain = list(pipeline.make_dataset(features, image_index, token_ids, batches))
    assert all(len(element) == 2 for element in plain)  # without maps: the pairs alone, as ever
    for batch, (_, ids, batch_maps) in zip(batches, pipeline.make_dataset(features, image_index, token_ids, batches, maps)):
        assert batch_maps.dtype == tf.float32 and batch_maps.shape == (len(batch), ids.shape[1] - 1, cells)
        np.testing.assert_array_equal(batch_maps, maps[batch, : ids.shape[1] - 1].astype(np.float32))
    # Distributed: each replica's slice with its maps; a replica without rows gets an unsupervised padding row.
    small = [np.array([3])]
    (_, id_parts, map_parts), = pipeline.make_replica_dataset(features, image_index, token_ids, small, 2, [0, 1], maps)
    np.testing.assert_array_equal(map_parts[0], maps[[3], : id_parts[0].shape[1] - 1].astype(np.float32))
    assert map_parts[1].shape == (1, id_parts[1].shape[1] - 1, cells) and not np.any(map_parts[1])


@pytest.mark.parametrize("argv, words", [
    (["--attention-supervision", "x", "--supervision-weight", "-1"], "--supervision-weight must be a number >= 0"),
    (["--attention-supervision", "x", "--supervision-weight", "nan"], "--supervision-weight must be a number >= 0"),
    (["--supervision-weight", "2"], "--supervision-weight needs --attention-supervision"),
    (["--supervision-loss", "mass"], "--supervision-loss needs --attention-supervision"),
    (["--attention-supervision", "x", "--supervision-loss", "l2"], "invalid choice: 'l2'"),
])
def test_bad_supervision_flags_exit_with_status_2(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


def test_a_missing_entities_folder_is_named_before_anything_is_written(tmp_path, capsys):
    missing = tmp_path / "flickr30k_entities"
    assert train.main(TINY_RUN + ["--attention-supervision", str(missing), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and f"{missing}: no such directory" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_old_configs_without_the_supervision_fields_still_load():
    saved = json.loads(Config.for_dataset("flickr8k", attention_supervision="entities", supervision_weight=0.5).to_json())
    assert (saved["attention_supervision"], saved["supervision_weight"]) == ("entities", 0.5)
    old = {key: value for key, value in saved.items() if key not in ("attention_supervision", "supervision_weight")}
    config = Config.from_json(json.dumps(old))
    assert config.attention_supervision is None and config.supervision_weight == 1.0


def _write_entities(directory: Path) -> None:
    """Flickr30k Entities files for the fixture's photos, 100x100 originals, the square in the top-left quarter:
    the training photo `red`, and the dev and test photos `green` and `blue`, whose boxes training must never read."""
    sentences = {"green": ["[/EN#1/other A green square] .", "green everywhere", "a green picture"],
                 "blue": ["[/EN#1/other A blue square] .", "blue, blue and blue", "a blue picture"],
                 "red": ["[/EN#1/other A red square] .", "Something red, all over", "a red picture"]}
    for name, lines in sentences.items():
        (directory / "Sentences").mkdir(parents=True, exist_ok=True)
        (directory / "Annotations").mkdir(parents=True, exist_ok=True)
        (directory / "Sentences" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        (directory / "Annotations" / f"{name}.xml").write_text(
            "<annotation><size><width>100</width><height>100</height><depth>3</depth></size><object><name>1</name>"
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax><ymax>50</ymax></bndbox></object></annotation>")


def test_fine_tuning_a_trained_model_with_supervision_from_the_training_boxes(tmp_path, monkeypatch, capsys):
    entities = pytest.importorskip("captioner.data.entities")
    flickr = [*TINY_RUN, "--dataset", "flickr8k", "--data-dir", str(FIXTURE), "--min-word-count", "1",
              "--feature-cache", str(tmp_path / "cache")]
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    assert train.main(flickr + ["--epochs", "1", "--run-dir", str(base)]) == 0
    assert "train_supervision" not in json.loads((base / "metrics.jsonl").read_text())  # off: no such column
    _write_entities(tmp_path / "entities")
    asked = []
    real_targets = entities.attention_targets

    def spy(split, *args, **kwargs):
        asked.append(list(split.paths))
        return real_targets(split, *args, **kwargs)

    monkeypatch.setattr(entities, "attention_targets", spy)
    capsys.readouterr()
    argv = flickr + ["--init", str(base / "best.keras"), "--attention-supervision", str(tmp_path / "entities"),
                     "--supervision-weight", "2", "--lr", "0.0005", "--lr-schedule", "constant", "--epochs", "2",
                     "--run-dir", str(tuned)]
    assert train.main(argv) == 0
    assert [[Path(path).name for path in paths] for paths in asked] == [["red.jpg"]]  # the train split only
    assert "words_supervised 3" in capsys.readouterr().out  # "a red square"
    rows = [json.loads(line) for line in (tuned / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]  # --epochs applies to a fine-tuning run
    assert all(row["learning_rate"] == pytest.approx(5e-4) for row in rows)  # and so does --lr
    assert all(np.isfinite(row["train_supervision"]) and row["train_supervision"] > 0 for row in rows)
    assert "train_supervision" in (tuned / "metrics.csv").read_text().splitlines()[0]
    saved = json.loads((tuned / "config.json").read_text())
    assert saved["attention_supervision"] == str(tmp_path / "entities") and saved["supervision_weight"] == 2.0
    assert train.main(["--resume", "--epochs", "3", "--run-dir", str(tuned)]) == 0  # the saved config supervises again
    assert len(asked) == 2
    rows = [json.loads(line) for line in (tuned / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3] and "train_supervision" in rows[2]
