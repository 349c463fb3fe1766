"""The end of each epoch (Keras callbacks driven by the loop): a resumed run stops early and lowers its
learning rate exactly as an uninterrupted one, metrics.csv holds each epoch once, and progress written
to a file or a pipe is one line per epoch."""

import csv
import json
import re

import numpy as np
from helpers import TINY_RUN

from captioner.cli import train
from captioner.training import callbacks

# A learning rate of 0 keeps every dev score where it was: no epoch after the first improves. Uninterrupted,
# the rate halves after epoch 3 (2 epochs without a better score) and the run stops after epoch 4 (3 epochs).
PLATEAU = ["--lr", "0", "--lr-schedule", "constant", "--patience", "3", "--lr-patience", "2", "--best-metric", "bleu4"]


def test_a_resumed_run_keeps_its_patience_and_logs_each_epoch_once(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    real_save = callbacks.save_checkpoint
    saves = []

    def interrupt_at_the_third_epoch(path, *args, **kwargs):  # killed after epoch 3's logs, before its checkpoint
        if str(path).endswith(callbacks.LAST_CHECKPOINT):
            saves.append(path)
            if len(saves) == 3:
                raise KeyboardInterrupt
        real_save(path, *args, **kwargs)

    monkeypatch.setattr(callbacks, "save_checkpoint", interrupt_at_the_third_epoch)
    assert train.main(TINY_RUN + PLATEAU + ["--epochs", "8", "--run-dir", str(run_dir)]) == 130
    monkeypatch.setattr(callbacks, "save_checkpoint", real_save)
    capsys.readouterr()

    assert train.main(["--resume", "--run-dir", str(run_dir)]) == 0  # redoes epoch 3, then 4, and stops
    out = capsys.readouterr().out
    state = json.loads(str(np.load(run_dir / callbacks.LAST_CHECKPOINT)["state"]))
    assert state["stopped"] and state["best_epoch"] == 0 and state["lr_scale"] == 0.5
    assert "learning rate x0.5" in out and "Early stop" in out
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    with open(run_dir / "metrics.csv", newline="") as file:
        assert [int(float(row["epoch"])) for row in csv.DictReader(file)] == [0, 1, 2, 3]  # Keras counts from 0

    # Not a terminal here: one progress line for each of the two epochs trained, no redrawing, no colours.
    training = out[out.index("Epoch 3/8"):]
    progress = [line for line in training.splitlines() if re.match(r"(\d+)/\1 - ", line)]  # "6/6 - 0s - ... - loss: ..."
    assert len(progress) == 2 and "loss:" in progress[0]
    assert "\r" not in training and "\x1b[" not in training
