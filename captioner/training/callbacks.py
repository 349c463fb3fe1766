"""The end of every epoch, with Keras's own callbacks, driven by the loop (there is no `model.fit` here).

In the order they run, on the epoch's row of metrics:
    JsonLinesLog       metrics.jsonl, the log tests and notebooks read (rewritten whole, atomically)
    CSVLogger          metrics.csv (Keras's format: sorted columns, epoch counted from 0)
    TensorBoard        tensorboard/train and tensorboard/validation (epoch_* scalars)
    EarlyStopping      stop after `early_stopping_patience` epochs without a better dev `best_metric`
    ReduceLROnPlateau  multiply the learning rate by `lr_plateau_factor` after `lr_plateau_patience` such epochs
    Checkpoints        best.npz and best.keras when the dev score improves, last.npz every epoch
The last three watch `val_<best_metric>` the same way (mode max, any gain counts).

Checkpoints stays hand-written: Keras's ModelCheckpoint writes the model alone, in place, while a
resumable run needs weights, optimizer state and the loop's state (epoch, best score and epoch, the
learning-rate scale, the early stop, the history) in one file written atomically (`captioner.training.checkpoint`),
so that `--resume` continues exactly, mid-run, where the last epoch ended (tests: an interrupted
run resumes to the same weights). Keras's BackupAndRestore resumes only inside `fit` (it sets
fit's initial epoch) and keeps neither the loop's state nor the callbacks'. On resume the Keras
callbacks' own counters (best, wait) are set back from that state (`EpochCallbacks.restore`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras

from captioner.training.checkpoint import save_checkpoint
from captioner.utils.atomic import atomic_path, atomic_write_text

LAST_CHECKPOINT = "checkpoints/last.npz"
BEST_CHECKPOINT = "checkpoints/best.npz"
BEST_MODEL = "best.keras"


class LearningRateScale:
    """The optimizer as ReduceLROnPlateau sees it: a `learning_rate` it can read and set.

    Keras's callback sets `optimizer.learning_rate`, which an optimizer built on a schedule (here a
    cosine decay over the run) refuses with a TypeError. What a plateau lowers is the multiplier
    of the schedule (`ScaledSchedule.scale`), so the callback is handed that, as is.
    """

    def __init__(self, scale):
        self.scale = scale

    @property
    def learning_rate(self):
        return self.scale

    @learning_rate.setter
    def learning_rate(self, value):
        self.scale.assign(value)


class TrainingLoop:
    """What the callbacks call `model`: the flag EarlyStopping sets, and the learning rate ReduceLROnPlateau lowers."""

    def __init__(self, lr_scale):
        self.stop_training = False
        self.optimizer = LearningRateScale(lr_scale)


class Checkpoints(keras.callbacks.Callback):
    """best.npz and best.keras when `monitor` improves (before last.npz, so a run killed in between
    redoes this epoch rather than lose its best), then last.npz, each written atomically.

    `history` is the loop's list of epoch rows (this epoch's included); only the chief writes.
    """

    def __init__(self, run_dir: Path, trainer, monitor: str, history: list[dict], write: bool):
        super().__init__()
        self.run_dir, self.trainer, self.monitor, self.history, self.write = run_dir, trainer, monitor, history, write
        self.best, self.best_epoch, self.improved = -math.inf, -1, False

    def on_epoch_end(self, epoch, logs=None):
        self.improved = logs[self.monitor] > self.best
        if self.improved:
            self.best, self.best_epoch = logs[self.monitor], epoch
        state = {"epoch": epoch, "best_score": self.best, "best_epoch": self.best_epoch,
                 "lr_scale": float(self.trainer.lr_scale.numpy()), "stopped": bool(self.model.stop_training),
                 "history": self.history}
        if not self.write:
            return
        if self.improved:
            save_checkpoint(self.run_dir / BEST_CHECKPOINT, self.trainer.model_variables(), [], state)
            with atomic_path(self.run_dir / BEST_MODEL) as temporary:
                self.trainer.captioner.save(temporary)
        save_checkpoint(self.run_dir / LAST_CHECKPOINT, self.trainer.model_variables(), self.trainer.optimizer_variables(),
                        state)


class JsonLinesLog(keras.callbacks.Callback):
    """metrics.jsonl: one JSON object per epoch (its number from 1), rewritten whole from `history` each epoch,
    so it is never half written and, after a resume, holds exactly the epochs the checkpoint kept."""

    def __init__(self, path: Path, history: list[dict]):
        super().__init__()
        self.path, self.history = path, history

    def on_epoch_end(self, epoch, logs=None):
        atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in self.history))


def rewrite_csv_log(path: Path, history: list[dict]) -> None:
    """metrics.csv from the rows a checkpoint kept, as CSVLogger writes it: on resume, before it appends.

    CSVLogger appends a row each epoch; a run killed after that row but before its checkpoint would
    otherwise show the redone epoch twice (or a half-written row).
    """
    with atomic_path(path) as temporary:
        rows = keras.callbacks.CallbackList([keras.callbacks.CSVLogger(str(temporary))])
        rows.on_train_begin()
        for row in history:
            rows.on_epoch_end(row["epoch"] - 1, callback_logs(row))
        rows.on_train_end()


def callback_logs(row: dict) -> dict:
    """An epoch's row as Keras callbacks take it: the epoch is their argument, not a metric."""
    return {key: value for key, value in row.items() if key != "epoch"}


