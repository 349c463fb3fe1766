"""Greedy and beam search in NumPy: `captioner.model.search` step for step, so both find the same captions.

A tie goes to the lower index, as in `tf.math.top_k` and `tf.argmax`; scores stay float32 throughout.
"""

from __future__ import annotations

import numpy as np

from captioner.model.search_constants import NEGATIVE_INFINITY, PAD_ID, START_ID, UNKNOWN_ID
from captioner.numpy_model.decoder import log_softmax

NEVER = np.float32(NEGATIVE_INFINITY)


def _word_penalty(vocabulary_size: int, word_ids) -> np.ndarray:
    """(V,) zeros, NEGATIVE_INFINITY at `word_ids`: added to logits to forbid those words."""
    penalty = np.zeros(vocabulary_size, np.float32)
    penalty[list(word_ids)] = NEVER
    return penalty


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values of each row, largest first; ties: lower index first.

    Beam search asks for the 2K best of K x V candidates: sorting the whole row cost 0.5 ms a step, finding the
    k-th value first (`np.partition`) and sorting only what reaches it about a twentieth of that.
    """
    if values.shape[-1] <= 4 * k:
        return np.argsort(-values, axis=-1, kind="stable")[:, :k]
    kth_largest = -np.partition(-values, k - 1, axis=-1)[:, k - 1]
    rows = []
    for row, threshold in zip(values, kth_largest):
        reaching = np.flatnonzero(row >= threshold)  # at least k, in index order; more where the k-th value ties
        if len(reaching) < k:  # NaN compares false: sort the whole row, as before
            reaching = np.arange(len(row))
        rows.append(reaching[np.argsort(-row[reaching], kind="stable")[:k]])
    return np.stack(rows)


def _pick(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """array (B, N, ...), index (B, M) -> (B, M, ...)."""
    return array[np.arange(len(array))[:, None], index]


def _each(function, tensors):
    """function applied to a tensor or to each tensor of a list (an ensemble's members)."""
    return [function(t) for t in tensors] if isinstance(tensors, list) else function(tensors)


def greedy_search(decoder, features, start_id: int, end_id: int, max_length: int, min_length: int = 1):
    """features (B, L, D) -> word ids (B, max_length + 1), attention weights (B, max_length + 1, L)."""
    steps, batch, locations = max_length + 1, features.shape[0], features.shape[1]
    features, keys, state = decoder.prepare(features)
    words = np.full(batch, start_id)
    never = _word_penalty(decoder.vocabulary_size, [PAD_ID, START_ID, UNKNOWN_ID])
    never_or_end = _word_penalty(decoder.vocabulary_size, [PAD_ID, START_ID, UNKNOWN_ID, end_id])
    all_words = np.zeros((batch, steps), np.int32)
    all_weights = np.zeros((batch, steps, locations), np.float32)
    for step in range(steps):
        logits, state, attention_weights = decoder.step(words, state, features, keys)
        logits = logits + (never_or_end if step < min_length else never)
        words = logits.argmax(axis=-1)
        if step == max_length:  # out of room: every caption ends here
            words[:] = end_id
        all_words[:, step], all_weights[:, step] = words, attention_weights
    return all_words, all_weights


def repeated_ngram_penalty(words: np.ndarray, step: int, n: int, vocabulary_size: int) -> np.ndarray:
    """NEVER for each word that would end an n-gram already in a caption, 0 for the others: (N, V).
    words (N, S): the words so far in columns 0 .. step - 1 (`captioner.model.search.repeated_ngram_penalty`)."""
    penalty = np.zeros((len(words), vocabulary_size), np.float32)
    last = words[:, max(step - n + 1, 0) : step]  # the caption's last n - 1 words
    for start in range(step - n + 1):  # each complete earlier n-gram: words[start : start + n]
        rows = np.flatnonzero(np.all(words[:, start : start + n - 1] == last, axis=1))
        penalty[rows, words[rows, start + n - 1]] = NEVER
    return penalty


def beam_search(decoder, features, start_id: int, end_id: int, max_length: int, beam_size: int = 3,
                min_length: int = 1, length_penalty: float = 0.0, no_repeat_ngram: int = 0):
    """The `beam_size` best finished captions per image, best first: word ids (B, K, T), attention
    (B, K, T, L), normalised scores (B, K). The algorithm is `captioner.model.search.beam_search`'s."""
    batch, locations = features.shape[0], features.shape[1]
    beams, steps = beam_size, max_length + 1
    features, keys, state = decoder.prepare(features)
    vocabulary_size = decoder.vocabulary_size

    def tile(tensor):  # (B, ...) -> (B * K, ...): beams of one image sit next to each other
        return np.repeat(tensor, beams, axis=0)

    features, keys, state = _each(tile, features), _each(tile, keys), [tile(s) for s in state]
    alive_scores = np.tile(np.array([[0.0] + [NEVER] * (beams - 1)], np.float32), (batch, 1))  # only beam 0 lives
    alive_words = np.zeros((batch, beams, steps), np.int32)
    alive_weights = np.zeros((batch, beams, steps, locations), np.float32)
    finished_scores = np.full((batch, beams), NEVER, np.float32)
    finished_words, finished_weights = alive_words.copy(), alive_weights.copy()
    words = np.full(batch * beams, start_id)
    never = _word_penalty(vocabulary_size, [PAD_ID, START_ID, UNKNOWN_ID])
    never_or_end = _word_penalty(vocabulary_size, [PAD_ID, START_ID, UNKNOWN_ID, end_id])
    only_end = np.full(vocabulary_size, NEVER, np.float32)
    only_end[end_id] = 0.0
    length_normalisers = np.array([float(step + 1) ** length_penalty for step in range(steps)], np.float32)
    among_best = np.arange(2 * beams)[None, :] < beams

    for step in range(steps):
        logits, state, attention_weights = decoder.step(words, state, features, keys)
        log_probs = log_softmax(logits).reshape(batch, beams, vocabulary_size)
        log_probs += never_or_end if step < min_length else never
        if step == max_length:  # out of room: every beam ends here, paying what `<end>` costs
            log_probs += only_end
        if no_repeat_ngram:
            log_probs += repeated_ngram_penalty(alive_words.reshape(batch * beams, steps), step, no_repeat_ngram,
                                                vocabulary_size).reshape(batch, beams, vocabulary_size)

        # Every beam times every word: the 2K best candidates per image.
        candidates = (alive_scores[..., None] + log_probs).reshape(batch, beams * vocabulary_size)
        flat_indices = _top_k(candidates, 2 * beams)
        scores = np.take_along_axis(candidates, flat_indices, axis=1)
        parent, next_words = flat_indices // vocabulary_size, flat_indices % vocabulary_size
        ends = next_words == end_id

        history = _pick(alive_words, parent)
        history[:, :, step] = next_words
        weight_history = _pick(alive_weights, parent)
        weight_history[:, :, step] = _pick(attention_weights.reshape(batch, beams, locations), parent)

        # Finished: candidates among the K best that end, merged into the pool of the K best.
        new_finished = np.where(ends & among_best, scores / length_normalisers[step], NEVER).astype(np.float32)
        pool_scores = np.concatenate([finished_scores, new_finished], axis=1)
        keep = _top_k(pool_scores, beams)
        finished_scores = np.take_along_axis(pool_scores, keep, axis=1)
        finished_words = _pick(np.concatenate([finished_words, history], axis=1), keep)
        finished_weights = _pick(np.concatenate([finished_weights, weight_history], axis=1), keep)

        # Alive: the K best candidates that do not end.
        going_on = np.where(ends, NEVER, scores).astype(np.float32)
        keep = _top_k(going_on, beams)
        alive_scores = np.take_along_axis(going_on, keep, axis=1)
        alive_words, alive_weights = _pick(history, keep), _pick(weight_history, keep)
        flat_parent = (_pick(parent, keep) + np.arange(batch)[:, None] * beams).reshape(-1)
        state = [s[flat_parent] for s in state]
        words = _pick(next_words, keep).reshape(-1)
    return finished_words, finished_weights, finished_scores
