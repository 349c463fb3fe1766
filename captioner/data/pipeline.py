"""Training batches: every (image, caption) pair once per epoch, similar lengths together.

Pairs are shuffled, then sorted by caption length inside windows of `WINDOW_BATCHES`
batches, cut into batches, and the batches shuffled again: each batch is padded only to
its own longest caption (rounded up to a multiple of `LENGTH_STEP`, so the decoder is
compiled for a handful of lengths rather than every one). The order depends only on the
seed and the epoch, so a resumed run sees the same batches. A background thread gathers
the features (from memory or the memory-mapped cache) while the step before them runs.
"""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Iterator

import numpy as np
import tensorflow as tf

WINDOW_BATCHES = 50
LENGTH_STEP = 4
PREFETCH_BATCHES = 2  # batches gathered ahead of the training step


def padded_length(longest: int) -> int:
    return -(-longest // LENGTH_STEP) * LENGTH_STEP


def fitting_width(token_ids: np.ndarray) -> int:
    """The padded width (ids) that holds every caption of `token_ids` (B, T), at most T."""
    return min(padded_length(int((token_ids != 0).sum(axis=1).max())), token_ids.shape[1])


def epoch_batches(token_ids: np.ndarray, batch_size: int, seed: int, epoch: int,
                  by_length: bool = True) -> list[np.ndarray]:
    """Indices of the pairs in each batch of one epoch.

    by_length=False keeps batches random (best padded to one width for them all: `make_dataset(width=...)`):
    when length says a lot about the content, as in the synthetic scenes, where it gives away
    the number of shapes, batches of one length are too alike and training converges slower.
    """
    rng = np.random.default_rng([seed, epoch])
    lengths = (token_ids != 0).sum(axis=1)
    order = rng.permutation(len(token_ids))
    batches = []
    window = batch_size * (WINDOW_BATCHES if by_length else 1)
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def sequential_batches(count: int, batch_size: int) -> list[np.ndarray]:
    return [np.arange(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def make_dataset(features, image_index: np.ndarray, token_ids: np.ndarray, batches: list[np.ndarray],
                 target_maps: np.ndarray | None = None, teacher_features=None,
                 width: int | None = None) -> Iterator[tuple[np.ndarray, ...]]:
    """(features (B, L, D) float32, token ids (B, T) int32) per batch, T padded per batch (or to `width` ids for
    every batch: `fitting_width` of all the ids), each gathered in a background thread while the step before it runs.

    target_maps (P, max_length + 1, L), aligned with the pairs (attention supervision): each element
    then also holds the batch's maps (B, T - 1, L) float32, one per attention step, cut like the ids.
    teacher_features (N, L', D'), aligned with `features` (distillation): each element then ends with
    the teacher's features of the batch's images. Without either the elements are the pairs alone, as ever.

    A Python generator, not `tf.data.Dataset.from_generator`: destroying that dataset's iterator at the end of an
    epoch stalled training for up to 18 s, in one epoch of two on the synthetic demo (docs/synthetic.md).
    """

    def element(batch):
        ids = token_ids[batch]
        longest = width or fitting_width(ids)
        gathered = (features[image_index[batch]].astype(np.float32), ids[:, :longest])
        if target_maps is not None:
            gathered += (target_maps[batch, : longest - 1].astype(np.float32),)
        if teacher_features is not None:
            gathered += (teacher_features[image_index[batch]].astype(np.float32),)
        return gathered

    return prefetched(element, batches)


def prefetched(make, items: list, ahead: int = PREFETCH_BATCHES) -> Iterator:
    """make(item) for each item in order, computed in a background thread `ahead` items before it is needed."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = collections.deque(pool.submit(make, item) for item in items[:ahead])
        for index in range(len(items)):
            ready = pending.popleft().result()
            if index + ahead < len(items):
                pending.append(pool.submit(make, items[index + ahead]))
            yield ready


def replica_bounds(batch_size: int, replicas: int) -> list[tuple[int, int]]:
    """Rows [start, stop) of a global batch that each replica takes: contiguous, sizes differ by at most one
    (the first replicas take the extra rows)."""
    edges = [-(-batch_size * r // replicas) for r in range(replicas + 1)]
    return list(zip(edges[:-1], edges[1:]))


def make_replica_dataset(features, image_index: np.ndarray, token_ids: np.ndarray, batches: list[np.ndarray],
                         replicas: int, local_replicas: list[int], target_maps: np.ndarray | None = None) -> tf.data.Dataset:
    """Like `make_dataset`, but each element holds only the slices of each global batch for `local_replicas`.

    Distributed training: a process gathers the features of its own replicas' rows only. Every
    slice is padded to the longest caption of the whole global batch, so all replicas (on every
    worker) run the step compiled for the same length. With `target_maps`, a third tuple holds
    each slice's maps.
    """
    locations, size = features.shape[1:]

    def generate():
        for batch in batches:
            longest = fitting_width(token_ids[batch])
            bounds = replica_bounds(len(batch), replicas)
            parts = [batch[slice(*bounds[replica])] for replica in local_replicas]
            # A replica left without rows (a batch smaller than the replica count) gets one all-padding
            # row: it adds nothing to the loss, and no replica runs on an empty batch.
            element = (tuple(features[image_index[rows]].astype(np.float32) if len(rows) else
                             np.zeros((1, locations, size), np.float32) for rows in parts),
                       tuple(token_ids[rows, :longest] if len(rows) else np.zeros((1, longest), np.int32) for rows in parts))
            if target_maps is not None:  # an unsupervised (all-zero) map for a padding row
                element += (tuple(target_maps[rows, : longest - 1].astype(np.float32) if len(rows) else
                                  np.zeros((1, longest - 1, target_maps.shape[2]), np.float32) for rows in parts),)
            yield element

    signature = (
        tuple(tf.TensorSpec([None, locations, size], tf.float32) for _ in local_replicas),
        tuple(tf.TensorSpec([None, None], tf.int32) for _ in local_replicas),
    )
    if target_maps is not None:
        signature += (tuple(tf.TensorSpec([None, None, target_maps.shape[2]], tf.float32) for _ in local_replicas),)
    return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)
