"""Captioning uploads in a bounded pool of worker processes, each holding the models once.

Processes rather than threads: the beam search is a Python loop that holds the GIL, so two threads would
caption no faster than one on 2 cores. Each worker loads the NumPy copy of every served model when it
starts (`captioner.numpy_model`: no TensorFlow; packed weights decoded once into the user's cache) and then
captions one upload at a time. Nothing an upload says reaches the file system: the bytes are decoded in memory.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from captioner.data.images import open_image_bytes, squeezed
from captioner.model.caption import caption_json

# Uploads larger than this many pixels are refused before they are decoded (a 2 KB PNG can claim 100,000 x
# 100,000 pixels: a decompression bomb). 40 megapixels is more than any phone camera's photo.
MAX_UPLOAD_PIXELS = 40_000_000
MAX_BEAM = 10

_models: dict = {}  # in each worker: name -> NumpyCaptioner


def _load_models(paths: dict[str, str]) -> None:
    """The worker's initializer: every served model, once."""
    from captioner.numpy_model import load_numpy_captioner

    for name, path in paths.items():
        _models[name] = load_numpy_captioner(path)


def decode_upload(data: bytes, name: str, image_size: int) -> np.ndarray:
    """An uploaded file's bytes -> the encoder's input (S, S, 3) uint8, or ImageError saying what is wrong."""
    return squeezed(open_image_bytes(data, name, MAX_UPLOAD_PIXELS), image_size)


def caption_upload(model: str, data: bytes, name: str, beam_size: int) -> dict:
    """In a worker: one upload's caption as `predict.py --json` prints it (without a path), or ImageError."""
    captioner = _models[model]
    image = decode_upload(data, name, captioner.encoder.image_size)
    caption = captioner.caption(image[None], beam_size)[0]
    return {"name": name, "model": model, **caption_json(caption, captioner.grid)}


# Each worker computes on one thread: with BLAS's own threads, two workers on 2 cores would fight over them.
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def make_pool(paths: dict[str, str], workers: int) -> ProcessPoolExecutor:
    """`workers` processes, started fresh (spawn: no copy of the server's event loop or sockets), each with
    every model loaded and one thread of computation."""
    os.environ.update(ONE_THREAD)  # the spawned workers inherit it before they import NumPy
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_load_models,
                               initargs=(paths,))


def warm_up(pool: ProcessPoolExecutor, workers: int, model: str) -> None:
    """Start every worker and caption a blank image in each, so the first real upload is not the slow one."""
    blank = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(blank, format="PNG")
    futures = [pool.submit(caption_upload, model, blank.getvalue(), "warm-up.png", 1) for _ in range(workers)]
    for future in futures:
        future.result()
