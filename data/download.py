"""Download and unpack a caption dataset into the layout `train.py --data-dir` expects.

    python data/download.py flickr8k --dest data/flickr8k
    python data/download.py karpathy-splits --dest data/coco      # dataset_{flickr8k,flickr30k,coco}.json
    python data/download.py coco --dest data/coco                 # 19 GB of images, 2014 release
    python data/download.py flickr30k-entities --dest data/flickr30k_entities   # phrase boxes (grounding)

Archives go through `keras.utils.get_file`, so they are cached (in $KERAS_HOME/datasets) and a
second run downloads nothing. Flickr30k needs a signed form: see data/flickr30k/README.md.
Read each dataset's README for its licence before you use it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

ARCHIVES = {
    "flickr8k": [
        ("Flickr8k_Dataset.zip", "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip"),
        ("Flickr8k_text.zip", "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip"),
    ],
    "karpathy-splits": [
        ("caption_datasets.zip", "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"),
    ],
    # Flickr30k Entities' phrase-to-box annotations: the zip unpacks to Annotations/ and Sentences/ directly
    "flickr30k-entities": [
        ("flickr30k_entities_annotations.zip",
         "https://github.com/BryanPlummer/flickr30k_entities/raw/master/annotations.zip"),
    ],
    "coco": [
        ("annotations_trainval2014.zip", "http://images.cocodataset.org/annotations/annotations_trainval2014.zip"),
        ("train2014.zip", "http://images.cocodataset.org/zips/train2014.zip"),
        ("val2014.zip", "http://images.cocodataset.org/zips/val2014.zip"),
    ],
}
JUNK = ("__MACOSX",)


def unpack(archive: Path, destination: Path) -> None:
    """Extract a zip into `destination`, skipping macOS metadata, refusing paths that leave it."""
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            if member.filename.startswith(JUNK):
                continue
            target = (destination / member.filename).resolve()
            if root not in target.parents and target != root:
                raise ValueError(f"{archive}: member {member.filename!r} would be written outside {destination}")
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)


def download(name: str, destination: Path, archives=None, cache_dir=None) -> Path:
    """Fetch (or reuse from the Keras cache, `cache_dir` or $KERAS_HOME) and unpack each archive of `name`."""
    import keras

    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)  # else Keras falls back to /tmp/.keras
    for filename, url in (archives or ARCHIVES)[name]:
        archive = Path(keras.utils.get_file(filename, origin=url, cache_dir=cache_dir, cache_subdir="datasets"))
        print(f"unpacking {archive.name} into {destination}")
        unpack(archive, destination)
    return destination


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(ARCHIVES))
    parser.add_argument("--dest", required=True, help="folder to unpack into (then pass it as --data-dir)")
    args = parser.parse_args(argv)
    try:
        download(args.dataset, Path(args.dest))
    except Exception as error:  # a failed download: one line, not a traceback
        print(f"error: {args.dataset}: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
