"""Free-running decoding: greedy and beam search, batched over images.

Both return, for every image, the chosen word ids and the attention weights that
were used to produce each word, so overlays show exactly what the model looked at.

Greedy and beam search loop over the words with `tf.while_loop`: compiled, the graph holds one
decoder step whatever the caption length, so the first call traces and optimises one step instead
of 21 (for the shipped ensemble's beam search, 2 s instead of 16 on our 2-core machine). Most
command-line runs caption one photo and pay that once (bench/RESULTS.md, "Cold start"). Run
eagerly, the same loop is a plain Python loop, step by step.
"""

from __future__ import annotations

import tensorflow as tf

from captioner.model.search_constants import NEGATIVE_INFINITY, PAD_ID, START_ID, UNKNOWN_ID


def _last_axis(tensor) -> tf.Tensor:
    """tensor[..., None], written with expand_dims: LiteRT's strided slice has no new-axis form (`captioner export`)."""
    return tf.expand_dims(tensor, -1)


def _word_penalty(vocabulary_size: int, word_ids) -> tf.Tensor:
    """(V,) zeros, with NEGATIVE_INFINITY at `word_ids`: added to logits to forbid those words."""
    forbidden = tf.reduce_sum(tf.one_hot(word_ids, vocabulary_size), axis=0)
    return forbidden * NEGATIVE_INFINITY


def _loop_over_steps(step_once, loop_vars: list, steps: int) -> list:
    """loop_vars after `step_once(step, *loop_vars) -> step + 1, *loop_vars` for step = 0 .. steps - 1.

    One `tf.while_loop`: in a graph, a single copy of the step (see the module docstring).
    """
    return tf.while_loop(lambda step, *_: step < steps, step_once, (tf.constant(0), *loop_vars),
                         maximum_iterations=steps)[1:]


def greedy_search(decoder, features, start_id: int, end_id: int, max_length: int, min_length: int = 1):
    """features (B, L, D) -> word ids (B, max_length + 1), attention weights (B, max_length + 1, L).

    Every sequence gets max_length + 1 steps (room for max_length words and `<end>`);
    callers cut each one at its first `<end>`.
    """
    steps = max_length + 1
    features, keys, state = decoder.prepare(features)
    batch, locations = tf.shape(features)[0], tf.shape(features)[1]
    words = tf.fill([batch], start_id)
    never = _word_penalty(decoder.vocabulary_size, [PAD_ID, START_ID, UNKNOWN_ID])
    never_or_end = _word_penalty(decoder.vocabulary_size, [PAD_ID, START_ID, UNKNOWN_ID, end_id])
    columns = tf.range(steps)

    def step_once(step, words, state, all_words, all_weights):
        logits, state, attention_weights = decoder.step(words, state, features, keys)
        logits += tf.where(step < min_length, never_or_end, never)
        words = tf.argmax(logits, axis=-1, output_type=tf.int32)
        words = tf.where(step == max_length, end_id, words)  # out of room: every caption ends here
        is_step = columns == step  # (T,): the column this step fills
        all_words = tf.where(is_step, _last_axis(words), all_words)
        all_weights = tf.where(_last_axis(is_step), tf.expand_dims(attention_weights, 1), all_weights)
        return step + 1, words, state, all_words, all_weights

    all_words = tf.zeros([batch, steps], tf.int32)  # filled in column by column
    all_weights = tf.zeros([batch, steps, locations])
    *_, all_words, all_weights = _loop_over_steps(step_once, [words, state, all_words, all_weights], steps)
    return all_words, all_weights


def sample_search(decoder, features, start_id: int, end_id: int, max_length: int, seed, min_length: int = 1):
    """Captions drawn word by word from the model's own distribution: features (B, L, D) -> word ids (B, T).

    Self-critical training's samples. `seed` (2,) int32 makes the draw repeatable; each step folds
    in its index so the steps draw differently.
    """
    features, keys, state = decoder.prepare(features)
    words = tf.fill([tf.shape(features)[0]], start_id)
    never = _word_penalty(decoder.vocabulary_size, [PAD_ID, START_ID, UNKNOWN_ID])
    never_or_end = _word_penalty(decoder.vocabulary_size, [PAD_ID, START_ID, UNKNOWN_ID, end_id])
    all_words = []
    for step in range(max_length + 1):
        logits, state, _ = decoder.step(words, state, features, keys)
        logits += never_or_end if step < min_length else never
        step_seed = tf.random.experimental.stateless_fold_in(seed, step)
        words = tf.cast(tf.random.stateless_categorical(logits, 1, seed=step_seed)[:, 0], tf.int32)
        if step == max_length:
            words = tf.fill(tf.shape(words), end_id)
        all_words.append(words)
    return tf.stack(all_words, axis=1)


