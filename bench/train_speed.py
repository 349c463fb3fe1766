"""Training speed on cached Flickr8k features: our training step against a tutorial-style one.

    python bench/train_speed.py                          # every variant, each in a process of its own
    python bench/train_speed.py --variants ours,tutorial_eager --steps 20

Every variant trains the same model (the Flickr8k configuration: MobileNetV2 7x7x1280 features,
512-unit LSTM, additive attention, batch 64) on the same batches of the training split. The
features of those batches are gathered into memory before the clock starts, so the numbers are
the training step alone; compilation is timed separately (first call for each caption length).
Prints a table and appends one dated row per variant to bench/results/train_speed.jsonl.

Variants:
  ours                    the product's step (captioner/training/trainer.py): the whole step (every word, the
                          loss, the gradients, the update) is one XLA-compiled graph per caption length;
                          batches of similar lengths, each padded to its own longest caption; the
                          attention's projection of the features computed once per image
  ours_no_xla             ours, compiled without XLA (train.py --no-xla); the variants below are
                          changes to this one, so that each is measured on its own
  ours_ATTENTION          ours (XLA) with another score: dot, general, scaled_dot, none
  ours_fixed_length       every caption padded to the maximum length (22 ids)
  ours_random_batches     random batches (each still padded to its own longest)
  ours_keys_every_word    the attention's feature projection recomputed for every word
  ours_while_loop         the words in a tf.while_loop instead of an unrolled graph
  ours_float16            mixed precision (float16 compute, float32 variables)
  ours_fused              ours on the shipped model's fused 14x14 grid (block_13_expand_relu+out_relu: 196 cells
                          of 576 + 1,280 features, the 7x7 part repeated 2x2), its projection computed per
                          7x7 cell for the repeated part (DecoderWithAttention's fused_layout)
  ours_fused_plain        the same with the projection multiplied on all 196 cells' 1,856 features
  ours_malloc, ours_fused_malloc
                          ours and ours_fused with TensorFlow's default CPU allocator (malloc and free for every
                          tensor) instead of the pooling one the tools use (captioner/utils/allocator.py)
  tutorial_eager          the way tutorials write it: eager GradientTape, a Python loop over the
                          words calling the decoder one step at a time, attention projection every
                          word, every caption padded to the maximum length
  tutorial_step_function  the same, each decoder step a tf.function (the TensorFlow tutorial's way)
  pipeline_float16        no training: the tf.data pipeline alone, gathering batches from the float16
                          memory-mapped cache (the product's); "captions/s" is its delivery rate
  pipeline_float32        the same from the features held in memory as float32
Thread settings: --intra N / --inter N (TensorFlow's intra- and inter-op thread pools; 0 = default).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import common

from captioner.utils.allocator import POOLED_CPU_ALLOCATOR

VARIANTS = ["ours", "ours_no_xla", "ours_dot", "ours_general", "ours_scaled_dot", "ours_none", "ours_fixed_length",
            "ours_random_batches", "ours_keys_every_word", "ours_while_loop",
            "ours_float16", "ours_fused", "ours_fused_plain", "ours_malloc", "ours_fused_malloc",
            "pipeline_float16", "pipeline_float32",
            "tutorial_eager", "tutorial_step_function"]
TUTORIALS = ("tutorial_eager", "tutorial_step_function")
BATCH = 64
TUTORIAL_STEPS = 8  # tutorial steps are slow; fewer of them are timed
FUSED_LAYERS = "block_13_expand_relu+out_relu"  # the shipped model's 14x14 grid


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(common.FLICKR8K))
    parser.add_argument("--feature-cache", help="where the encoder features are cached (default: the usual cache)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per variant")
    parser.add_argument("--intra", type=int, default=0, help="intra-op threads (0: TensorFlow's default)")
    parser.add_argument("--inter", type=int, default=0, help="inter-op threads (0: TensorFlow's default)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one variant in this process
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if not Path(args.data_dir).exists():
        parser.error(f"{args.data_dir}: no Flickr8k here (give --data-dir)")
    return args


# ---------------------------------------------------------------------------------------------
# The variants' decoders and steps


def decoder_classes():
    import tensorflow as tf

    from captioner.model.decoder import DecoderWithAttention

    class KeysEveryWord(DecoderWithAttention):
        """The attention's feature projection W_a a recomputed for every word, as tutorials do."""

        def _step(self, previous_words, state, features, keys, training, policy):
            return super()._step(previous_words, state, features, None, training, policy)

    class WhileLoopDecoder(DecoderWithAttention):
        """Teacher forcing in a symbolic tf.while_loop: one graph for every caption length."""

        def _teacher_forced(self, features, token_ids, training, policy):
            features, keys, (hidden, cell) = self.prepare(features)
            steps = tf.shape(token_ids)[1]
            all_logits = tf.TensorArray(tf.float32, size=steps)
            all_weights = tf.TensorArray(tf.float32, size=steps)

            def body(t, hidden, cell, all_logits, all_weights):
                logits, (hidden, cell), weights, _ = self._step(token_ids[:, t], [hidden, cell], features, keys,
                                                                training, policy)
                return t + 1, hidden, cell, all_logits.write(t, logits), all_weights.write(t, weights)

            _, _, _, all_logits, all_weights = tf.while_loop(lambda t, *_: t < steps, body,
                                                             (0, hidden, cell, all_logits, all_weights))
            return (tf.transpose(all_logits.stack(), [1, 0, 2]), tf.transpose(all_weights.stack(), [1, 0, 2]), [])

    return {"keys_every_word": KeysEveryWord, "while_loop": WhileLoopDecoder, None: DecoderWithAttention}


