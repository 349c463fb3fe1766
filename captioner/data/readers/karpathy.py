"""Karpathy's split files (`dataset_flickr8k.json`, `dataset_flickr30k.json`, `dataset_coco.json`).

    {"images": [{"filepath": "val2014", "filename": "x.jpg", "split": "train|restval|val|test",
                 "sentences": [{"raw": "A dog ...", "tokens": [...]}, ...]}, ...]}

"restval" (COCO) counts as training data, as in the papers that use this split. Images are
looked up under the JSON's folder (and `filepath`, when given) and the usual image folders.
"""

from __future__ import annotations

import json
from pathlib import Path

from captioner.data.readers import Example, ReaderError, keep_existing_images, normalise_split

FILE_NAMES = ("dataset_flickr8k.json", "dataset_flickr30k.json", "dataset_coco.json")
IMAGE_DIRS = ("", "images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images", "flickr30k_images")


def find_json(path: Path) -> Path:
    if path.is_file():
        return path
    found = [path / name for name in FILE_NAMES if (path / name).is_file()]
    if not found:
        raise ReaderError(f"{path}: no Karpathy split file ({', '.join(FILE_NAMES)})")
    if len(found) > 1:
        raise ReaderError(f"{path}: several split files ({', '.join(f.name for f in found)}); pass one as --data-dir")
    return found[0]


def load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise ReaderError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise ReaderError(f"{path}: not UTF-8 ({error.reason})") from None


def image_root(directory: Path, entries: list[dict]) -> Path:
    """The folder under which the first listed images exist (the JSON's own folder if none)."""
    sample = entries[:20]
    for sub in IMAGE_DIRS:
        root = directory / sub
        if any((root / e.get("filepath", "") / e["filename"]).is_file() for e in sample):
            return root
    return directory


def read(path: Path) -> list[Example]:
    source = find_json(path)
    data = load_json(source)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ReaderError(f"{source}: expected an object with an 'images' list")
    entries = data["images"]
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "filename" not in entry or "sentences" not in entry or "split" not in entry:
            raise ReaderError(f"{source}: images[{index}] needs 'filename', 'split' and 'sentences'")
    root = image_root(source.parent, entries)
    examples = []
    for index, entry in enumerate(entries):
        where = f"{source}: images[{index}]"
        captions = []
        for sentence in entry["sentences"]:
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if raw is None and isinstance(sentence, dict) and sentence.get("tokens"):
                raw = " ".join(sentence["tokens"])
            if raw and raw.strip():
                captions.append(raw.strip())
        if not captions:
            raise ReaderError(f"{where}: no captions for {entry['filename']}")
        image = root / entry.get("filepath", "") / entry["filename"]
        examples.append(Example(image, captions, normalise_split(str(entry["split"]), where)))
    return keep_existing_images(examples, source)
