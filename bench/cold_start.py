"""Cold start: `python predict.py PHOTO` as a new user runs it, and where its time goes.

    python bench/cold_start.py                                # the shipped model, beam 3, 5 runs per setting
    python bench/cold_start.py --baseline /tmp/old_checkout   # before/after: each run also in the other checkout
    python bench/cold_start.py --sections split --variant-repeats 5
    python bench/cold_start.py --litert exported/soft           # and an exported LiteRT file, the same photos

Sections, each run in processes of their own:
  cold      the command end to end, a new process per run: median, min and max wall seconds over --repeats
            runs (and the process's CPU seconds), for 1 photo and 10 photos with predict.py (the NumPy model) and
            with `--engine keras`, then 1 photo with `python -m captioner caption`, with --html and with
            --overlay-dir (--variant-repeats runs each)
  split     one process doing what the command does, timed in parts, with each --engine: import (the command's
            modules, and TensorFlow for the Keras model), load the model, the first caption (one photo), later
            captions (median of one photo each); --variant-repeats such processes, each part's median reported
With --litert EXPORT_DIR (`captioner export MODEL EXPORT_DIR --format litert`), the cold section also runs
`bench/litert_caption.py EXPORT_DIR` (ai-edge-litert, NumPy and Pillow alone) on 1, 10 and 100 photos, beside
predict.py on 100 photos: the warm cost of a photo is (100 photos - 10 photos) / 90 for each.
With --baseline, every run of this checkout follows one of the same command in the other checkout, so that
both see the same machine (a shared one drifts by tens of per cent within minutes). The machine's float32 matmul rate (2048x2048, from bench/flop_ceiling.py) is measured before and after, and the
load average is printed beside each setting: this 2-core VM is shared and its speed drifts. Photos: the first
Flickr8k test photos from ../shared when present, otherwise data/examples (repeated up to ten). Every run must
print the same captions; a run that differs is reported. Rows are appended to bench/results/cold_start.jsonl.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import common

SECTIONS = ["cold", "split"]
MANY_PHOTOS = 10
LITERT_MANY = 100  # photos for the warm comparison with --litert (predict.py's NumPy path takes up to 100)
MATMUL_SHAPE = (2048, 2048, 2048)  # the square product bench/flop_ceiling.py reports as the machine's best rate
MATMUL_SECONDS = 2.0
LATER_CAPTIONS = 5  # single-photo calls timed after the first, in the split section
SPLIT_PARTS = ["import", "load", "first_caption"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(common.ROOT), help="checkout whose predict.py and captioner are run")
    parser.add_argument("--baseline", help="another checkout, run alternately with --root (e.g. the code before a change)")
    parser.add_argument("--model", help="a .keras model (default: the checkout's shipped one)")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="runs of predict.py with 1 and with 10 photos")
    parser.add_argument("--variant-repeats", type=int, default=3,
                        help="runs of the other settings (python -m captioner, --html, --overlay-dir) and of the split")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--engine", default="numpy,keras", help="the split section's engines (predict.py --engine)")
    parser.add_argument("--litert", metavar="EXPORT_DIR", help="also time this exported LiteRT file (cold section)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if set(args.sections.split(",")) - set(SECTIONS + ["matmul"]):
        parser.error(f"sections are {', '.join(SECTIONS)}")
    return args


def photos(count: int) -> list[str]:
    """The first `count` Flickr8k test photos, or the repository's example photos, cycled."""
    listing = common.FLICKR8K / "Flickr_8k.testImages.txt"
    if listing.exists():
        names = listing.read_text().split()[:count]
        return [str(common.FLICKR8K / "Flicker8k_Dataset" / name) for name in names]
    examples = sorted(str(p) for p in (common.ROOT / "data" / "examples").glob("*.jpg"))
    return [examples[index % len(examples)] for index in range(count)]


def child_environment() -> dict:
    """The user's environment, offline and without a GPU, with no model chosen by $CAPTIONER_MODEL."""
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    environment.pop("CAPTIONER_MODEL", None)
    return environment


