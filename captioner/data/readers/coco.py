"""COCO captions as released (Chen et al. 2015): annotations/captions_{train,val}2014.json.

    {"images": [{"id": 1, "file_name": "COCO_train2014_...jpg"}, ...],
     "annotations": [{"image_id": 1, "caption": "A man ..."}, ...]}

train2014 is the training split; val2014 is split in half by image id into val and test
(even and odd ids), since the official test captions are not public. For the split the
papers use, read Karpathy's dataset_coco.json with `--dataset karpathy` instead.
"""

from __future__ import annotations

import collections
from pathlib import Path

from captioner.data.readers import Example, ReaderError, keep_existing_images
from captioner.data.readers.karpathy import load_json

FILES = {"train": "captions_train2014.json", "val": "captions_val2014.json"}


def find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / "annotations" / name):
        if candidate.is_file():
            return candidate
    return None


def read_file(path: Path, image_dir: Path, split_of) -> list[Example]:
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise ReaderError(f"{path}: expected an object with 'images' and 'annotations' lists")
    captions = collections.defaultdict(list)
    for index, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict) or "image_id" not in annotation or "caption" not in annotation:
            raise ReaderError(f"{path}: annotations[{index}] needs 'image_id' and 'caption'")
        if str(annotation["caption"]).strip():
            captions[annotation["image_id"]].append(str(annotation["caption"]).strip())
    examples = []
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise ReaderError(f"{path}: images[{index}] needs 'id' and 'file_name'")
        if captions.get(image["id"]):
            examples.append(Example(image_dir / image["file_name"], captions[image["id"]], split_of(image["id"])))
    return keep_existing_images(examples, path)


def read(directory: Path) -> list[Example]:
    train, val = find(directory, FILES["train"]), find(directory, FILES["val"])
    if train is None and val is None:
        raise ReaderError(f"{directory}: no {FILES['train']} or {FILES['val']} (also looked in annotations/)")
    examples = []
    if train is not None:
        examples += read_file(train, directory / "train2014", lambda image_id: "train")
    if val is not None:
        examples += read_file(val, directory / "val2014", lambda image_id: "val" if image_id % 2 == 0 else "test")
    return examples
