"""Datasets as the trainer sees them: per split, images and their reference captions."""

from __future__ import annotations

import dataclasses

import numpy as np

from captioner import synthetic

DATASETS = ("synthetic",)


@dataclasses.dataclass
class Split:
    name: str
    images: np.ndarray  # (N, S, S, 3) uint8
    captions: list[list[str]]  # reference captions of each image
    scenes: list | None = None  # synthetic ground truth, when there is one

    def __len__(self) -> int:
        return len(self.captions)


def load_splits(config) -> dict[str, Split]:
    """train, val and test splits of `config.dataset`."""
    if config.dataset != "synthetic":
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}")
    sizes = {
        "train": config.synthetic_train_scenes,
        "val": config.synthetic_val_scenes,
        "test": config.synthetic_test_scenes,
    }
    splits = {}
    for offset, (name, count) in enumerate(sizes.items()):
        # Each split has its own seed, so held-out scenes are never training scenes.
        scenes = synthetic.make_scenes(count, seed=config.seed * 1000 + offset, image_size=config.image_size)
        splits[name] = Split(name, np.stack([s.image for s in scenes]), [s.captions for s in scenes], scenes)
    return splits