class EpochCallbacks:
    """The callbacks of one run, in order (module docstring); `end_epoch` runs them on an epoch's row."""

    def __init__(self, config, run_dir: Path, trainer, history: list[dict], chief: bool, resuming: bool):
        monitor = f"val_{config.best_metric}"
        self.loop = TrainingLoop(trainer.lr_scale)
        self.lr_scale = trainer.lr_scale
        self.early_stopping = self.plateau = None
        callbacks = []
        if chief:
            if resuming:
                rewrite_csv_log(run_dir / "metrics.csv", history)
            callbacks += [JsonLinesLog(run_dir / "metrics.jsonl", history),
                          keras.callbacks.CSVLogger(str(run_dir / "metrics.csv"), append=resuming),
                          keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False)]
        if config.early_stopping_patience:
            self.early_stopping = keras.callbacks.EarlyStopping(monitor, mode="max", min_delta=0,
                                                                patience=config.early_stopping_patience)
            callbacks.append(self.early_stopping)
        if config.lr_plateau_patience:
            # After the loggers: it writes the scale into the logs as "learning_rate".
            self.plateau = keras.callbacks.ReduceLROnPlateau(monitor, mode="max", min_delta=0, min_lr=0.0,
                                                             factor=config.lr_plateau_factor,
                                                             patience=config.lr_plateau_patience)
            callbacks.append(self.plateau)
        self.checkpoints = Checkpoints(run_dir, trainer, monitor, history, write=chief)
        callbacks.append(self.checkpoints)  # last: it saves the stop flag and the lowered scale
        self.callbacks = keras.callbacks.CallbackList(callbacks, model=self.loop)

    def begin(self, state: dict | None = None) -> None:
        """on_train_begin, then, when resuming, the callbacks' counters as the checkpoint's `state` left them."""
        self.callbacks.on_train_begin()
        if state is not None:
            self.restore(state)

    def restore(self, state: dict) -> None:
        best = state["best_score"] if math.isfinite(state["best_score"]) else None
        stale = state["epoch"] - state["best_epoch"]  # epochs since the best one
        self.checkpoints.best, self.checkpoints.best_epoch = state["best_score"], state["best_epoch"]
        if self.early_stopping:
            self.early_stopping.best, self.early_stopping.best_epoch = best, state["best_epoch"]
            self.early_stopping.wait = stale
        if self.plateau:
            self.plateau.best = best
            self.plateau.wait = stale % self.plateau.patience  # the count restarts after each reduction

    def end_epoch(self, epoch: int, row: dict) -> dict:
        """Run the callbacks; returns what they did: improved (a new best), lr_lowered, stop."""
        scale = float(self.lr_scale.numpy())
        self.callbacks.on_epoch_end(epoch, callback_logs(row))
        return {"improved": self.checkpoints.improved, "lr_lowered": float(self.lr_scale.numpy()) < scale,
                "stop": bool(self.loop.stop_training), "stale": epoch - self.checkpoints.best_epoch,
                "best_epoch": self.checkpoints.best_epoch}

    def end(self) -> None:
        self.callbacks.on_train_end()
