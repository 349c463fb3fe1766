"""Train a captioner. With no arguments: the synthetic-scenes demo (a few minutes on a laptop CPU).

    python train.py                                  # synthetic scenes, MobileNetV2 features
    python train.py --epochs 20 --attention dot --run-dir runs/dot
    python train.py --resume --run-dir runs/dot      # continue an interrupted run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides our output


def parse_args(argv=None) -> argparse.Namespace:
    from captioner.config import Config

    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=defaults.dataset, choices=["synthetic"])
    parser.add_argument("--data-dir", default=None, help="where the dataset lives")
    parser.add_argument("--train-scenes", type=int, default=defaults.synthetic_train_scenes, help="synthetic scenes to train on")
    parser.add_argument("--val-scenes", type=int, default=defaults.synthetic_val_scenes)
    parser.add_argument("--test-scenes", type=int, default=defaults.synthetic_test_scenes)
    parser.add_argument("--backbone", default=defaults.backbone)
    parser.add_argument("--weights", default=defaults.weights, help="'imagenet' or 'none' (random encoder)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--attention", default=defaults.attention, choices=["additive", "dot", "general", "scaled_dot"])
    parser.add_argument("--embedding-dim", type=int, default=defaults.embedding_dim)
    parser.add_argument("--units", type=int, default=defaults.units, help="LSTM size")
    parser.add_argument("--attention-units", type=int, default=defaults.attention_units)
    parser.add_argument("--feature-units", type=int, default=defaults.feature_units, help="0: attend over raw CNN features")
    parser.add_argument("--no-location-embedding", action="store_true")
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--epochs", type=int, default=None, help=f"default {defaults.epochs}; with --resume, extends the run")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--lambda", dest="attention_lambda", type=float, default=defaults.attention_lambda,
                        help="weight of the doubly stochastic attention penalty")
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument("--min-word-count", type=int, default=defaults.min_word_count)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--run-dir", default=None, help="default: runs/DATASET-DATE-TIME")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    args = parser.parse_args(argv)
    if args.resume and not args.run_dir:
        parser.error("--resume needs --run-dir")
    for name in ("train_scenes", "val_scenes", "test_scenes", "image_size", "embedding_dim", "units", "attention_units", "batch_size", "max_length"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.epochs is not None and args.epochs < 0:
        parser.error("--epochs must not be negative")
    if not 0 <= args.dropout < 1:
        parser.error("--dropout must be in [0, 1)")
    return args


def config_from_args(args):
    from captioner.config import Config

    if args.resume and (Path(args.run_dir) / "config.json").exists():
        config = Config.from_json((Path(args.run_dir) / "config.json").read_text())
        if args.epochs is not None:
            config.epochs = args.epochs
        return config
    return Config(
        dataset=args.dataset,
        data_dir=args.data_dir,
        synthetic_train_scenes=args.train_scenes,
        synthetic_val_scenes=args.val_scenes,
        synthetic_test_scenes=args.test_scenes,
        backbone=args.backbone,
        weights=None if args.weights.lower() == "none" else args.weights,
        image_size=args.image_size,
        attention=args.attention,
        embedding_dim=args.embedding_dim,
        units=args.units,
        attention_units=args.attention_units,
        feature_units=args.feature_units or None,
        location_embedding=not args.no_location_embedding,
        dropout=args.dropout,
        epochs=args.epochs if args.epochs is not None else Config.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        attention_lambda=args.attention_lambda,
        max_length=args.max_length,
        min_word_count=args.min_word_count,
        seed=args.seed,
        run_dir=args.run_dir,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    from captioner.encoder import WeightsUnavailableError
    from captioner.training import train

    config = config_from_args(args)
    try:
        train(config, resume=args.resume)
    except (WeightsUnavailableError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: python train.py --resume --run-dir {config.run_dir}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
