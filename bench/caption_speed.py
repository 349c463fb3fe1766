"""Captioning speed from image files: one photo end to end, batches, and feature extraction.

    python bench/caption_speed.py                      # the shipped model, Flickr8k test photos
    python bench/caption_speed.py --model runs/x/best.keras --images 200

Sections, each in a process of its own (so each has its own peak memory):
  single      one photo at a time, end to end: read and decode the JPEG, resize, encode,
              beam 3 (no overlay); the median and 90th percentile of --repeats calls after two
              warm-up calls, plus the model's load time and the first (compiling) call
  cli         `python predict.py PHOTO` as a user runs it: process start to exit
  batch       --images photos captioned in batches of 32: images/s for greedy, beam 3 and beam 5
  extract     feature extraction into an empty cache (decode, resize, encode, write): images/s
Prints a table and appends dated rows to bench/results/caption_speed.jsonl.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

SECTIONS = ["single", "cli", "batch", "extract"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a .keras model (default: the shipped one)")
    parser.add_argument("--data-dir", default=str(common.FLICKR8K))
    parser.add_argument("--images", type=int, default=200, help="photos for the batch and extract sections")
    parser.add_argument("--repeats", type=int, default=20, help="timed single-photo calls")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if set(args.sections.split(",")) - set(SECTIONS):
        parser.error(f"sections are {', '.join(SECTIONS)}")
    return args


def test_photos(data_dir: str, count: int) -> list[Path]:
    from captioner.config import Config
    from captioner.data.datasets import load_splits

    return load_splits(Config.for_dataset("flickr8k", data_dir=data_dir))["test"].paths[:count]


def run_one(args) -> list[dict]:
    from captioner.utils.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from captioner.cli.caption import caption_files
    from captioner.model.saving import default_model_path, load_captioner

    model_path = args.model or str(default_model_path())
    photos = test_photos(args.data_dir, max(args.images, 1))
    base = {"section": args.one, "model": model_path, **common.machine()}
    if args.one == "cli":
        started = time.perf_counter()
        subprocess.run([sys.executable, str(common.ROOT / "predict.py"), str(photos[0]), "--model", model_path],
                       check=True, capture_output=True)
        seconds = time.perf_counter() - started
        return [{**base, "setting": "predict.py, 1 photo, beam 3", "seconds": seconds,
                 "peak_memory_mib": common.peak_memory_mib(children=True)}]

    started = time.perf_counter()
    captioner = load_captioner(model_path)
    load_seconds = time.perf_counter() - started
    rows = []

    def caption(paths, beam_size):  # what predict.py does, overlays off
        return list(caption_files(captioner, [str(p) for p in paths], beam_size=beam_size, batch_size=32))

    if args.one == "single":
        started = time.perf_counter()
        caption([photos[0]], 3)
        first = time.perf_counter() - started
        caption([photos[1]], 3)
        times = []
        for index in range(args.repeats):
            photo = photos[index % len(photos)]
            started = time.perf_counter()
            caption([photo], 3)
            times.append(time.perf_counter() - started)
        times.sort()
        rows.append({**base, "setting": "1 photo, beam 3", "seconds": statistics.median(times),
                     "p90_seconds": times[int(0.9 * (len(times) - 1))], "first_call_seconds": first,
                     "load_seconds": load_seconds, "repeats": len(times)})
        # The encoder runs once per photo and the beams share its features; encoding a copy per beam
        # (what a search over images rather than features would do) would cost this much more.
        import numpy as np

        from captioner.data.images import load_image

        image = load_image(photos[0], captioner.encoder.image_size)[None].astype(np.float32)
        for copies in (1, 3):
            batch = np.repeat(image, copies, axis=0)
            captioner.encoder(batch)
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                np.asarray(captioner.encoder(batch))
                times.append(time.perf_counter() - started)
            rows.append({**base, "setting": f"encoder only, {copies} cop{'y' if copies == 1 else 'ies'}",
                         "seconds": statistics.median(times)})
    elif args.one == "batch":
        for beam in (1, 3, 5):
            caption(photos[:32], beam)  # compile
            started = time.perf_counter()
            caption(photos, beam)
            seconds = time.perf_counter() - started
            rows.append({**base, "setting": "greedy" if beam == 1 else f"beam {beam}", "images": len(photos),
                         "images_per_second": len(photos) / seconds})
    elif args.one == "extract":
        from captioner.data.features import FeatureStore

        with tempfile.TemporaryDirectory() as cache:
            store = FeatureStore(cache, captioner.encoder)
            started = time.perf_counter()
            store.extract_missing(photos, "photos")
            seconds = time.perf_counter() - started
        rows.append({**base, "setting": f"{captioner.encoder.backbone_name} {captioner.encoder.image_size} px",
                     "images": len(photos), "images_per_second": len(photos) / seconds})
    peak = common.peak_memory_mib()
    return [{"peak_memory_mib": peak, **row} for row in rows]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        common.print_result(run_one(args))
        return 0
    rows = []
    for section in args.sections.split(","):
        command = [sys.executable, __file__, "--one", section, "--data-dir", args.data_dir,
                   "--images", str(args.images), "--repeats", str(args.repeats)]
        if args.model:
            command += ["--model", args.model]
        rows.extend(common.run_child(command, section) or [])
    if rows:
        print(f"\n{rows[0]['cpu']}, {rows[0]['cores']} cores, TensorFlow {rows[0]['tensorflow']}, {rows[0]['model']}")
        common.print_table(rows, [("section", "section", "s"), ("setting", "setting", "s"), ("seconds", "seconds", ".3f"),
                                  ("p90_seconds", "p90 s", ".3f"), ("images_per_second", "images/s", ".1f"),
                                  ("peak_memory_mib", "peak MiB", ".0f")])
        print(f"results appended to {common.append_results('caption_speed', rows)}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
