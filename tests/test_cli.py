"""Flags become the right config; bad flags stop with one clear line."""

import json

import pytest

from captioner.cli import caption as predict
from captioner.cli import train
from captioner.config import DATASET_DEFAULTS, Config


def test_no_flags_give_the_synthetic_demo_defaults():
    config = train.config_from_args(train.parse_args([]))
    assert config.dataset == "synthetic"
    for field, value in DATASET_DEFAULTS["synthetic"].items():
        assert getattr(config, field) == value


def test_flags_override_defaults():
    config = train.config_from_args(train.parse_args(
        ["--units", "64", "--feature-units", "0", "--weights", "none", "--attention", "dot", "--lambda", "0.5"]))
    assert (config.units, config.feature_units, config.weights, config.attention, config.attention_lambda) == (
        64, None, None, "dot", 0.5)


def test_another_backbone_drops_the_preset_layer():
    config = train.config_from_args(train.parse_args(["--backbone", "resnet50"]))
    assert config.encoder_layer is None


def test_resume_uses_the_saved_config_and_may_extend_epochs(tmp_path):
    saved = Config.for_dataset("synthetic", units=48, epochs=3, run_dir=str(tmp_path))
    (tmp_path / "config.json").write_text(saved.to_json())
    config = train.config_from_args(train.parse_args(["--resume", "--run-dir", str(tmp_path), "--epochs", "5",
                                                      "--units", "999"]))
    assert config.units == 48 and config.epochs == 5


@pytest.mark.parametrize("argv", [["--epochs", "-1"], ["--dropout", "1.5"], ["--attention", "cosine"], ["--resume"],
                                  ["--units", "0"]])
def test_bad_training_flags_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["x.png", "--model", "m.keras", "--beam", "0"], ["x.png", "--max-length", "0"], []])
def test_bad_predict_flags_exit_with_status_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        predict.parse_args(argv)
    assert exit_info.value.code == 2


def test_config_round_trips_through_json():
    config = Config.for_dataset("synthetic", seed=7)
    assert Config.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown config keys"):
        Config.from_json(json.dumps({"nonsense": 1}))


def test_predict_without_model_uses_the_default_and_names_it_when_missing(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "models" / "gone.keras"
    monkeypatch.setenv("CAPTIONER_MODEL", str(missing))
    assert predict.main([str(tmp_path / "x.png")]) == 2
    assert str(missing) in capsys.readouterr().err