def timed_run(command: list[str], root: str) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system) and stdout of one command run in `root`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.run(command, cwd=root, env=child_environment(), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed ({process.returncode}):\n{process.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, process.stdout


def cold_settings(args, scratch: str) -> list[tuple[str, list[str], int, int]]:
    """(name, command, runs, photos) for each cold setting."""
    python, one, many = sys.executable, photos(1), photos(MANY_PHOTOS)
    options = ["--beam", str(args.beam)] + (["--model", args.model] if args.model else [])
    # The Keras model on the same photos: the path every run took before the NumPy model (a checkout from
    # before `--engine` has only that path, so with --baseline these rows are left out).
    keras = [] if args.baseline else [
        ("--engine keras, 1 photo", [python, "predict.py", *one, *options, "--engine", "keras"], args.repeats, 1),
        (f"--engine keras, {MANY_PHOTOS} photos", [python, "predict.py", *many, *options, "--engine", "keras"],
         args.repeats, MANY_PHOTOS),
    ]
    litert = [] if not args.litert else [
        (f"predict.py, {LITERT_MANY} photos", [python, "predict.py", *photos(LITERT_MANY), *options], args.variant_repeats,
         LITERT_MANY),
        *((f"LiteRT file, {count} photo{'s' if count > 1 else ''}",
           [python, str(common.ROOT / "bench" / "litert_caption.py"), args.litert, *photos(count)],
           args.repeats if count < LITERT_MANY else args.variant_repeats, count) for count in (1, MANY_PHOTOS, LITERT_MANY)),
    ]
    return [
        *litert,
        ("predict.py, 1 photo", [python, "predict.py", *one, *options], args.repeats, 1),
        (f"predict.py, {MANY_PHOTOS} photos", [python, "predict.py", *many, *options], args.repeats, MANY_PHOTOS),
        *keras,
        ("-m captioner caption, 1 photo", [python, "-m", "captioner", "caption", *one, *options],
         args.variant_repeats, 1),
        ("--html, 1 photo", [python, "predict.py", *one, *options, "--html", f"{scratch}/report.html"],
         args.variant_repeats, 1),
        ("--overlay-dir, 1 photo",
         [python, "predict.py", *one, *options, "--overlay-dir", f"{scratch}/overlays"], args.variant_repeats, 1),
    ]


def checkouts(args) -> list[tuple[str, str]]:
    """(label, root) of each checkout measured, the baseline first."""
    return ([("baseline", args.baseline)] if args.baseline else []) + [("this", args.root)]


def run_cold(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, command, runs, count in cold_settings(args, scratch):
            print(f"cold: {name} x {runs} ...", flush=True)
            load_before = os.getloadavg()[0]
            measured = {label: [] for label, _ in checkouts(args)}  # label -> [(wall, CPU, stdout)]
            for _ in range(runs):
                for label, root in checkouts(args):
                    measured[label].append(timed_run(command, root))
            for label, root in checkouts(args):
                walls, cpus, outputs = zip(*measured[label])
                captions = outputs[0].splitlines()
                rows.append({"section": "cold", "checkout": label, "root": root, "setting": name, "photos": count,
                             "seconds": statistics.median(walls), "min_seconds": min(walls), "max_seconds": max(walls),
                             "cpu_seconds": statistics.median(cpus), "runs": runs,
                             "load_average": [load_before, os.getloadavg()[0]],
                             "first_caption": captions[0].split(": ", 1)[-1] if captions else None,
                             "runs_with_other_captions": sum(output != outputs[0] for output in outputs)})
    return rows


def run_split(args) -> list[dict]:
    """In this process: what the command does, part by part (`--one split`, run in a child)."""
    sys.path.insert(0, args.root)
    load_before = os.getloadavg()[0]
    marks = [(time.perf_counter(), time.process_time())]  # (wall, CPU) after each part

    def mark():
        marks.append((time.perf_counter(), time.process_time()))

    from captioner.cli import caption as command

    numpy_engine = args.engine == "numpy"
    if numpy_engine:
        import captioner.numpy_model  # noqa: F401 (the import is what this part times)
    else:
        from captioner.utils.quiet import import_tensorflow_quietly

        # The command's own TensorFlow import (a checkout from before it kept matplotlib out has only the plain one).
        getattr(command, "import_tensorflow_without_matplotlib", import_tensorflow_quietly)()
    from captioner.model.shipped import default_model_path

    mark()
    if hasattr(command, "load_model"):
        captioner = command.load_model(args.model or default_model_path(), args.engine)
    else:  # a checkout from before the NumPy model
        from captioner.model.saving import load_captioner

        captioner = load_captioner(args.model or default_model_path())
    mark()
    paths = photos(1 + LATER_CAPTIONS)
    first = next(command.caption_files(captioner, paths[:1], beam_size=args.beam)).caption.text
    mark()
    later = []
    for path in paths[1:]:
        call_started = time.perf_counter()
        list(command.caption_files(captioner, [path], beam_size=args.beam))
        later.append(time.perf_counter() - call_started)
    row = {"section": "split", "setting": f"{args.engine} model, 1 photo, beam {args.beam}", "later_caption_seconds": statistics.median(later),
           "first_caption": first, "load_average": [load_before, os.getloadavg()[0]],
           "peak_memory_mib": common.peak_memory_mib()}
    for part, (start, end) in zip(SPLIT_PARTS, itertools.pairwise(marks)):
        row[f"{part}_seconds"], row[f"{part}_cpu_seconds"] = end[0] - start[0], end[1] - start[1]
    row["seconds"] = marks[-1][0] - marks[0][0]
    return [row]


def split_medians(args) -> list[dict]:
    """The split section in --variant-repeats processes per checkout and engine (alternating): each number the median."""
    engines = args.engine.split(",")
    runs = {(label, engine): [] for label, _ in checkouts(args) for engine in engines}
    for _ in range(args.variant_repeats):
        for label, root in checkouts(args):
            for engine in engines:
                runs[label, engine].extend(child(args, "split", root, engine))
    rows = []
    roots = dict(checkouts(args))
    for (label, engine), measured in runs.items():
        root = roots[label]
        if not measured:
            continue
        first, last = measured[0], measured[-1]
        row = dict(first, checkout=label, root=root, runs=len(measured),
                   load_average=[first["load_average"][0], last["load_average"][1]])
        for key in first:
            if key.endswith("seconds"):
                row[key] = statistics.median(run[key] for run in measured)
        rows.append(row)
    return rows


def run_matmul(args) -> list[dict]:
    from flop_ceiling import matmul_rate

    from captioner.utils.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    return [{"section": "matmul", "gflops": matmul_rate(*MATMUL_SHAPE, MATMUL_SECONDS), **common.machine()}]


def child(args, section: str, root: str | None = None, engine: str = "keras") -> list[dict]:
    command = [sys.executable, __file__, "--one", section, "--root", root or args.root, "--beam", str(args.beam),
               "--engine", engine]
    return common.run_child(command + (["--model", args.model] if args.model else []), section) or []


def report(rows: list[dict], matmul: list[dict], args) -> None:
    rates = " and ".join(f"{row['gflops']:.0f}" for row in matmul)
    facts = matmul[0] if matmul else {}
    print(f"\n{facts.get('cpu', '?')}, {facts.get('cores', '?')} cores, TensorFlow {facts.get('tensorflow', '?')}; "
          f"float32 matmul {rates} GFLOP/s (at the start and at the end)")
    for label, root in checkouts(args):
        print(f"  {label}: {root}")
    for row in rows:
        row["load"] = "{:.1f} -> {:.1f}".format(*row["load_average"])
        row["matmul_gflops"] = [m["gflops"] for m in matmul]
        row["label"] = f"{row['checkout']}: {row['setting']}" if args.baseline else row["setting"]
    cold = [r for r in rows if r["section"] == "cold"]
    if cold:
        common.print_table(cold,
                           [("label", "checkout: cold command" if args.baseline else "cold command", "s"), ("seconds", "median s", ".2f"),
                            ("min_seconds", "min s", ".2f"), ("max_seconds", "max s", ".2f"),
                            ("cpu_seconds", "CPU s", ".2f"), ("runs", "runs", "d"), ("load", "load avg", "s")])
    for row in (r for r in rows if r["section"] == "split"):
        parts = ", ".join(f"{part.replace('_', ' ')} {row[part + '_seconds']:.2f} s (CPU {row[part + '_cpu_seconds']:.2f})"
                          for part in SPLIT_PARTS)
        print(f"\none process ({row['runs']} runs, medians), {row['label']}: {parts}, later captions "
              f"{row['later_caption_seconds']:.3f} s; load average {row['load']}")
    for row in rows:
        if row.get("runs_with_other_captions"):
            print(f"warning: {row['label']}: {row['runs_with_other_captions']} run(s) printed other captions")
    captions = {row["first_caption"] for row in rows if row.get("first_caption") and row.get("photos", 1) == 1}
    print(f"caption of the first photo: {' | '.join(sorted(captions))}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        runners = {"split": run_split, "matmul": run_matmul}
        common.print_result(runners[args.one](args))
        return 0
    matmul = child(args, "matmul")
    rows = []
    for section in args.sections.split(","):
        rows.extend(run_cold(args) if section == "cold" else split_medians(args))
    matmul += child(args, "matmul")
    if rows:
        report(rows, matmul, args)
        print(f"results appended to {common.append_results('cold_start', rows)}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
