"""`train()`: a training run, top to bottom.

1. Make a run directory and save the config and vocabulary into it.
2. Encode every image once with the frozen encoder (or, fine-tuning, its frozen lower blocks):
   in memory for synthetic scenes, through the disk cache (`captioner.data.features`) for photos (`prepare.py`).
   With `--distill-from`, the teacher's own features of the training images too.
3. Each epoch: the steps of the run's objective on shuffled batches (`epochs.py`, `trainer.py`,
   `objectives.py`), then the dev loss and free-running dev captions scored with CIDEr-D and
   BLEU-4 (`validation.py`).
4. Keras callbacks end the epoch (`callbacks.py`): logs, the best checkpoint by `best_metric`
   (also as a self-contained `.keras` model) and the last one, the learning rate lowered on a
   plateau, early stopping. `--resume` continues from the last checkpoint.
5. Caption the test split with the best model and report the COCO metrics (`report.py`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import tensorflow as tf

from captioner.config import Config
from captioner.data.datasets import load_splits
from captioner.data.vocabulary import tokenize
from captioner.evaluation.cider import CiderD
from captioner.evaluation.coco_metrics import start_meteor
from captioner.training import distribute
from captioner.training.callbacks import BEST_CHECKPOINT, LAST_CHECKPOINT, EpochCallbacks
from captioner.training.checkpoint import load_checkpoint
from captioner.training.epochs import self_critical_epoch, teacher_forced_epoch
from captioner.training.prepare import (
    caption_pairs,
    check_distillation,
    check_fine_tuning,
    check_supervision,
    encode_splits,
    load_teacher,
    make_captioner,
    supervision_maps,
)
from captioner.training.report import report_on_test
from captioner.training.trainer import Trainer, TrainingDiverged
from captioner.training.validation import validate
from captioner.utils.atomic import atomic_write_text


def train(config: Config, resume: bool = False, strategy: tf.distribute.Strategy | None = None) -> Path:
    """Train as `config` says, on the replicas of `strategy` (default: this device); returns the run directory.

    Under a multi-worker strategy every worker runs this same function; only the chief writes
    into the run directory, which every worker must be able to read (to resume).
    """
    strategy = strategy or tf.distribute.get_strategy()
    chief = distribute.is_chief(strategy)
    check_supervision(config)
    check_fine_tuning(config)
    check_distillation(config)
    run_dir, resuming = start_run(config, resume, chief)
    keras.utils.set_random_seed(config.seed)
    if distribute.is_distributed(strategy):
        print(f"Strategy: {distribute.describe(strategy)}, {strategy.num_replicas_in_sync} replicas, "
              f"global batch {config.batch_size}{'' if chief else ' (worker: writes nothing)'}")

    splits = load_splits(config)
    captioner, vocabulary = make_captioner(config, splits, strategy)
    if chief:
        vocabulary.save(run_dir / "vocabulary.json")
    print(f"Run directory: {run_dir}  vocabulary: {len(vocabulary)} words")
    splits, features = encode_splits(captioner, splits, config, strategy)
    pairs = {name: caption_pairs(split, vocabulary, config.max_length) for name, split in splits.items()}
    target_maps = None  # attention supervision: the TRAIN pairs' maps only, never dev or test
    if config.attention_supervision:
        target_maps = supervision_maps(captioner, splits["train"], config, len(pairs["train"][0]))
    teacher = None  # distillation: the teacher and its own features of the TRAIN images
    if config.distill_from:
        teacher, features["teacher_train"] = load_teacher(config, captioner, splits["train"])
    run_epoch, steps_per_epoch = epoch_function(config, splits, features, pairs, target_maps)

    trainer = Trainer(captioner, config, total_steps=config.epochs * steps_per_epoch, strategy=strategy,
                      teacher=teacher)
    history, start_epoch, state = resume_from(run_dir, trainer, config) if resuming else ([], 0, None)
    callbacks = EpochCallbacks(config, run_dir, trainer, history, chief, resuming)
    callbacks.begin(state)
    started = time.time()
    try:
        for epoch in range(start_epoch, config.epochs):
            print(f"Epoch {epoch + 1}/{config.epochs}")
            if chief and epoch + 1 == config.epochs:
                start_meteor()  # the test report's METEOR scorer loads its jar (about 10 s) during the last epoch
            epoch_started = time.time()
            row = {"epoch": epoch + 1, **diverged_is_explained(run_epoch, trainer, epoch, run_dir)}
            row["train_seconds"] = time.time() - epoch_started
            row["captions_per_second"] = row["captions"] / row["train_seconds"]
            row.update(validate(trainer, features["val"], *pairs["val"], splits["val"]))
            row["learning_rate"] = float(trainer.schedule(trainer.optimizer.iterations))
            row["epoch_seconds"] = time.time() - epoch_started
            history.append(row)
            outcome = callbacks.end_epoch(epoch, row)
            remaining = (time.time() - started) / (epoch + 1 - start_epoch) * (config.epochs - epoch - 1)
            print_epoch_end(config, row, outcome, remaining)
            if outcome["stop"]:
                break
    finally:
        callbacks.end()

    if not chief:  # the chief evaluates and writes the test report
        return run_dir
    if not (run_dir / BEST_CHECKPOINT).exists():
        print("No epoch ran; nothing to evaluate.")
        return run_dir
    load_checkpoint(run_dir / BEST_CHECKPOINT, trainer.model_variables())
    report_on_test(captioner, features["test"], splits["test"], run_dir)
    return run_dir


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_run(config: Config, resume: bool, chief: bool) -> tuple[Path, bool]:
    """The run directory (made, with config.json, by the chief), and whether there is a run in it to resume."""
    run_dir = Path(config.run_dir or default_run_dir(config))
    config.run_dir = str(run_dir)
    resuming = resume and (run_dir / LAST_CHECKPOINT).exists()
    if resume and not resuming:
        print(f"No checkpoint in {run_dir}; starting a new run there.")
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", config.to_json())
    return run_dir, resuming


def epoch_function(config: Config, splits, features, pairs, target_maps):
    """The function that trains one epoch, `run(trainer, epoch) -> row`, and its number of steps (for the schedule)."""
    if config.self_critical:
        if not config.init_model:
            raise ValueError("self-critical training starts from a trained model: give --init MODEL.keras")
        # CIDEr-D's document frequencies: the training references, tokenised like the captions.
        references = [[tokenize(c) for c in refs] for refs in splits["train"].captions]
        cider = CiderD(references)
        return (lambda trainer, epoch: self_critical_epoch(trainer, features["train"], references, cider, epoch),
                math.ceil(len(splits["train"]) / config.batch_size))
    views = features.get("train_views", [features["train"]])  # with augmented copies: one per epoch in turn
    return (lambda trainer, epoch: teacher_forced_epoch(trainer, views[epoch % len(views)], *pairs["train"], epoch,
                                                        target_maps, features.get("teacher_train")),
            math.ceil(len(pairs["train"][0]) / config.batch_size))


def resume_from(run_dir: Path, trainer: Trainer, config: Config) -> tuple[list[dict], int, dict]:
    """Weights, optimizer and learning-rate scale from the last checkpoint; (history, first epoch to run, state)."""
    state = load_checkpoint(run_dir / LAST_CHECKPOINT, trainer.model_variables(), trainer.optimizer_variables())
    trainer.lr_scale.assign(state["lr_scale"])
    start_epoch = state["epoch"] + 1
    print(f"Resumed from {run_dir / LAST_CHECKPOINT} after epoch {start_epoch}")
    if state["stopped"]:
        print("That run had stopped early; nothing more to train.")
        start_epoch = config.epochs
    return state["history"], start_epoch, state


def diverged_is_explained(run_epoch, trainer: Trainer, epoch: int, run_dir: Path) -> dict:
    """`run_epoch`; a diverged loss says what is still safe on disk and what to try."""
    try:
        return run_epoch(trainer, epoch)
    except TrainingDiverged as error:
        last = run_dir / LAST_CHECKPOINT
        kept = f"the last good checkpoint, {last}, is untouched" if last.exists() else "no epoch had finished"
        raise TrainingDiverged(f"{error}; {kept}; try a lower --lr and --resume") from None


def print_epoch_end(config: Config, row: dict, outcome: dict, remaining_seconds: float) -> None:
    """The dev scores, a new best, a lowered learning rate, an early stop; the time left."""
    if outcome["lr_lowered"]:
        print(f"  no better {config.best_metric} for {outcome['stale']} epoch(s): learning rate x{config.lr_plateau_factor}")
    scores = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val_") and isinstance(v, float))
    minutes, seconds = divmod(int(remaining_seconds), 60)
    print(f"  {scores}{'  (best)' if outcome['improved'] else ''}  ETA {minutes}m{seconds:02d}s")
    if outcome["stop"]:
        print(f"Early stop: no better {config.best_metric} for {outcome['stale']} epochs "
              f"(best: epoch {outcome['best_epoch'] + 1})")
