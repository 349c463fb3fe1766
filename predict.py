"""Caption images and show where the model looked.

    python predict.py photo.jpg                        # the shipped model (models/), greedy
    python predict.py photos/ "more/*.png" --beam 3 --json
    python predict.py photo.jpg --overlay-dir overlays/ --overlay-style heatmap
    python predict.py photos/ --beam 3 --html report.html   # one page: hover a word to see its map
    python predict.py photo.jpg --model runs/synthetic-.../best.keras

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
    parser.add_argument("--model", default=None,
                        help="a .keras file written by train.py (best.keras); default: the shipped model in models/")
    parser.add_argument("--beam", type=int, default=3, help="beam size (3: best on Flickr8k); 1 is greedy search")
    parser.add_argument("--length-penalty", type=float, default=0.0,
                        help="beam search ranks by log p / length ** this (0: plain log probability)")
    parser.add_argument("--max-length", type=int, default=None, help="most words per caption")
    parser.add_argument("--json", action="store_true", help="JSON lines with per-word attention grids")
    parser.add_argument("--overlay-dir", default=None, help="write one attention overlay PNG per image here")
    parser.add_argument("--overlay-style", default="spotlight", choices=["spotlight", "heatmap"],
                        help="spotlight dims what the model did not look at; heatmap draws a colour map")
    parser.add_argument("--colormap", default="inferno", help="matplotlib colour map of the heatmap style")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the heatmap over the image")
    parser.add_argument("--panel-size", type=float, default=2.2, help="inches per panel (100 pixels per inch)")
    parser.add_argument("--per-word", action="store_true", help="one overlay file per word instead of one per image")
    parser.add_argument("--hard-inference", choices=["argmax", "expected"], default=None,
                        help="hard-attention models: use the most likely location (argmax, marked in overlays) "
                             "or the expected context")
    parser.add_argument("--html", default=None, help="write one self-contained HTML page for all images here")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.beam < 1:
        parser.error("--beam must be at least 1")
    if args.max_length is not None and args.max_length < 1:
        parser.error("--max-length must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if not 0 <= args.alpha <= 1:
        parser.error("--alpha must be in [0, 1]")
    if args.panel_size <= 0:
        parser.error("--panel-size must be positive")
    import matplotlib

    if args.colormap not in matplotlib.colormaps:
        parser.error(f"--colormap: unknown colour map {args.colormap!r} (e.g. inferno, viridis, jet, gray)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import_tensorflow_quietly()
    from captioner.images import expand_inputs
    from captioner.inference import caption_files, report_entry, result_json, write_overlay
    from captioner.model import default_model_path, load_captioner
    from captioner.report import write_report

    model_path = args.model or default_model_path()
    try:
        captioner = load_captioner(model_path)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.hard_inference:
        captioner.decoder.hard_inference = args.hard_inference
    paths, input_errors = expand_inputs(args.inputs)
    for message in input_errors:
        print(f"error: {message}", file=sys.stderr)
    failures = len(input_errors)
    style = dict(style=args.overlay_style, colormap=args.colormap, alpha=args.alpha, panel_inches=args.panel_size)
    report = []
    for index, result in enumerate(caption_files(captioner, paths, args.beam, args.max_length, args.batch_size, args.length_penalty)):
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
            failures += 1
            continue
        print(result_json(result, captioner) if args.json else f"{result.path}: {result.caption.text}", flush=True)
        if args.html:
            report.append(report_entry(result))
        if args.overlay_dir:
            try:
                write_overlay(result, args.overlay_dir, index, per_word=args.per_word, **style)
            except OSError as error:  # disk full, no permission: say so and go on with the captions
                print(f"error: {error.filename or args.overlay_dir}: overlay not written ({error.strerror or error})",
                      file=sys.stderr)
                failures += 1
        result.display = None  # the report keeps its own copy; free the rest as we go
    if args.html:
        decoding = "greedy search" if args.beam == 1 else f"beam search, {args.beam} beams"
        try:
            write_report(report, args.html, notes=f"Model: {model_path}; {decoding}.")
        except OSError as error:
            print(f"error: {error.filename or args.html}: report not written ({error.strerror or error})", file=sys.stderr)
            failures += 1
    if failures:
        print(f"{failures} input(s) failed, {len(paths) + len(input_errors) - failures} captioned", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
