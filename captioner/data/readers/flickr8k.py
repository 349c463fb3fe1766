"""Flickr8k (Hodosh, Young and Hockenmaier 2013), as distributed and as the Kaggle variant.

Official layout:
    Flicker8k_Dataset/*.jpg            (sic: "Flicker")
    Flickr8k.token.txt                 name.jpg#N<TAB>caption, five per image
    Flickr_8k.{train,dev,test}Images.txt   one image name per line
Kaggle layout:
    Images/*.jpg
    captions.txt                       CSV with header "image,caption"
The Kaggle variant has no split files; if the official ones sit beside it they are used,
otherwise images are split 6000/1000/rest in sorted-name order after a fixed shuffle.
"""

from __future__ import annotations

import collections
import csv
import random
from pathlib import Path

from captioner.data.readers import MISSING_NAMES_SHOWN, Example, ReaderError, keep_existing_images, logger

TOKEN_FILE = "Flickr8k.token.txt"
IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images")
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}
KAGGLE_CAPTIONS = "captions.txt"
KAGGLE_SPLIT_SIZES = (6000, 1000)  # train, val; the rest is test, as in the official split
SPLIT_SEED = 8091


def read_text(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise ReaderError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def read_token_file(path: Path) -> dict[str, list[str]]:
    """name.jpg -> captions, from `name.jpg#N<TAB>caption` lines."""
    captions = collections.defaultdict(list)
    seen, duplicates = set(), []
    for number, line in enumerate(read_text(path), start=1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        name, hash_sign, index = key.partition("#")
        if not tab or not hash_sign or not index.strip().isdigit():
            raise ReaderError(f"{path}:{number}: expected 'name.jpg#N<TAB>caption', got {line[:60]!r}")
        if not caption.strip():
            raise ReaderError(f"{path}:{number}: empty caption for {name}")
        if (name.strip(), int(index)) in seen:
            duplicates.append(f"{key.strip()} (line {number})")
            continue
        seen.add((name.strip(), int(index)))
        captions[name.strip()].append(caption.strip())
    if duplicates:
        logger.warning("%s: %d duplicate keys skipped, the first caption of each kept (%s%s)", path,
                       len(duplicates), ", ".join(duplicates[:MISSING_NAMES_SHOWN]),
                       ", ..." if len(duplicates) > MISSING_NAMES_SHOWN else "")
    return dict(captions)


def read_split_files(directory: Path) -> dict[str, str] | None:
    """name.jpg -> split, or None when the split files are not there."""
    if not all((directory / f).is_file() for f in SPLIT_FILES.values()):
        return None
    splits = {}
    for split, filename in SPLIT_FILES.items():
        for number, line in enumerate(read_text(directory / filename), start=1):
            name = line.strip()
            if not name:
                continue
            if name in splits and splits[name] != split:
                raise ReaderError(f"{directory / filename}:{number}: {name} is also in the {splits[name]} split")
            splits[name] = split
    return splits


def read_kaggle_captions(path: Path) -> dict[str, list[str]]:
    captions = collections.defaultdict(list)
    rows = csv.reader(read_text(path))
    header = next(rows, None)
    if header is None or [h.strip().lower() for h in header[:2]] != ["image", "caption"]:
        raise ReaderError(f"{path}:1: expected the header 'image,caption', got {header}")
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip():
            raise ReaderError(f"{path}:{number}: expected 'image,caption', got {len(row)} fields")
        if not row[1].strip():
            raise ReaderError(f"{path}:{number}: empty caption for {row[0]}")
        captions[row[0].strip()].append(row[1].strip())
    return dict(captions)


def fallback_splits(names: list[str]) -> dict[str, str]:
    order = sorted(names)
    random.Random(SPLIT_SEED).shuffle(order)
    train, val = KAGGLE_SPLIT_SIZES
    return {name: "train" if i < train else "val" if i < train + val else "test" for i, name in enumerate(order)}


def read(directory: Path) -> list[Example]:
    if (directory / TOKEN_FILE).is_file():
        source = directory / TOKEN_FILE
        captions = read_token_file(source)
    elif (directory / KAGGLE_CAPTIONS).is_file():
        source = directory / KAGGLE_CAPTIONS
        captions = read_kaggle_captions(source)
    else:
        raise ReaderError(f"{directory}: neither {TOKEN_FILE} (official Flickr8k) nor {KAGGLE_CAPTIONS} (Kaggle) found")
    image_dir = next((directory / d for d in IMAGE_DIRS if (directory / d).is_dir()), None)
    if image_dir is None:
        raise ReaderError(f"{directory}: no image folder ({' or '.join(IMAGE_DIRS)})")
    splits = read_split_files(directory) or fallback_splits(list(captions))
    # Images in no split (91 in the official release) are left out, as everyone does.
    examples = [Example(image_dir / name, caps, splits[name]) for name, caps in captions.items() if name in splits]
    return keep_existing_images(examples, source)
