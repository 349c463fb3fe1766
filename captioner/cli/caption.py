"""Caption images and show where the model looked.

    captioner caption photo.jpg                        # the shipped model (captioner/pretrained/), greedy
    captioner caption photos/ "more/*.png" --beam 3 --json
    captioner caption photo.jpg --overlay-dir overlays/ --overlay-style heatmap
    captioner caption photos/ --beam 3 --html report.html   # one page: hover a word to see its map
    captioner caption photo.jpg --model runs/synthetic-.../best.keras
    captioner caption flickr8k/Flicker8k_Dataset/1000268201_693b08cb0e.jpg --html report.html \
        --entities flickr30k_entities                  # the annotators' boxes beside each word's map
    captioner caption photos/ --engine keras           # the Keras model even for a few photos

Prints "path: caption" per image (JSON lines with --json). A file that cannot be
read gets one "error: path: reason" line on stderr; the others are still
captioned, and the exit status is 1.

Up to 100 photos are captioned by the NumPy copy of the model (`captioner.numpy_model`): the same
captions and maps, without starting TensorFlow (0.6 s instead of 6 s for one photo on 2 cores). More
photos, or a model it cannot run, go through the Keras model, whose compiled search is faster per photo.

The library side: `caption_files` loads what can be loaded, reports what cannot and captions
the rest in batches.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from captioner.cli import exit_without_collecting_garbage, quiet_on_broken_pipe
from captioner.data.images import ImageError, load_images
from captioner.utils.quiet import import_tensorflow_quietly

if TYPE_CHECKING:  # TensorFlow loads after the flags are read (and quietly); matplotlib only for overlays
    from captioner.model.caption import Caption
    from captioner.model.captioner import Captioner
    from captioner.numpy_model import NumpyCaptioner
    from captioner.visualize.report import ReportEntry

DEFAULT_COLORMAP = "inferno"
ENGINES = ("auto", "numpy", "keras")
# With more photos than this, `--engine auto` uses the Keras model: its start-up (importing TensorFlow,
# building the model, compiling the search: about 5.5 s) is repaid by faster batches (0.065 s a photo
# against NumPy's 0.083 s at beam 3), from about 170 photos on (bench/RESULTS.md, "Cold start").
NUMPY_MAX_PHOTOS = 100


@dataclasses.dataclass
class Result:
    path: str
    caption: Caption | None = None
    error: str | None = None
    display: np.ndarray | None = None  # the whole image, aspect ratio kept, for overlays and reports
    boxes: list | None = None  # with --entities: per word, the annotated boxes of the phrases it heads


def caption_files(captioner: Captioner | NumpyCaptioner, paths: list[str], beam_size: int = 1,
                  max_length: int | None = None, batch_size: int = 16, length_penalty: float | None = None,
                  no_repeat_ngram: int | None = None) -> Iterator[Result]:
    """One Result per path, in order; a bad file gives a Result with `error` and the others go on."""
    size = captioner.encoder.image_size
    for start in range(0, len(paths), batch_size):
        results, images = [], []
        for path in paths[start : start + batch_size]:
            try:
                image, display = load_images(path, size)
            except ImageError as error:
                results.append(Result(path, error=str(error)))
                continue
            results.append(Result(path, display=display))
            images.append(image)
        captions = iter(captioner.caption(np.stack(images), beam_size, max_length, length_penalty, no_repeat_ngram)
                        if images else [])
        for result in results:
            if result.error is None:
                result.caption = next(captions)
            yield result


def result_json(result: Result, captioner: Captioner) -> str:
    """One JSON line: path, caption, words and each word's attention grid (rows x columns)."""
    from captioner.model.caption import caption_json

    return json.dumps({"path": result.path, **caption_json(result.caption, captioner.grid)})


def overlay_path(overlay_dir, image_path: str, index: int) -> Path:
    """A unique PNG name per input: its position, then its own name."""
    return Path(overlay_dir) / f"{index:04d}_{Path(image_path).stem}.png"


