"""A disk cache of encoder features: extract once, reuse across runs, never load it all.

What is cached is the encoder's frozen part (`Encoder.encode_below`): the features themselves, or,
for a fine-tuned encoder, the activations where its trainable blocks begin.

Layout: CACHE/BACKBONE-LAYER-SIZE-WEIGHTS/shard-ID.npy (float16, (n, L, D), memory-mapped) with
shard-ID.json beside it listing the image keys of its rows; ID is a hash of those keys, so
several workers can fill one shared cache at once without picking the same name. An image's key is its
absolute path, size and modification time, so an edited or replaced photo is encoded again;
LAYER is the layer whose output is stored and WEIGHTS a hash of the frozen part's weights, so
an encoder cut elsewhere, fine-tuned from another block or randomly initialised never reads
features another one made (and a shard of the wrong shape is refused, naming the file).
Augmented copies (`view` > 0: `jitter_colours` drawn from the seed, the view number and the image's path)
are cached beside the originals under the image's key plus the view and seed.
Shards are written whole and atomically; the index file is written last, so a shard cut
short by a crash is never read. Only images missing from the cache are encoded.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import sys
import time
import weakref
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from captioner.data.images import ImageError, jitter_colours, load_image
from captioner.utils.atomic import atomic_path, atomic_write_text
from captioner.utils.cache import cache_root
from captioner.utils.graph import compile_function
from captioner.utils.litert import litert_function
from captioner.utils.progress import progress_bar

SHARD_SIZE = 4096  # images per shard: an interrupted extraction loses at most this many
BATCH = 32
DEFAULT_CACHE = cache_root() / "features"


# Images from which the encoder's frozen part runs with LiteRT: converting it takes 1 to 2 s, which LiteRT's
# kernels win back after about a hundred images (5x TensorFlow's speed on MobileNetV2; bench/RESULTS.md).
LITERT_FROM_IMAGES = 100
_converted = weakref.WeakKeyDictionary()  # encoder -> its frozen part as a LiteRTFunction, converted once


def compile_encoder(encoder, images: int = 0):
    """The encoder's frozen part as one function for any batch size: float32 images (B, S, S, 3) -> NumPy features.

    For `images` >= LITERT_FROM_IMAGES (or once converted for this encoder) it runs with LiteRT where
    ai-edge-litert is installed (the features differ from TensorFlow's by about 1e-5, below the float16 cache's
    rounding); otherwise one tf.function.
    """
    if _converted.get(encoder):
        return _converted[encoder]
    size = encoder.image_size
    function = compile_function(encoder.encode_below, [tf.TensorSpec([None, size, size, 3], tf.float32)])
    if encoder not in _converted and images >= LITERT_FROM_IMAGES:
        _converted[encoder] = litert_function(function)
    return _converted.get(encoder) or (lambda batch: function(batch).numpy())


def encode_in_memory(encoder, images: np.ndarray, description: str) -> np.ndarray:
    """What the cache would hold for images in memory (synthetic scenes), as float16: (N, L', D')."""
    encode = compile_encoder(encoder, len(images))
    progress = progress_bar(len(images), unit_name="image")
    print(f"Encoding {description}: {len(images)} images")
    chunks = []
    for start in range(0, len(images), BATCH):
        batch = images[start : start + BATCH]
        chunks.append(encode(batch.astype(np.float32)).astype(np.float16))
        progress.add(len(batch))
    return np.concatenate(chunks)


def weights_fingerprint(encoder) -> str:
    """A hash of the frozen part's weights (all the backbone's, unless it is fine-tuned)."""
    digest = hashlib.sha1()
    for weight in encoder.below.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:10]


def image_key(path, view: int = 0, seed: int = 0) -> str:
    """The cache's key of an image (view 0) or of its augmented copy number `view` drawn with `seed`."""
    path = Path(path).resolve()
    status = path.stat()
    key = f"{path}|{status.st_size}|{status.st_mtime_ns}"
    return key if view == 0 else f"{key}|jitter{view}-{seed}"


def augmented(image: np.ndarray, path, view: int, seed: int) -> np.ndarray:
    """Augmented copy number `view` of the image at `path`: the same every time for the same seed."""
    if view == 0:
        return image
    rng = np.random.default_rng([seed, view, zlib.crc32(str(Path(path).resolve()).encode())])
    return jitter_colours(image, rng)


def _prefetch(pool, load, batches, ahead: int = 4):
    """Decode the next few batches in threads while the current one is encoded; yields lists of images."""
    pending = []
    for batch in batches:
        pending.append([pool.submit(load, path) for path in batch])
        if len(pending) > ahead:
            yield [future.result() for future in pending.pop(0)]
    for futures in pending:
        yield [future.result() for future in futures]


class FeatureView:
    """Rows of several memory-mapped shards, indexed like one (N, L, D) array."""

    def __init__(self, shards: list[np.ndarray], shard_of: np.ndarray, row_of: np.ndarray, shape: tuple[int, int]):
        self.shards, self.shard_of, self.row_of = shards, shard_of, row_of
        self.shape = (len(shard_of), *shape)

    def __len__(self) -> int:
        return len(self.shard_of)

    def __getitem__(self, index) -> np.ndarray:
        index = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        out = np.empty((len(index), *self.shape[1:]), dtype=np.float16)
        shard_of = self.shard_of[index]
        for shard in np.unique(shard_of):
            where = shard_of == shard
            rows = self.row_of[index[where]]
            order = np.argsort(rows)  # sorted reads are kinder to the disk
            out[np.flatnonzero(where)[order]] = self.shards[shard][rows[order]]
        return out