def repeated_ngram_penalty(words, step, n: int, vocabulary_size: int):
    """NEGATIVE_INFINITY for each word that would end an n-gram already in a beam, 0 for the others: (B, K, V).

    words (B, K, S): each beam's words so far in columns 0 .. step - 1. An earlier n-gram starting at column i
    bans its last word, words[i + n - 1], wherever its first n - 1 words equal the beam's last n - 1.
    """
    columns = words.shape[2]
    starts = tf.range(max(columns - n + 1, 0))  # every column an n-gram can start at (P of them)
    offsets = tf.range(n - 1)
    prefixes = tf.gather(words, _last_axis(starts) + tf.expand_dims(offsets, 0), axis=2)  # (B, K, P, n - 1)
    last = tf.gather(words, tf.maximum(step - (n - 1) + offsets, 0), axis=2)  # (B, K, n - 1): the beam's end
    written = starts + n - 1 < step  # the n-gram at i is complete before this step
    repeats = tf.logical_and(tf.reduce_all(prefixes == tf.expand_dims(last, 2), axis=-1), written)  # (B, K, P)
    following = tf.gather(words, starts + n - 1, axis=2)  # (B, K, P): the word each such n-gram went on with
    banned = tf.reduce_max(tf.one_hot(following, vocabulary_size) * _last_axis(tf.cast(repeats, tf.float32)), axis=2)
    return banned * NEGATIVE_INFINITY  # finite, so 0 x it stays 0


