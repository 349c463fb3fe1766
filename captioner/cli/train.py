"""Train a captioner. With no arguments: the synthetic-scenes demo (about 4 minutes on 2 CPU cores).

    captioner train                                  # synthetic scenes, MobileNetV2 features
    captioner train --epochs 20 --attention dot --run-dir runs/dot
    captioner train --resume --run-dir runs/dot      # continue an interrupted run
    captioner train --dataset flickr8k --data-dir DIR --init runs/x/best.keras --lr 1e-4 --epochs 3 \\
        --attention-supervision flickr30k_entities   # fine-tune: attention pulled toward the phrases' boxes
    captioner train --dataset flickr8k --data-dir DIR --init runs/x/best.keras --fine-tune-encoder 2 \\
        --lr 1e-4 --encoder-lr 1e-5 --epochs 3       # decoder first, then the CNN's last 2 blocks with it
    captioner train --dataset flickr8k --data-dir DIR --encoder-layer block_13_expand_relu+out_relu \\
        --attention-supervision flickr30k_entities   # a 14x14 grid: local features beside the 7x7 block's

Options left out take the dataset's defaults (captioner/config.py: Config and DATASET_DEFAULTS).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from captioner.data.readers import DATASETS as FILE_DATASETS
from captioner.utils.quiet import import_tensorflow_quietly

DATASETS = ("synthetic",) + FILE_DATASETS

# flag -> Config field, for the flags that map one to one
FIELDS = {
    "data_dir": "data_dir",
    "max_train_images": "max_train_images",
    "feature_cache": "feature_cache",
    "train_scenes": "synthetic_train_scenes",
    "val_scenes": "synthetic_val_scenes",
    "test_scenes": "synthetic_test_scenes",
    "backbone": "backbone",
    "encoder_layer": "encoder_layer",
    "image_size": "image_size",
    "attention": "attention",
    "embedding_dim": "embedding_dim",
    "units": "units",
    "attention_units": "attention_units",
    "dropout": "dropout",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "lr_schedule": "lr_schedule",
    "best_metric": "best_metric",
    "patience": "early_stopping_patience",
    "lr_patience": "lr_plateau_patience",
    "attention_lambda": "attention_lambda",
    "label_smoothing": "label_smoothing",
    "hard_inference": "hard_inference",
    "reward_scale": "reward_scale",
    "entropy_bonus": "entropy_bonus",
    "hard_estimator": "hard_estimator",
    "hard_cells": "hard_cells",
    "box_reward": "box_reward",
    "max_length": "max_length",
    "min_word_count": "min_word_count",
    "seed": "seed",
    "scst_samples": "scst_samples",
    "attention_supervision": "attention_supervision",
    "supervision_weight": "supervision_weight",
    "supervision_loss": "supervision_loss",
    "distill_from": "distill_from",
    "distill_weight": "distill_weight",
    "fine_tune_encoder": "fine_tune_encoder",
    "encoder_lr": "encoder_learning_rate",
    "augment": "augment_copies",
    "run_dir": "run_dir",
}
POSITIVE = ("max_train_images", "train_scenes", "val_scenes", "test_scenes", "image_size", "embedding_dim", "units", "attention_units",
            "batch_size", "max_length", "min_word_count", "scst_samples", "encoder_lr", "hard_cells")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="captioner train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--dataset", default="synthetic", choices=DATASETS,
        help="synthetic (built in), flickr8k (official or Kaggle layout), flickr30k/karpathy (Karpathy JSON), "
             "coco (captions_*2014.json), csv (image,caption[,split])")
    add("--data-dir", help="the dataset's folder (or the CSV / JSON file)")
    add("--max-train-images", type=int, help="use only the first N training images")
    add("--feature-cache", help="where encoder features are cached (~/.cache/captioner/features)")
    add("--train-scenes", type=int, help="synthetic training scenes (4000)")
    add("--val-scenes", type=int, help="synthetic validation scenes (200)")
    add("--test-scenes", type=int, help="synthetic test scenes (200)")
    add("--backbone", help="keras.applications CNN (mobilenet_v2)")
    add("--weights", help="'imagenet' (default) or 'none' for a random encoder")
    add("--encoder-layer", help="backbone layer to cut at (default: the dataset's choice); A+B fuses layers on the finer grid")
    add("--fine-tune-encoder", type=int, metavar="N",
        help="train the encoder's last N blocks with the decoder (0: frozen, the default); the layers below them "
             "run once per image and are cached")
    add("--encoder-lr", type=float, help="peak learning rate of the fine-tuned encoder blocks (1e-4)")
    add("--augment", type=int, metavar="N",
        help="cache N colour-jittered copies of each training image (brightness, contrast, saturation; never flips, "
             "crops or hue, which can make a caption or a box wrong); epoch e trains on copy e mod (N + 1), 0 the original")
    add("--image-size", type=int, help="input size in pixels (224)")
    add("--attention", choices=["additive", "dot", "general", "scaled_dot", "none", "hard"],
        help="score function (additive); none: no attention, the mean feature every step (a baseline); "
             "hard: one sampled location per word (additive scores, trained with REINFORCE; experimental)")
    add("--hard-inference", choices=["argmax", "expected"],
        help="hard attention when captioning: the most likely location (argmax) or the expected context")
    add("--reward-scale", type=float, help="hard attention: weight of the REINFORCE term (10)")
    add("--entropy-bonus", type=float, help="hard attention: weight of the attention entropy bonus (0.001)")
    add("--hard-estimator", choices=["paper", "expected-baseline", "leave-one-out", "top-k"],
        help="hard attention: how the location policy learns. paper: the caption's log-likelihood as one reward "
             "against a moving average (the default); expected-baseline: a reward per word, log p(word | drawn cell) "
             "- log p(word | expected context) (Deng et al. 2018); leave-one-out: a reward per word, each of "
             "--hard-cells draws against the others' mean; top-k: no sampling, the exact sum over the --hard-cells "
             "most likely cells. All but paper carry the expected context's state to the next word")
    add("--hard-cells", type=int, metavar="K", help="hard attention: cells drawn per word (1; leave-one-out: 2 or more)")
    add("--box-reward", type=float, metavar="R",
        help="hard attention with --attention-supervision: extra reward R times the share of a drawn cell that the "
             "word's boxes cover (0)")
    add("--embedding-dim", type=int, help="word embedding size")
    add("--units", type=int, help="LSTM size")
    add("--attention-units", type=int, help="hidden size of additive attention")
    add("--feature-units", type=int, help="project features to this size once per image; 0: raw features")
    add("--no-location-embedding", action="store_true", help="do not add a learned vector per grid cell")
    add("--dropout", type=float)
    add("--epochs", type=int, help="with --resume: extend the run to this many epochs")
    add("--batch-size", type=int)
    add("--lr", type=float, help="peak learning rate")
    add("--lr-schedule", choices=["constant", "cosine"])
    add("--best-metric", choices=["cider", "bleu4", "exact_match"], help="dev score that picks best.keras")
    add("--patience", type=int, help="stop after this many epochs without a better best metric (0: never)")
    add("--lr-patience", type=int, help="halve the learning rate after this many epochs without one (0: never)")
    add("--lambda", dest="attention_lambda", type=float, help="weight of the doubly stochastic attention penalty")
    add("--label-smoothing", type=float, help="spread this share of each target over the vocabulary (0)")
    add("--max-length", type=int, help="most words per caption")
    add("--min-word-count", type=int, help="rarer words become <unk>")
    add("--seed", type=int)
    add("--run-dir", help="default: runs/DATASET-DATE-TIME")
    add("--init", help="start from this trained .keras model (its architecture, vocabulary and weights)")
    add("--scst", action="store_true",
        help="self-critical fine-tuning of --init: sampled captions rewarded by CIDEr-D minus the greedy caption's "
             "(defaults: --lr 5e-5 constant, 5 epochs)")
    add("--no-xla", action="store_true", help="compile the training step without XLA (slower; for debugging)")
    add("--scst-samples", type=int, help="self-critical: captions sampled per image (1: the greedy caption is "
        "the baseline; K > 1: each sample against the mean of the other K - 1, Luo 2020)")
    add("--attention-supervision", metavar="DIR",
        help="a Flickr30k Entities folder (Annotations/, Sentences/): pull each word's attention toward the boxes "
             "of its phrase in the training captions (Liu et al. 2017); dev and test boxes are never used")
    add("--supervision-weight", type=float, metavar="W", help="weight of the attention supervision loss (1.0)")
    add("--supervision-loss", choices=["cross-entropy", "mass", "pointing"],
        help="cross-entropy: alpha toward the boxes' map, spread over them by cover (Liu et al.; the default); "
             "mass: -log of the attention inside the boxes, wherever in them it lands; "
             "pointing: the mass of alpha^4 renormalised, which pulls attention's peak (a hard model's cell) inside")
    add("--distill-from", metavar="TEACHER.keras",
        help="learn a trained model's next-word distributions beside the captions' words (Hinton et al. 2015): "
             "e.g. a stronger ensemble into one decoder; the same vocabulary, any encoder")
    add("--distill-weight", type=float, metavar="A",
        help="share of the word loss that is the teacher's distribution, in (0, 1] (0.5)")
    add("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    add("--strategy", default="default", choices=["default", "mirrored", "multiworker", "tpu"],
        help="tf.distribute: this device (default), all local GPUs (mirrored), several machines configured by "
             "TF_CONFIG (multiworker) or a TPU; --batch-size stays the global batch (docs/distributed.md)")
    args = parser.parse_args(argv)
    if args.resume and not args.run_dir:
        parser.error("--resume needs --run-dir")
    if args.scst and not (args.init or args.resume):
        parser.error("--scst needs --init MODEL.keras (a model trained with cross-entropy)")
    for name in POSITIVE:
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("patience", "lr_patience"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    if args.epochs is not None and args.epochs < 0:
        parser.error("--epochs must not be negative")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        parser.error("--dropout must be in [0, 1)")
    if args.label_smoothing is not None and not 0 <= args.label_smoothing < 1:
        parser.error("--label-smoothing must be in [0, 1)")
    if args.feature_units is not None and args.feature_units < 0:
        parser.error("--feature-units must not be negative")
    if args.supervision_weight is not None and not 0 <= args.supervision_weight < math.inf:
        parser.error(f"--supervision-weight must be a number >= 0, not {args.supervision_weight}")
    if args.distill_weight is not None and not 0 < args.distill_weight <= 1:
        parser.error(f"--distill-weight must be in (0, 1], not {args.distill_weight}")
    if args.distill_weight is not None and not args.distill_from:
        parser.error("--distill-weight needs --distill-from TEACHER.keras")
    if args.distill_from and not Path(args.distill_from).is_file():
        parser.error(f"--distill-from {args.distill_from}: no such file")
    hard = args.attention == "hard"
    for flag in ("hard_estimator", "hard_cells", "box_reward", "reward_scale", "entropy_bonus", "hard_inference"):
        if getattr(args, flag) is not None and not hard:
            parser.error(f"--{flag.replace('_', '-')} is a hard-attention option; it needs --attention hard")
    if args.hard_estimator == "leave-one-out" and (args.hard_cells or 1) < 2:
        parser.error("--hard-estimator leave-one-out needs --hard-cells 2 or more (each draw's baseline is the others' mean)")
    if args.hard_cells and args.hard_cells > 1 and args.hard_estimator in (None, "paper"):
        parser.error("--hard-cells K > 1 needs --hard-estimator expected-baseline, leave-one-out or top-k")
    if args.box_reward is not None and (args.box_reward < 0 or not args.attention_supervision):
        parser.error("--box-reward needs --attention-supervision DIR and a value >= 0")
    if hard and args.scst:
        parser.error("--scst trains whole sampled captions of a soft-attention model; not with --attention hard")
    if args.distill_from and (args.scst or args.attention == "hard"):
        parser.error("--distill-from trains soft attention with cross-entropy; not with --scst or --attention hard")
    if args.augment is not None and args.augment < 0:
        parser.error("--augment must not be negative")
    if args.fine_tune_encoder is not None and args.fine_tune_encoder < 0:
        parser.error("--fine-tune-encoder must not be negative")
    if args.encoder_lr is not None and not args.fine_tune_encoder:
        parser.error("--encoder-lr needs --fine-tune-encoder N")
    if args.fine_tune_encoder and args.scst:
        parser.error("--fine-tune-encoder trains with cross-entropy; self-critical training (--scst) keeps the "
                     "encoder frozen")
    for flag in ("supervision_weight", "supervision_loss"):
        if getattr(args, flag) is not None and not args.attention_supervision:
            parser.error(f"--{flag.replace('_', '-')} needs --attention-supervision DIR")
    return args


def config_from_args(args):
    """The saved config when resuming (only --epochs may change), else the dataset's defaults plus the flags."""
    from captioner.config import Config

    saved = Path(args.run_dir) / "config.json" if args.run_dir else None
    if args.resume and saved.exists():
        config = Config.from_json(saved.read_text())
        if args.epochs is not None:
            config.epochs = args.epochs
        return config
    overrides = {field: getattr(args, flag) for flag, field in FIELDS.items() if getattr(args, flag) is not None}
    if args.weights is not None:
        overrides["weights"] = None if args.weights.lower() == "none" else args.weights
    if args.feature_units is not None:
        overrides["feature_units"] = args.feature_units or None
    if args.no_location_embedding:
        overrides["location_embedding"] = False
    if args.no_xla:
        overrides["jit_compile"] = False
    if args.init:
        overrides["init_model"] = args.init
    if args.scst:
        # Small constant steps: the model is already good, and REINFORCE's gradients are noisy.
        overrides = {"learning_rate": 5e-5, "lr_schedule": "constant", "epochs": 5, "lr_plateau_patience": None,
                     **overrides, "self_critical": True}
    if overrides.get("attention") == "hard":  # hard attention scores locations like the paper: additively
        overrides.update(attention="additive", hard_attention=True)
    return Config.for_dataset(args.dataset, **overrides)


def main(argv=None) -> int:
    args = parse_args(argv)
    import_tensorflow_quietly()
    from captioner.model.encoder import BACKBONES, WeightsUnavailableError
    from captioner.training import TrainingDiverged, train

    if args.backbone is not None and args.backbone not in BACKBONES:
        print(f"error: unknown backbone {args.backbone!r}; choose one of {', '.join(BACKBONES)}", file=sys.stderr)
        return 2
    from captioner.training.distribute import make_strategy

    config = config_from_args(args)
    try:
        strategy = make_strategy(args.strategy)  # before any other TensorFlow work (multi-worker needs that)
        train(config, resume=args.resume, strategy=strategy)
    except (WeightsUnavailableError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except OSError as error:  # disk full, permissions: checkpoints are written atomically, the old ones stay
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: captioner train --resume --run-dir {config.run_dir}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
