"""The synthetic demo's training step, timed on random features: where `python train.py`'s epochs go.

    python bench/demo_step.py                                   # the preset, pooled and malloc allocators
    python bench/demo_step.py --decoders 128/128/256,32/64/128 --allocators pooled

Each decoder (attention units / feature units / LSTM units; the synthetic preset is 128/128/256) trains for
`--steps` steps of the preset's batch (32 captions of 20 ids over a 14x14 grid of 576 features, the demo's
MobileNetV2 cut) after one compiling step. The batches come the way the demo's do: gathered from a float16 array
of 4,000 scenes' features by `pipeline.make_dataset` in its background thread (`--feed constant` reuses one batch
already in TensorFlow, the step alone). Every (decoder, allocator) pair runs in a process of its own, since
TensorFlow picks its CPU allocator once per process (`captioner/utils/allocator.py`). Needs no dataset.
Prints a table and appends dated rows to bench/results/demo_step.jsonl.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import common

from captioner.utils.allocator import POOLED_CPU_ALLOCATOR

SCENES = 4000  # the demo's training scenes, two captions each
GRID_CELLS, FEATURES, CAPTION_IDS, VOCABULARY = 196, 576, 20, 27  # block_13_expand_relu at 224 px; the demo's words
ALLOCATORS = {"pooled": "true", "malloc": "false"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoders", default="128/128/256", help="comma-separated ATTENTION/FEATURE/LSTM units")
    parser.add_argument("--allocators", default="pooled,malloc", help="pooled (the tools' default) and/or malloc")
    parser.add_argument("--feed", choices=("pipeline", "constant"), default="pipeline")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per variant")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # DECODER:ALLOCATOR, run in this process
    args = parser.parse_args(argv)
    for decoder in args.decoders.split(","):
        parts = decoder.split("/")
        if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
            parser.error(f"--decoders: {decoder!r} is not ATTENTION/FEATURE/LSTM units, e.g. 128/128/256")
    unknown = set(args.allocators.split(",")) - set(ALLOCATORS)
    if unknown:
        parser.error(f"--allocators: unknown {', '.join(sorted(unknown))}; choose from {', '.join(ALLOCATORS)}")
    return args


def run_one(args) -> dict:
    decoder_units, allocator = args.one.split(":")
    os.environ[POOLED_CPU_ALLOCATOR] = ALLOCATORS[allocator]  # before TensorFlow makes its CPU device
    from captioner.utils.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from types import SimpleNamespace

    import keras
    import numpy as np
    import tensorflow as tf

    from captioner.config import Config
    from captioner.data import pipeline
    from captioner.model.decoder import DecoderWithAttention
    from captioner.model.encoder import Encoder
    from captioner.training import Trainer

    attention_units, feature_units, units = (int(part) for part in decoder_units.split("/"))
    config = Config.for_dataset("synthetic", attention_units=attention_units, feature_units=feature_units, units=units)
    keras.utils.set_random_seed(0)
    decoder = DecoderWithAttention(VOCABULARY, **config.decoder_kwargs())
    decoder.build((None, GRID_CELLS, FEATURES))
    trainer = Trainer(SimpleNamespace(decoder=decoder, encoder=Encoder(**config.encoder_kwargs()),
                                      feature_shape=(GRID_CELLS, FEATURES)), config, total_steps=10_000)
    random = np.random.default_rng(0)
    features = random.random((SCENES, GRID_CELLS, FEATURES), dtype=np.float32).astype(np.float16)
    image_index = np.repeat(np.arange(SCENES), 2)
    token_ids = random.integers(1, VOCABULARY, (2 * SCENES, CAPTION_IDS)).astype(np.int32)
    batches = pipeline.epoch_batches(token_ids, config.batch_size, seed=0, epoch=0, by_length=False)[: args.steps]

    def step(batch_features, batch_ids) -> None:
        float(trainer.train_step(batch_features, batch_ids)[0])  # waits for the step, as the demo's loop does

    first = batches[0]
    started = time.perf_counter()
    step(tf.constant(features[image_index[first]].astype(np.float32)), tf.constant(token_ids[first]))
    compile_seconds = time.perf_counter() - started

    if args.feed == "pipeline":
        feed = pipeline.make_dataset(features, image_index, token_ids, batches, width=CAPTION_IDS)
    else:
        constant = (tf.constant(features[image_index[first]].astype(np.float32)), tf.constant(token_ids[first]))
        feed = (constant for _ in batches)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for batch_features, batch_ids in feed:
        step(batch_features, batch_ids)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"decoder": decoder_units, "allocator": allocator, "feed": args.feed, "steps": len(batches),
            "batch": config.batch_size, "ms_per_step": 1000 * seconds / len(batches),
            "compile_seconds": compile_seconds,
            "page_faults_per_step": (after.ru_minflt - before.ru_minflt) / len(batches),
            "system_seconds_share": (after.ru_stime - before.ru_stime) / max(seconds, 1e-9),
            "peak_memory_mib": common.peak_memory_mib(), **common.machine()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        common.print_result(run_one(args))
        return 0
    rows = common.run_children([
        ([sys.executable, __file__, "--one", f"{decoder}:{allocator}", "--feed", args.feed, "--steps", str(args.steps)],
         f"{decoder} {allocator}")
        for decoder in args.decoders.split(",") for allocator in args.allocators.split(",")])
    if rows:
        print(f"\n{rows[0]['cpu']}, {rows[0]['cores']} cores, TensorFlow {rows[0]['tensorflow']}, "
              f"batch {rows[0]['batch']}, features fed by {args.feed}")
        common.print_table(rows, [("decoder", "decoder", "s"), ("allocator", "allocator", "s"),
                                  ("ms_per_step", "ms/step", ".1f"), ("compile_seconds", "compile s", ".1f"),
                                  ("page_faults_per_step", "faults/step", ".0f"),
                                  ("system_seconds_share", "kernel share", ".2f"),
                                  ("peak_memory_mib", "peak MiB", ".0f")])
        print(f"results appended to {common.append_results('demo_step', rows)}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