class FeatureStore:
    def __init__(self, root, encoder):
        self.encoder = encoder
        name = f"{encoder.backbone_name}-{encoder.split_layer}-{encoder.image_size}-{weights_fingerprint(encoder)}"
        self.directory = Path(root) / name
        self.shards: list[np.ndarray] = []
        self.location: dict[str, tuple[int, int]] = {}  # key -> (shard, row)
        self._loaded: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Pick up shards written since (by another worker, say)."""
        for index_file in sorted(self.directory.glob("shard-*.json")):
            shard_file = index_file.with_suffix(".npy")
            if not shard_file.exists() or index_file.name in self._loaded:
                continue
            self._loaded.add(index_file.name)
            keys = json.loads(index_file.read_text())
            array = np.load(shard_file, mmap_mode="r")
            if array.shape[1:] != tuple(self.encoder.cached_shape):
                raise ValueError(f"{shard_file}: features of shape {array.shape[1:]}, but this encoder caches "
                                 f"{tuple(self.encoder.cached_shape)}; this directory belongs to another encoder "
                                 "(move it away, or point --feature-cache elsewhere)")
            if len(array) != len(keys):
                continue  # not ours, or damaged: encode those images again
            for row, key in enumerate(keys):
                self.location[key] = (len(self.shards), row)
            self.shards.append(array)

    def _write_shard(self, keys: list[str], features: np.ndarray) -> None:
        shard_file = self.directory / f"shard-{hashlib.sha1(json.dumps(keys).encode()).hexdigest()[:16]}.npy"
        with atomic_path(shard_file) as temporary:
            np.save(temporary, features)
        atomic_write_text(shard_file.with_suffix(".json"), json.dumps(keys))
        self._loaded.add(shard_file.with_suffix(".json").name)
        array = np.load(shard_file, mmap_mode="r")
        for row, key in enumerate(keys):
            self.location[key] = (len(self.shards), row)
        self.shards.append(array)

    def extract_missing(self, paths: list[Path], description: str = "images", worker: int = 0,
                        workers: int = 1, view: int = 0, seed: int = 0) -> set[Path]:
        """Encode every image of `paths` not yet cached; returns the paths that could not be read.
        view > 0: their augmented copy number `view` (`augmented`), drawn with `seed`.

        With several `workers` (sharing the cache directory), this one encodes only every
        `workers`-th missing image from its `worker` index on; the caller waits for the others
        and calls `refresh`.
        """
        missing, failed, keys = [], set(), {}
        for path in paths:
            try:
                keys[path] = image_key(path, view, seed)
            except OSError as error:
                print(f"error: {path}: {error.strerror or error}", file=sys.stderr)
                failed.add(path)
                continue
            if keys[path] not in self.location:
                missing.append(path)
        missing = list(dict.fromkeys(missing))[worker::workers]
        if not missing:
            print(f"Features of {len(paths) - len(failed)} {description} found in {self.directory}")
            return failed
        print(f"Encoding {len(missing)} {description} into {self.directory}")
        self.directory.mkdir(parents=True, exist_ok=True)
        size = self.encoder.image_size
        encode = compile_encoder(self.encoder, len(missing))
        progress = progress_bar(len(missing), unit_name="image")
        started = time.perf_counter()

        def load(path):
            try:
                return augmented(load_image(path, size), path, view, seed)
            except ImageError as error:
                return error

        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            for start in range(0, len(missing), SHARD_SIZE):
                shard_paths = missing[start : start + SHARD_SIZE]
                shard_keys, chunks = [], []
                batches = [shard_paths[i : i + BATCH] for i in range(0, len(shard_paths), BATCH)]
                for batch, loaded in zip(batches, _prefetch(pool, load, batches)):
                    good_paths, good_images = [], []
                    for path, image in zip(batch, loaded):
                        if isinstance(image, ImageError):
                            print(f"error: {image}", file=sys.stderr)
                            failed.add(path)
                        else:
                            good_paths.append(path)
                            good_images.append(image)
                    if good_images:
                        chunks.append(encode(np.stack(good_images).astype(np.float32)).astype(np.float16))
                        shard_keys.extend(keys[path] for path in good_paths)
                    progress.add(len(batch))
                if chunks:
                    self._write_shard(shard_keys, np.concatenate(chunks))
        seconds = time.perf_counter() - started
        print(f"Encoded {len(missing)} images in {seconds:.0f} s ({len(missing) / seconds:.0f} images/s)")
        return failed

    def has(self, path, view: int = 0, seed: int = 0) -> bool:
        try:
            return image_key(path, view, seed) in self.location
        except OSError:
            return False

    def view(self, paths: list[Path], view: int = 0, seed: int = 0) -> FeatureView:
        """The cached rows of `paths` (or of their augmented copy number `view`), as one array-like."""
        locations = [self.location[image_key(p, view, seed)] for p in paths]
        return FeatureView(
            self.shards,
            np.array([s for s, _ in locations], dtype=np.int64),
            np.array([r for _, r in locations], dtype=np.int64),
            tuple(self.encoder.cached_shape),
        )

    def size_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.directory.glob("shard-*"))
