"""Captioning speed: images per second for greedy search and beam search, on cached features.

    python bench/decode_speed.py --model runs/flickr8k/best.keras [--images 500] [--batch 50]

Features are random with the model's grid shape (decoding cost does not depend on their
values once the caption length is fixed, and every caption runs to max_length + 1 steps
inside the compiled search). Prints a table and appends a dated row per setting to
bench/results/decode_speed.jsonl. Run by hand; not part of the tests.
"""

from __future__ import annotations

import argparse
import sys
import time

import common  # puts the repository on sys.path

from captioner.utils.quiet import import_tensorflow_quietly


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--beams", default="1,3,5")
    args = parser.parse_args()
    import_tensorflow_quietly()
    import numpy as np

    from captioner.model.saving import load_captioner

    captioner = load_captioner(args.model)
    locations, size = captioner.feature_shape
    features = np.random.default_rng(0).random((args.images, locations, size), dtype=np.float32)
    machine = common.machine()
    print(f"{args.model}: grid {captioner.grid}, vocabulary {len(captioner.vocabulary)}, max_length "
          f"{captioner.max_length}; {machine}")
    print(f"{'decoding':<10}{'images/s':>10}{'ms/image':>10}")
    for beam in (int(b) for b in args.beams.split(",")):
        captioner.decode_features(features[: args.batch], beam_size=beam)  # compile outside the timing
        started = time.perf_counter()
        for start in range(0, args.images, args.batch):
            captioner.decode_features(features[start : start + args.batch], beam_size=beam)
        seconds = time.perf_counter() - started
        name = "greedy" if beam == 1 else f"beam {beam}"
        print(f"{name:<10}{args.images / seconds:>10.1f}{1000 * seconds / args.images:>10.2f}")
        common.append_results("decode_speed", [{"model": args.model, "decoding": name, "batch": args.batch,
                                                "images": args.images, "images_per_second": args.images / seconds,
                                                **machine}])
    return 0


if __name__ == "__main__":
    sys.exit(main())
