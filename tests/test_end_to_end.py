"""A tiny run of the real command-line tools: train a few steps, then caption files with overlays."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL_IMAGE, TINY_RUN, assert_same_checkpoints, interrupt_after_first_epoch
from PIL import Image

from captioner.cli import caption as predict
from captioner.cli import train
from captioner.data import synthetic
from captioner.model.saving import load_captioner
from captioner.visualize.overlay import MAX_COLUMNS, PANEL_INCHES


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    assert train.main(TINY_RUN + ["--epochs", "2", "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_training_writes_a_complete_run_directory(trained_run):
    for name in ("config.json", "vocabulary.json", "metrics.csv", "metrics.jsonl", "best.keras",
                 "checkpoints/last.npz", "checkpoints/best.npz", "test_metrics.json", "test_captions.json",
                 "tensorboard"):
        assert (trained_run / name).exists(), name
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert {"train_loss", "val_loss", "val_bleu4", "val_cider", "val_exact_match", "learning_rate"} <= set(rows[0])
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert list((trained_run / "overlays").glob("*.png"))
    test = json.loads((trained_run / "test_metrics.json").read_text())
    for name in ("BLEU-4", "CIDEr-D", "ROUGE-L", "exact_match", "grounding_ratio"):
        assert name in test


def test_predict_captions_files_writes_overlays_and_reports_a_bad_file(trained_run, tmp_path, capsys):
    scenes = synthetic.make_scenes(2, seed=99, image_size=SMALL_IMAGE)
    paths = []
    for index, scene in enumerate(scenes):
        paths.append(tmp_path / f"scene {index}.png")
        Image.fromarray(scene.image).save(paths[-1])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    overlays = tmp_path / "overlays"
    status = predict.main([str(paths[0]), str(broken), str(paths[1]), "--model", str(trained_run / "best.keras"),
                           "--json", "--overlay-dir", str(overlays)])
    out, err = capsys.readouterr()
    assert status == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.jpg" in errors[0]
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in results] == [str(p) for p in paths]
    model = load_captioner(trained_run / "best.keras")
    for result in results:
        assert result["caption"] == " ".join(result["words"])
        grids = np.array(result["attention"])
        assert grids.shape == (len(result["words"]), *model.grid)
    pngs = sorted(overlays.glob("*.png"))
    assert len(pngs) == 2
    for png, result in zip(pngs, results):
        panels = len(result["words"]) + 1
        columns = min(panels, MAX_COLUMNS)
        rows = math.ceil(panels / columns)
        width, height = Image.open(png).size
        assert width == round(columns * PANEL_INCHES * 100)
        assert height == round(rows * (PANEL_INCHES + 0.3) * 100)  # square scenes: square panels and a title


def test_predict_html_report_per_word_overlays_and_beam_alternatives(trained_run, tmp_path, capsys):
    path = tmp_path / "wide scene.png"
    scene = synthetic.make_scenes(1, seed=7, image_size=SMALL_IMAGE)[0].image
    Image.fromarray(np.concatenate([scene, scene], axis=1)).save(path)  # twice as wide as high
    report, overlays = tmp_path / "report.html", tmp_path / "words"
    status = predict.main([str(path), "--model", str(trained_run / "best.keras"), "--beam", "3", "--json",
                           "--html", str(report), "--overlay-dir", str(overlays), "--per-word",
                           "--overlay-style", "heatmap", "--colormap", "viridis", "--alpha", "0.7"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["alternatives"]) == 2 and all("caption" in a and "score" in a for a in result["alternatives"])
    assert result["score"] >= max(a["score"] for a in result["alternatives"])
    words = sorted(overlays.glob("*.png"))
    assert len(words) == len(result["words"]) and words[0].name.startswith("0000_wide scene_00_")
    page = report.read_text()
    assert f'"words": {json.dumps(result["words"])}' in page and result["alternatives"][0]["caption"] in page


@pytest.mark.parametrize("flag", [["--alpha", "2"], ["--colormap", "no-such-map"], ["--panel-size", "0"]])
def test_predict_refuses_bad_drawing_flags(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["x.png"] + flag)
    assert exit_info.value.code == 2 and flag[0] in capsys.readouterr().err


def test_predict_plain_output_and_beam(trained_run, tmp_path, capsys):
    path = tmp_path / "scene.png"
    Image.fromarray(synthetic.make_scenes(1, seed=5, image_size=SMALL_IMAGE)[0].image).save(path)
    assert predict.main([str(path), "--model", str(trained_run / "best.keras"), "--beam", "3"]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ")


def test_predict_refuses_a_missing_model(tmp_path, capsys):
    assert predict.main([str(tmp_path / "x.png"), "--model", str(tmp_path / "none.keras")]) == 2
    assert "none.keras" in capsys.readouterr().err


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert train.main(TINY_RUN + ["--epochs", "2", "--run-dir", str(straight)]) == 0

    interrupt_after_first_epoch(monkeypatch)
    assert train.main(TINY_RUN + ["--epochs", "2", "--run-dir", str(interrupted)]) == 130
    monkeypatch.undo()
    rows = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]

    assert train.main(["--resume", "--run-dir", str(interrupted)]) == 0
    rows = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert_same_checkpoints(straight / "checkpoints/last.npz", interrupted / "checkpoints/last.npz")


def test_evaluate_scores_a_split_and_writes_coco_results(trained_run, tmp_path, capsys):
    from captioner.evaluation import evaluate

    fixture = Path(__file__).resolve().parent.parent / "data" / "fixtures" / "flickr8k"
    out = tmp_path / "eval"
    status = evaluate.main(["--model", str(trained_run / "best.keras"), "--dataset", "flickr8k", "--data-dir",
                            str(fixture), "--split", "val", "--beam", "2", "--out", str(out),
                            "--feature-cache", str(tmp_path / "cache")])
    assert status == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["images"] == 1 and scores["decoding"] == "beam 2"
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D", "nltk BLEU-4"):
        assert name in scores
    results = json.loads((out / "captions.json").read_text())
    assert results == [{"image_id": "green.jpg", "caption": results[0]["caption"]}]
    table = capsys.readouterr().out
    assert "CIDEr-D" in table and "nltk corpus_bleu" in table


def test_learning_rate_halves_on_a_plateau_and_training_stops_early(tmp_path):
    run_dir = tmp_path / "run"
    # A learning rate of 0 keeps every dev score where it was: no epoch after the first improves.
    argv = TINY_RUN + ["--epochs", "8", "--lr", "0", "--lr-schedule", "constant", "--patience", "3",
                       "--lr-patience", "1", "--best-metric", "bleu4", "--run-dir", str(run_dir)]
    assert train.main(argv) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]  # stopped 3 epochs after the best (epoch 1)
    state = json.loads(str(np.load(run_dir / "checkpoints/last.npz")["state"]))
    assert state["stopped"] and state["best_epoch"] == 0 and state["lr_scale"] == 0.125
