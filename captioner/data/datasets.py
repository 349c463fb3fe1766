"""Datasets as the trainer sees them: per split, images and their reference captions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from captioner.data import synthetic
from captioner.data.images import load_image
from captioner.data.readers import DATASETS as FILE_DATASETS
from captioner.data.readers import SPLITS, read_dataset

DATASETS = ("synthetic",) + FILE_DATASETS


@dataclasses.dataclass
class Split:
    name: str
    captions: list[list[str]]  # reference captions of each image
    images: np.ndarray | None = None  # (N, S, S, 3) uint8, for data made in memory
    paths: list[Path] | None = None  # image files, for data on disk
    scenes: list | None = None  # synthetic ground truth, when there is one

    def __len__(self) -> int:
        return len(self.captions)

    def image(self, index: int, size: int) -> np.ndarray:
        return self.images[index] if self.images is not None else load_image(self.paths[index], size)

    def without(self, paths: set) -> "Split":
        keep = [i for i, path in enumerate(self.paths) if path not in paths]
        return Split(self.name, [self.captions[i] for i in keep], paths=[self.paths[i] for i in keep])


def synthetic_splits(config) -> dict[str, Split]:
    sizes = {
        "train": config.synthetic_train_scenes,
        "val": config.synthetic_val_scenes,
        "test": config.synthetic_test_scenes,
    }
    splits = {}
    for offset, (name, count) in enumerate(sizes.items()):
        # Each split has its own seed, so held-out scenes are never training scenes.
        scenes = synthetic.make_scenes(count, seed=config.seed * 1000 + offset, image_size=config.image_size)
        splits[name] = Split(name, [s.captions for s in scenes], images=np.stack([s.image for s in scenes]), scenes=scenes)
    return splits


def file_splits(config) -> dict[str, Split]:
    examples = read_dataset(config.dataset, config.data_dir)
    splits = {}
    for name in SPLITS:
        chosen = [e for e in examples if e.split == name]
        if name == "train" and config.max_train_images:
            chosen = chosen[: config.max_train_images]
        splits[name] = Split(name, [e.captions for e in chosen], paths=[e.image for e in chosen])
    for name in ("train", "val"):
        if not splits[name]:
            raise ValueError(f"{config.data_dir}: the {name} split has no images")
    return splits


def load_splits(config) -> dict[str, Split]:
    """train, val and test splits of `config.dataset` (test may be empty)."""
    if config.dataset == "synthetic":
        return synthetic_splits(config)
    if config.dataset in FILE_DATASETS:
        return file_splits(config)
    raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}")