def write_overlay(result: Result, overlay_dir, index: int, per_word: bool = False, **style) -> list[Path]:
    """The overlay PNG of one result (or one PNG per word); `style`: draw_overlay's drawing options."""
    from captioner.visualize.overlay import draw_overlay, draw_word_overlays

    caption = result.caption
    if per_word:
        stem = overlay_path(overlay_dir, result.path, index).stem
        return draw_word_overlays(result.display, caption.words, caption.attention, overlay_dir, stem,
                                  chosen_cells=caption.chosen_cells, boxes=result.boxes, **style)
    return [draw_overlay(result.display, caption.words, caption.attention, overlay_path(overlay_dir, result.path, index),
                         chosen_cells=caption.chosen_cells, boxes=result.boxes, **style)]


def report_entry(result: Result) -> ReportEntry:
    from captioner.visualize.report import ReportEntry

    caption = result.caption
    return ReportEntry(result.path, result.display, caption.words, caption.attention, caption.score, caption.alternatives,
                       result.boxes, caption.chosen_cells)


def attach_boxes(result: Result, entities_dir) -> bool:
    """Give `result` the annotated boxes of its words when `entities_dir` annotates its image; whether it does.
    ReaderError (a ValueError naming the file and line) for a malformed annotation."""
    from captioner.data.entities import image_id, read_annotation
    from captioner.data.entity_matching import boxes_of_words

    annotation = read_annotation(entities_dir, image_id(result.path))
    if annotation is None:
        return False
    result.boxes = boxes_of_words(annotation, result.caption.words)
    return True

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="captioner caption", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, directories or glob patterns")
    parser.add_argument("--model", default=None,
                        help="a .keras file written by train.py (best.keras), or a shipped model by name: soft (the ensemble, "
                             "the default) or hard (hard attention: one cell a word, outlined in the overlays)")
    parser.add_argument("--beam", type=int, default=3, help="beam size (3: best on Flickr8k); 1 is greedy search")
    parser.add_argument("--length-penalty", type=float, default=None,
                        help="beam search ranks by log p / length ** this (0: plain log probability); "
                             "default: the model's own, chosen on dev (its card says)")
    parser.add_argument("--no-repeat-ngram", type=int, default=None, metavar="N",
                        help="beam search never writes an N-gram twice in one caption (0: repeats allowed); "
                             "default: the model's own")
    parser.add_argument("--max-length", type=int, default=None, help="most words per caption")
    parser.add_argument("--json", action="store_true", help="JSON lines with per-word attention grids")
    parser.add_argument("--overlay-dir", default=None, help="write one attention overlay PNG per image here")
    parser.add_argument("--overlay-style", default="spotlight", choices=["spotlight", "heatmap"],
                        help="spotlight dims what the model did not look at; heatmap draws a colour map")
    parser.add_argument("--colormap", default=DEFAULT_COLORMAP, help="matplotlib colour map of the heatmap style")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the heatmap over the image")
    parser.add_argument("--panel-size", type=float, default=2.2, help="inches per panel (100 pixels per inch)")
    parser.add_argument("--per-word", action="store_true", help="one overlay file per word instead of one per image")
    parser.add_argument("--hard-inference", choices=["argmax", "expected"], default=None,
                        help="hard-attention models: use the most likely location (argmax, marked in overlays) "
                             "or the expected context")
    parser.add_argument("--html", default=None, help="write one self-contained HTML page for all images here")
    parser.add_argument("--entities", default=None, metavar="DIR",
                        help="a Flickr30k Entities folder (Sentences/, Annotations/): overlays and --html also draw, "
                             "for each word, the annotated boxes of the phrases it heads (images it annotates only)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help=f"numpy: the model in NumPy, quick to start; keras: the compiled Keras model, faster "
                             f"per photo; auto (default): numpy for up to {NUMPY_MAX_PHOTOS} photos when it can run "
                             f"the model")
    args = parser.parse_args(argv)
    if args.beam < 1:
        parser.error("--beam must be at least 1")
    if args.no_repeat_ngram is not None and args.no_repeat_ngram < 0:
        parser.error("--no-repeat-ngram must not be negative")
    if args.max_length is not None and args.max_length < 1:
        parser.error("--max-length must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.entities and not (args.html or args.overlay_dir):
        parser.error("--entities draws boxes on overlays or in the HTML report: give --overlay-dir or --html")
    if not 0 <= args.alpha <= 1:
        parser.error("--alpha must be in [0, 1]")
    if args.panel_size <= 0:
        parser.error("--panel-size must be positive")
    if args.colormap != DEFAULT_COLORMAP:  # checking needs matplotlib, which a plain run never imports
        import matplotlib

        if args.colormap not in matplotlib.colormaps:
            parser.error(f"--colormap: unknown colour map {args.colormap!r} (e.g. inferno, viridis, jet, gray)")
    return args


def import_tensorflow_without_matplotlib() -> None:
    """TensorFlow and Keras, quietly; matplotlib stays unloaded unless something imported it already.

    Keras imports matplotlib.pyplot at start-up when it is installed, for plotting helpers captioning
    never uses: 0.3 to 1.3 s on our shared 2-core machine (bench/RESULTS.md, "Cold start"). While
    Keras loads, matplotlib looks absent; afterwards it imports normally (our overlays import it
    themselves), only Keras's own plotting helpers stay without it in this process.
    """
    hide = "matplotlib" not in sys.modules
    if hide:
        sys.modules["matplotlib"] = None  # `import matplotlib` raises ImportError, which Keras expects
    try:
        import_tensorflow_quietly()
    finally:
        if hide and sys.modules.get("matplotlib", "") is None:
            del sys.modules["matplotlib"]


def load_model(path, engine: str = "auto", photos: int = 1) -> Captioner | NumpyCaptioner:
    """The model at `path`, run by NumPy (no TensorFlow to start) or by Keras, as `engine` and the
    number of photos say; ValueError naming the file if it cannot be loaded."""
    if engine == "numpy" or (engine == "auto" and photos <= NUMPY_MAX_PHOTOS):
        from captioner.numpy_model import UnsupportedModel, load_numpy_captioner

        try:
            return load_numpy_captioner(path)
        except UnsupportedModel as error:
            if engine == "numpy":
                raise ValueError(f"{error} (use --engine keras)") from error
    import_tensorflow_without_matplotlib()
    from captioner.model.saving import load_captioner

    return load_captioner(path)


@quiet_on_broken_pipe
def main(argv=None) -> int:
    exit_without_collecting_garbage()
    args = parse_args(argv)
    from captioner.data.images import expand_inputs
    from captioner.model.shipped import default_model_path

    paths, input_errors = expand_inputs(args.inputs)
    model_path = default_model_path(args.model)
    try:
        captioner = load_model(model_path, args.engine, len(paths))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.hard_inference:
        captioner.decoder.hard_inference = args.hard_inference
    if args.entities:
        from captioner.data.entities import check_layout

        try:
            check_layout(args.entities)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    for message in input_errors:
        print(f"error: {message}", file=sys.stderr)
    failures = len(input_errors)
    style = dict(style=args.overlay_style, colormap=args.colormap, alpha=args.alpha, panel_inches=args.panel_size)
    report, annotated = [], 0
    results = caption_files(captioner, paths, args.beam, args.max_length, args.batch_size, args.length_penalty,
                            args.no_repeat_ngram)
    for index, result in enumerate(results):
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
            failures += 1
            continue
        print(result_json(result, captioner) if args.json else f"{result.path}: {result.caption.text}", flush=True)
        if args.entities:
            try:
                annotated += attach_boxes(result, args.entities)
            except ValueError as error:  # a malformed annotation file: say which, draw no boxes, go on
                print(f"error: {error}", file=sys.stderr)
                failures += 1
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
        from captioner.visualize.report import write_report

        decoding = "greedy search" if args.beam == 1 else f"beam search, {args.beam} beams"
        try:
            write_report(report, args.html, notes=f"Model: {model_path}; {decoding}.")
        except OSError as error:
            print(f"error: {error.filename or args.html}: report not written ({error.strerror or error})", file=sys.stderr)
            failures += 1
    if args.entities:
        print(f"annotated boxes drawn for {annotated} of {len(paths)} images (the others have no annotation files in "
              f"{args.entities})", file=sys.stderr)
    if failures:
        print(f"{failures} input(s) failed, {len(paths) + len(input_errors) - failures} captioned", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