def tutorial_trainer(decoder, config, compiled_steps: bool):
    """A training step written the tutorial way (eager tape, Python loop over the words)."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(config.learning_rate)

    def step(previous_words, state, features):
        logits, state, weights, _ = decoder._step(previous_words, state, features, None, True, "expected")
        return logits, state, weights

    if compiled_steps:
        step = tf.function(step, autograph=False)
    loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def train_step(features, token_ids):
        loss, attention_sum = 0.0, 0.0
        with tf.GradientTape() as tape:
            features, _, state = decoder.prepare(features)
            for t in range(1, token_ids.shape[1]):
                logits, state, weights = step(token_ids[:, t - 1], state, features)
                mask = tf.cast(token_ids[:, t] != 0, tf.float32)
                loss += tf.reduce_sum(loss_object(token_ids[:, t], logits) * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
                attention_sum += weights * mask[:, None]
            loss = loss / (token_ids.shape[1] - 1) + config.attention_lambda * tf.reduce_mean((1.0 - attention_sum) ** 2)
        variables = decoder.trainable_variables
        gradients, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), config.clip_norm)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss

    return train_step


# ---------------------------------------------------------------------------------------------
# One variant, in this process


def run_one(args) -> dict:
    variant = args.one
    if variant.endswith("_malloc"):  # before TensorFlow makes its CPU device
        os.environ[POOLED_CPU_ALLOCATOR] = "false"
    allocator = os.environ.get(POOLED_CPU_ALLOCATOR, "true")
    variant = variant.removesuffix("_malloc")
    from captioner.utils.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import numpy as np
    import tensorflow as tf

    if args.intra or args.inter:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    import keras

    if variant == "ours_float16":
        keras.mixed_precision.set_global_policy("mixed_float16")
    from types import SimpleNamespace

    from captioner.config import Config
    from captioner.data import pipeline
    from captioner.data.datasets import load_splits
    from captioner.data.features import DEFAULT_CACHE, FeatureStore
    from captioner.data.vocabulary import Vocabulary
    from captioner.model.encoder import Encoder
    from captioner.training import Trainer, caption_pairs

    attention = variant.removeprefix("ours_") if variant in ("ours_dot", "ours_general", "ours_scaled_dot", "ours_none") \
        else "additive"
    # XLA for ours and its other scores; every other variant changes the plain step. (XLA cannot compile
    # the while loop's gradient when the batch size is not fixed: shapes must be compile-time constants.)
    xla = variant in ("ours", "ours_dot", "ours_general", "ours_scaled_dot", "ours_none", "ours_fused",
                      "ours_fused_plain")
    fused = variant.startswith("ours_fused")
    config = Config.for_dataset("flickr8k", data_dir=args.data_dir, attention=attention, batch_size=BATCH,
                                jit_compile=xla, **({"encoder_layer": FUSED_LAYERS} if fused else {}))
    train = load_splits(config)["train"]
    vocabulary = Vocabulary.build([c for refs in train.captions for c in refs], config.min_word_count)
    encoder = Encoder(**config.encoder_kwargs())  # frozen: the cache holds its features
    store = FeatureStore(args.feature_cache or DEFAULT_CACHE, encoder)
    store.extract_missing(train.paths, "train images")
    features = store.view(train.paths)
    image_index, token_ids = caption_pairs(train, vocabulary, config.max_length)

    keras.utils.set_random_seed(0)
    decoder_class = decoder_classes()[{"ours_keys_every_word": "keys_every_word",
                                       "ours_while_loop": "while_loop"}.get(variant)]
    layout = {"fused_layout": encoder.fused_layout} if variant == "ours_fused" else {}
    decoder = decoder_class(len(vocabulary), **config.decoder_kwargs(), **layout)
    decoder.build((None, *features.shape[1:]))

    if variant.startswith("pipeline"):
        return run_pipeline(variant, features, image_index, token_ids, args.steps)
    tutorial = variant in TUTORIALS
    fixed_length = tutorial or variant == "ours_fixed_length"
    by_length = variant != "ours_random_batches"
    steps = TUTORIAL_STEPS if tutorial else args.steps
    batches = pipeline.epoch_batches(token_ids, BATCH, seed=0, epoch=0, by_length=by_length)[:steps]

    def gather(batch):
        ids = token_ids[batch]
        width = ids.shape[1] if fixed_length else pipeline.padded_length(int((ids != 0).sum(axis=1).max()))
        return np.asarray(features[image_index[batch]], np.float32), ids[:, :width]

    data = [gather(batch) for batch in batches]
    if tutorial:
        train_step = tutorial_trainer(decoder, config, compiled_steps=variant == "tutorial_step_function")
    else:
        trainer = Trainer(SimpleNamespace(decoder=decoder, encoder=encoder, feature_shape=features.shape[1:]), config,
                          total_steps=10_000)
        train_step = trainer.train_step

    # Compile (or, eager, warm up) once per caption length, outside the timing.
    started = time.perf_counter()
    seen = set()
    for batch_features, batch_ids in data:
        if batch_ids.shape[1] not in seen:
            seen.add(batch_ids.shape[1])
            result = train_step(tf.constant(batch_features), tf.constant(batch_ids))
            float(np.asarray(result[0] if isinstance(result, (tuple, list)) else result))
    compile_seconds = time.perf_counter() - started

    started = time.perf_counter()
    for batch_features, batch_ids in data:
        result = train_step(tf.constant(batch_features), tf.constant(batch_ids))
    float(np.asarray(result[0] if isinstance(result, (tuple, list)) else result))
    seconds = time.perf_counter() - started
    captions = sum(len(batch) for batch in batches)
    words = sum(int(ids.shape[1] - 1) * len(ids) for _, ids in data)  # decoder steps run, padding included
    real_words = sum(int((ids[:, 1:] != 0).sum()) for _, ids in data)
    rate = captions / seconds
    return {
        "variant": args.one, "pooled_cpu_allocator": allocator, "attention": attention, "steps": len(data),
        "batch": BATCH,
        "captions_per_second": rate, "seconds_per_epoch": len(token_ids) / rate, "compile_seconds": compile_seconds,
        "decoder_steps_per_caption": words / captions, "real_words_per_caption": real_words / captions,
        "training_pairs": len(token_ids), "vocabulary": len(vocabulary), "intra_threads": args.intra, "inter_threads": args.inter,
        "peak_memory_mib": common.peak_memory_mib(), **common.machine(),
    }


def run_pipeline(variant, features, image_index, token_ids, steps: int) -> dict:
    """How fast the input pipeline delivers batches on its own (it must outpace the training step)."""
    import numpy as np

    from captioner.data import pipeline

    if variant == "pipeline_float32":
        features = np.asarray(features[np.arange(len(features))], np.float32)
    batches = pipeline.epoch_batches(token_ids, BATCH, seed=0, epoch=0)[: steps * 4]
    started = time.perf_counter()
    for _ in pipeline.make_dataset(features, image_index, token_ids, batches):
        pass
    seconds = time.perf_counter() - started
    rate = sum(len(batch) for batch in batches) / seconds
    return {"variant": variant, "steps": len(batches), "batch": BATCH, "captions_per_second": rate,
            "seconds_per_epoch": len(token_ids) / rate, "feature_bytes_per_image": int(np.prod(features.shape[1:]))
            * (2 if variant == "pipeline_float16" else 4), "peak_memory_mib": common.peak_memory_mib(), **common.machine()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        common.print_result(run_one(args))
        return 0
    cache = ["--feature-cache", args.feature_cache] if args.feature_cache else []
    rows = common.run_children([
        ([sys.executable, __file__, "--one", variant, "--data-dir", args.data_dir, "--steps", str(args.steps),
          "--intra", str(args.intra), "--inter", str(args.inter), *cache], variant)
        for variant in args.variants.split(",")])
    baseline = max((row["captions_per_second"] for row in rows if row["variant"] in TUTORIALS), default=None)
    for row in rows:
        if row["variant"].startswith("pipeline"):
            continue
        row["speed_vs_tutorial"] = row["captions_per_second"] / baseline if baseline else None
    if rows:
        print(f"\n{rows[0]['cpu']}, {rows[0]['cores']} cores, TensorFlow {rows[0]['tensorflow']}, batch {BATCH}")
        common.print_table(rows, [("variant", "variant", "s"), ("captions_per_second", "captions/s", ".0f"),
                                  ("seconds_per_epoch", "s/epoch", ".0f"), ("compile_seconds", "compile s", ".1f"),
                                  ("decoder_steps_per_caption", "steps/caption", ".1f"),
                                  ("speed_vs_tutorial", "x tutorial", ".2f"), ("peak_memory_mib", "peak MiB", ".0f")])
        print(f"results appended to {common.append_results('train_speed', rows)}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
