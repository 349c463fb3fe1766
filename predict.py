"""Caption images and show where the model looked.

    python predict.py photo.jpg --model runs/synthetic-.../best.keras
    python predict.py photos/ "more/*.png" --model model.keras --beam 3 --json
    python predict.py photo.jpg --model model.keras --overlay-dir overlays/

Prints "path: caption" per image (JSON lines with --json). A file that cannot be
read gets one "error: path: reason" line on stderr; the others are still
captioned, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys

from captioner.quiet import import_tensorflow_quietly


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, directories or glob patterns")
    parser.add_argument("--model", required=True, help="a .keras file written by train.py (best.keras)")
    parser.add_argument("--beam", type=int, default=1, help="beam size; 1 is greedy search")
    parser.add_argument("--length-penalty", type=float, default=0.0,
                        help="beam search ranks by log p / length ** this (0: plain log probability)")
    parser.add_argument("--max-length", type=int, default=None, help="most words per caption")
    parser.add_argument("--json", action="store_true", help="JSON lines with per-word attention grids")
    parser.add_argument("--overlay-dir", default=None, help="write one attention overlay PNG per image here")
    parser.add_argument("--overlay-style", default="spotlight", choices=["spotlight", "heatmap"],
                        help="spotlight dims what the model did not look at; heatmap draws a colour map")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.beam < 1:
        parser.error("--beam must be at least 1")
    if args.max_length is not None and args.max_length < 1:
        parser.error("--max-length must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import_tensorflow_quietly()
    from captioner.images import expand_inputs
    from captioner.inference import caption_files, result_json, write_overlay
    from captioner.model import load_captioner

    try:
        captioner = load_captioner(args.model)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paths, input_errors = expand_inputs(args.inputs)
    for message in input_errors:
        print(f"error: {message}", file=sys.stderr)
    failures = len(input_errors)
    for index, result in enumerate(caption_files(captioner, paths, args.beam, args.max_length, args.batch_size, args.length_penalty)):
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
            failures += 1
            continue
        print(result_json(result, captioner) if args.json else f"{result.path}: {result.caption.text}", flush=True)
        if args.overlay_dir:
            try:
                write_overlay(result, args.overlay_dir, index, style=args.overlay_style)
            except OSError as error:  # disk full, no permission: say so and go on with the captions
                print(f"error: {error.filename or args.overlay_dir}: overlay not written ({error.strerror or error})",
                      file=sys.stderr)
                failures += 1
    if failures:
        print(f"{failures} input(s) failed, {len(paths) + len(input_errors) - failures} captioned", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
