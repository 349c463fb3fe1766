"""Caption datasets as they come from their publishers, read into one shape.

Every reader returns a list of `Example(image, captions, split)`: one per image, with all
of that image's captions, so splits are by image and never by caption. Split names are
"train", "val" and "test".

    read_dataset("flickr8k", "data/flickr8k")   # official layout or the Kaggle variant
    read_dataset("karpathy", "data/coco")       # dataset_{flickr8k,flickr30k,coco}.json
    read_dataset("coco", "data/coco")           # annotations/captions_{train,val}2014.json
    read_dataset("csv", "my_photos/captions.csv")
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

logger = logging.getLogger("captioner")

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "restval": "train", "val": "val", "dev": "val", "validation": "val", "test": "test"}
MISSING_NAMES_SHOWN = 5


@dataclasses.dataclass
class Example:
    image: Path
    captions: list[str]
    split: str


class ReaderError(ValueError):
    """A caption file that cannot be read; the message names the file (and line)."""


def normalise_split(name: str, where: str) -> str:
    split = SPLIT_ALIASES.get(name.strip().lower())
    if split is None:
        raise ReaderError(f"{where}: unknown split {name!r} (use train, val or test)")
    return split


def keep_existing_images(examples: list[Example], source) -> list[Example]:
    """Drop examples whose image file is missing, with one summary line, so a partial download still trains."""
    present = [e for e in examples if e.image.is_file()]
    missing = [e for e in examples if not e.image.is_file()]
    if missing:
        names = ", ".join(e.image.name for e in missing[:MISSING_NAMES_SHOWN])
        more = ", ..." if len(missing) > MISSING_NAMES_SHOWN else ""
        logger.warning(
            "%s: %d of %d listed images are missing on disk and are skipped (%s%s)",
            source, len(missing), len(examples), names, more,
        )
    return present


def read_dataset(name: str, data_dir) -> list[Example]:
    """Examples of dataset `name` found under `data_dir` (a file, for csv)."""
    from captioner.data.readers import coco, csv_captions, flickr8k, karpathy

    readers = {
        "flickr8k": flickr8k.read,
        "karpathy": karpathy.read,
        "flickr30k": karpathy.read,
        "coco": coco.read,
        "csv": csv_captions.read,
    }
    if name not in readers:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(readers)}")
    if data_dir is None:
        raise ValueError(f"--data-dir is needed for dataset {name}")
    if not os.path.exists(data_dir):
        raise ReaderError(f"{data_dir}: no such file or directory")
    examples = readers[name](Path(data_dir))
    if not examples:
        raise ReaderError(f"{data_dir}: no usable images with captions found")
    return examples


DATASETS = ("flickr8k", "flickr30k", "karpathy", "coco", "csv")
