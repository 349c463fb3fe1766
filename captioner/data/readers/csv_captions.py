"""Your own photos: a CSV file `image,caption[,split]`, one caption per row.

Image paths are relative to the CSV file's folder (absolute paths work too). Rows of the
same image are gathered; an image's split must be the same on all its rows. Without a split
column, images are split 80/10/10 by a hash of their path, so adding photos later does not
move the old ones between splits.
"""

from __future__ import annotations

import collections
import csv
import hashlib
from pathlib import Path

from captioner.data.readers import Example, ReaderError, keep_existing_images, normalise_split
from captioner.data.readers.flickr8k import read_text

VAL_SHARE, TEST_SHARE = 0.1, 0.1


def hashed_split(name: str) -> str:
    value = int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if value < TEST_SHARE else "val" if value < TEST_SHARE + VAL_SHARE else "train"


def read(path: Path) -> list[Example]:
    if path.is_dir():
        candidates = sorted(path.glob("*.csv"))
        if len(candidates) != 1:
            raise ReaderError(f"{path}: expected one .csv file, found {len(candidates)}; pass the file as --data-dir")
        path = candidates[0]
    rows = csv.reader(read_text(path))
    header = [h.strip().lower() for h in next(rows, [])]
    if header[:2] != ["image", "caption"] or header[2:] not in ([], ["split"]):
        raise ReaderError(f"{path}:1: expected the header 'image,caption' or 'image,caption,split', got {header}")
    has_split = len(header) == 3
    captions, splits = collections.defaultdict(list), {}
    for number, row in enumerate(rows, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ReaderError(f"{path}:{number}: expected {len(header)} fields, got {len(row)}")
        image, caption = row[0].strip(), row[1].strip()
        if not image:
            raise ReaderError(f"{path}:{number}: empty image name")
        if not caption:
            raise ReaderError(f"{path}:{number}: empty caption for {image}")
        split = normalise_split(row[2], f"{path}:{number}") if has_split else hashed_split(image)
        if splits.setdefault(image, split) != split:
            raise ReaderError(f"{path}:{number}: {image} is in split {split} here but {splits[image]} before")
        captions[image].append(caption)
    examples = [Example(path.parent / image, caps, splits[image]) for image, caps in captions.items()]
    return keep_existing_images(examples, path)