def beam_search(
    decoder,
    features,
    start_id: int,
    end_id: int,
    max_length: int,
    beam_size: int = 3,
    min_length: int = 1,
    length_penalty: float = 0.0,
    all_beams: bool = False,
    no_repeat_ngram: int = 0,
):
    """Keep the `beam_size` most likely partial captions per image; all beams of all images in one tensor.

    features (B, L, D) -> word ids (B, T), attention weights (B, T, L), scores (B,), T = max_length + 1;
    with all_beams, the `beam_size` best finished captions, best first: (B, K, T), (B, K, T, L), (B, K).

    Each step scores every beam times every word and takes the 2K best candidates:
      * a candidate among the K best that says `<end>` is a finished caption; it joins
        the finished pool (the K best finished captions so far, by normalised score);
      * the K best candidates that do not end are the beams that go on.
    Taking 2K guarantees K beams go on (each beam has only one `<end>`), so a caption that
    ends early never costs the search a beam. The score is
        log p(caption) / length ** length_penalty        (length counts `<end>`),
    and with beam_size 1 and no length penalty this is exactly greedy search.
    no_repeat_ngram N > 0: no beam may write an N-gram it already holds ("a man in a white shirt and a white
    shirt"); a length penalty makes such padding pay, and blocking it leaves the penalty to reward what is new.
    """
    batch = tf.shape(features)[0]
    beams, steps = beam_size, max_length + 1
    features, keys, state = decoder.prepare(features)
    vocabulary_size = decoder.vocabulary_size

    def tile(tensor):  # (B, ...) -> (B * K, ...): beams of one image sit next to each other
        return tf.repeat(tensor, beams, axis=0)

    def pick(tensor, index):  # tensor (B, N, ...), index (B, M) -> (B, M, ...)
        return tf.gather(tensor, index, batch_dims=1)

    features, keys = tile(features), tile(keys)
    state = [tile(s) for s in state]
    locations = tf.shape(features)[1]

    # Only the first beam is alive at the start, or all K beams would be copies of one.
    alive_scores = tf.tile(tf.constant([[0.0] + [NEGATIVE_INFINITY] * (beams - 1)]), [batch, 1])  # (B, K)
    alive_words = tf.zeros([batch, beams, steps], tf.int32)  # filled in column by column
    alive_weights = tf.zeros([batch, beams, steps, locations])
    finished_scores = tf.fill([batch, beams], NEGATIVE_INFINITY)  # normalised
    finished_words = tf.zeros([batch, beams, steps], tf.int32)
    finished_weights = tf.zeros([batch, beams, steps, locations])
    words = tf.fill([batch * beams], start_id)
    never = _word_penalty(vocabulary_size, [PAD_ID, START_ID, UNKNOWN_ID])
    never_or_end = _word_penalty(vocabulary_size, [PAD_ID, START_ID, UNKNOWN_ID, end_id])
    only_end = tf.one_hot(end_id, vocabulary_size, on_value=0.0, off_value=NEGATIVE_INFINITY)
    columns = tf.range(steps)
    # Division by this, not by a power computed in the graph, keeps scores exactly as Python computes them.
    length_normalisers = tf.constant([float(step + 1) ** length_penalty for step in range(steps)], tf.float32)

    def step_once(step, words, state, alive_scores, alive_words, alive_weights,
                  finished_scores, finished_words, finished_weights):
        logits, state, attention_weights = decoder.step(words, state, features, keys)
        log_probs = tf.reshape(tf.nn.log_softmax(logits), [batch, beams, vocabulary_size])
        log_probs += tf.where(step < min_length, never_or_end, never)
        # Out of room: every beam ends here, paying what `<end>` costs.
        log_probs += tf.where(step == max_length, only_end, tf.zeros_like(only_end))
        if no_repeat_ngram:
            log_probs += repeated_ngram_penalty(alive_words, step, no_repeat_ngram, vocabulary_size)

        # Every beam times every word: the 2K best candidates per image.
        candidates = tf.reshape(_last_axis(alive_scores) + log_probs, [batch, beams * vocabulary_size])
        scores, flat_indices = tf.math.top_k(candidates, k=2 * beams)  # (B, 2K)
        parent = flat_indices // vocabulary_size  # which beam each candidate continues
        next_words = flat_indices % vocabulary_size
        ends = next_words == end_id

        # Each candidate's history: its parent's, with the new word and map in column `step`.
        is_step = tf.reshape(columns == step, [1, 1, steps])
        history = tf.where(is_step, _last_axis(next_words), pick(alive_words, parent))
        weights = pick(tf.reshape(attention_weights, [batch, beams, locations]), parent)
        weight_history = tf.where(_last_axis(is_step), tf.expand_dims(weights, 2), pick(alive_weights, parent))

        # Finished: candidates among the K best that end, merged into the pool of the K best.
        among_best = tf.expand_dims(tf.range(2 * beams), 0) < beams
        normalised = scores / length_normalisers[step]
        new_finished = tf.where(tf.logical_and(ends, among_best), normalised, NEGATIVE_INFINITY)  # LiteRT has no BitwiseAnd
        pool_scores = tf.concat([finished_scores, new_finished], axis=1)  # (B, 3K)
        finished_scores, keep = tf.math.top_k(pool_scores, k=beams)
        finished_words = pick(tf.concat([finished_words, history], axis=1), keep)
        finished_weights = pick(tf.concat([finished_weights, weight_history], axis=1), keep)

        # Alive: the K best candidates that do not end.
        alive_scores, keep = tf.math.top_k(tf.where(ends, NEGATIVE_INFINITY, scores), k=beams)
        alive_words, alive_weights = pick(history, keep), pick(weight_history, keep)
        beam_parent = pick(parent, keep)
        flat_parent = tf.reshape(beam_parent + _last_axis(tf.range(batch)) * beams, [-1])  # index into B * K
        state = [tf.gather(s, flat_parent) for s in state]
        words = tf.reshape(pick(next_words, keep), [-1])
        return (step + 1, words, state, alive_scores, alive_words, alive_weights,
                finished_scores, finished_words, finished_weights)

    loop_vars = [words, state, alive_scores, alive_words, alive_weights, finished_scores, finished_words,
                 finished_weights]
    *_, finished_scores, finished_words, finished_weights = _loop_over_steps(step_once, loop_vars, steps)
    # The pool is sorted, best first.
    if all_beams:
        return finished_words, finished_weights, finished_scores
    return finished_words[:, 0], finished_weights[:, 0], finished_scores[:, 0]
