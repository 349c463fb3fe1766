"""How close training comes to what the machine can do: decoder FLOPs per caption against the matmul rate.

    python bench/flop_ceiling.py                         # measures the training rate now, in this run
    python bench/flop_ceiling.py --captions-per-second 300   # or takes it from you
    python bench/flop_ceiling.py --stored                # or from the latest `ours` row of train_speed.jsonl

The fraction is only meaningful when the training rate and the matmul rate come from the same machine on
the same day, under the same load, so by default both are measured here, one after the other
(bench/train_speed.py's `ours` variant in a process of its own, then tf.matmul).

1. Count the floating-point operations of one training caption for the Flickr8k model, layer
   by layer (a multiply-add is 2 FLOPs; the backward pass costs about twice the forward, so a
   training step is 3x the forward). Per image: the feature projection, the attention keys and
   the initial state; per word (decoder steps include each batch's padding): attention, gate,
   LSTM, deep output, and the softmax layer over the vocabulary.
2. Measure the machine's float32 matrix-multiply rate with tf.matmul, at the decoder's own
   shapes (batch 64) and at a large square size (the best case).
3. Training throughput x FLOPs per caption / the best matmul rate = the fraction of the ceiling.
Appends a dated row to bench/results/flop_ceiling.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common

BATCH = 64


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions-per-second", type=float, help="training throughput (default: measured now with "
                        "bench/train_speed.py's `ours` variant)")
    parser.add_argument("--stored", action="store_true", help="take the throughput from the latest `ours` row of "
                        "bench/results/train_speed.jsonl instead of measuring it (its date and machine are printed)")
    parser.add_argument("--data-dir", default=str(common.FLICKR8K), help="Flickr8k, for measuring the throughput")
    parser.add_argument("--feature-cache", help="where the encoder features are cached (default: the usual cache)")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps when measuring the throughput")
    parser.add_argument("--decoder-steps", type=float, help="decoder steps per caption, padding included (default: "
                        "from the throughput's measurement)")
    parser.add_argument("--vocabulary", type=int, default=None, help="vocabulary size (same default; else 2,550)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per matmul measurement")
    return parser.parse_args(argv)


def flops_per_caption(decoder_steps: float, vocabulary: int, locations=49, raw_features=1280, features=512,
                      attention=256, units=512, embedding=128) -> dict[str, float]:
    """Forward FLOPs of one caption, by part (the Flickr8k configuration's sizes by default)."""
    matmul = lambda rows, inner, columns: 2.0 * rows * inner * columns  # noqa: E731
    per_image = {
        "feature projection": matmul(locations, raw_features, features),
        "attention keys": matmul(locations, features, attention),
        "initial h and c": 2 * matmul(1, features, units),
    }
    per_word = {
        "attention scores": matmul(1, units, attention) + matmul(locations, attention, 1) + 2 * locations * attention,
        "context vector": matmul(1, locations, features),
        "gate": matmul(1, units, 1) + features,
        "LSTM": matmul(1, embedding + features + units, 4 * units) + 10 * units,
        "deep output": matmul(1, units, embedding) + matmul(1, features, embedding) + 2 * embedding,
        "softmax layer": matmul(1, embedding, vocabulary) + 3 * vocabulary,
    }
    parts = {**per_image, **{name: value * decoder_steps for name, value in per_word.items()}}
    return parts


def matmul_rate(rows: int, inner: int, columns: int, seconds: float) -> float:
    """Float32 GFLOP/s of tf.matmul at this shape, run back to back in one compiled loop."""
    import tensorflow as tf

    a = tf.random.normal((rows, inner))
    b = tf.random.normal((inner, columns))
    repeats = 10

    @tf.function(autograph=False)
    def run(a, b):
        total = tf.zeros((rows, columns))
        for _ in range(repeats):
            total += tf.matmul(a, b)
            a = a + 1e-6  # a new product each time
        return total

    run(a, b).numpy()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(a, b).numpy()
        calls += 1
    elapsed = time.perf_counter() - started
    return 2.0 * rows * inner * columns * repeats * calls / elapsed / 1e9


def latest_training_row() -> dict | None:
    path = common.RESULTS / "train_speed.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row["variant"] == "ours"]
    return rows[-1] if rows else None


def measure_training_row(data_dir: str, steps: int, feature_cache: str | None) -> dict | None:
    """The product's training step measured now (bench/train_speed.py's `ours`, in a process of its own)."""
    script = Path(__file__).resolve().parent / "train_speed.py"
    cache = ["--feature-cache", feature_cache] if feature_cache else []
    return common.run_child([sys.executable, str(script), "--one", "ours", "--data-dir", data_dir,
                             "--steps", str(steps), *cache], "training step (ours)")


def training_throughput(args) -> dict:
    """Where the captions/s come from: the command line, the stored row (--stored) or a measurement now."""
    if args.captions_per_second:
        return {"captions_per_second": args.captions_per_second, "source": "given"}
    if args.stored:
        row = latest_training_row()
        if row:
            print(f"Training rate from bench/results/train_speed.jsonl: {row.get('date', 'undated')}, "
                  f"{row.get('cpu', 'unknown machine')} (not measured in this run)")
        return {**(row or {}), "source": "stored"}
    return {**(measure_training_row(args.data_dir, args.steps, args.feature_cache) or {}), "source": "measured"}


def main(argv=None) -> int:
    args = parse_args(argv)
    from captioner.utils.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    training = training_throughput(args)
    rate = training.get("captions_per_second")
    steps = args.decoder_steps or training.get("decoder_steps_per_caption") or 13.4
    vocabulary = args.vocabulary or training.get("vocabulary") or 2550
    if rate is None:
        print(f"error: no training throughput ({training['source']}): give --captions-per-second, or Flickr8k with "
              "--data-dir to measure it", file=sys.stderr)
        return 2

    parts = flops_per_caption(steps, vocabulary)
    forward = sum(parts.values())
    training_flops = 3 * forward
    print(f"Forward FLOPs per caption ({steps:.1f} decoder steps, vocabulary {vocabulary}):")
    for name, value in parts.items():
        print(f"  {name:<20}{value / 1e6:10.1f} M  ({value / forward:5.1%})")
    print(f"  {'total':<20}{forward / 1e6:10.1f} M; training (x3): {training_flops / 1e6:.0f} M")

    shapes = {"LSTM gates (64x1152 @ 1152x2048)": (BATCH, 1152, 2048),
              "feature projection (3136x1280 @ 1280x512)": (BATCH * 49, 1280, 512),
              "softmax layer (64x128 @ 128x2550)": (BATCH, 128, 2550),
              "square 2048": (2048, 2048, 2048)}
    rates = {name: matmul_rate(*shape, args.seconds) for name, shape in shapes.items()}
    print("\nfloat32 tf.matmul:")
    for name, value in rates.items():
        print(f"  {name:<44}{value:8.1f} GFLOP/s")
    ceiling = max(rates.values())
    achieved = rate * training_flops / 1e9
    print(f"\nTraining: {rate:.0f} captions/s x {training_flops / 1e6:.0f} MFLOP = {achieved:.1f} GFLOP/s, "
          f"{achieved / ceiling:.1%} of the best matmul rate ({ceiling:.1f} GFLOP/s)")
    row = {"captions_per_second": rate, "throughput_source": training["source"], "decoder_steps_per_caption": steps, "vocabulary": vocabulary,
           "forward_mflops_per_caption": forward / 1e6, "training_mflops_per_caption": training_flops / 1e6,
           "matmul_gflops": rates, "ceiling_gflops": ceiling, "achieved_gflops": achieved,
           "fraction_of_ceiling": achieved / ceiling, **common.machine()}
    print(f"results appended to {common.append_results('flop_ceiling', [row])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
