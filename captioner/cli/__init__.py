"""The `captioner` command: one entry point, a subcommand per job.

    captioner caption photo.jpg --overlay-dir overlays/     # captioner/cli/caption.py
    captioner train --dataset flickr8k --data-dir DIR       # captioner/cli/train.py
    captioner evaluate --split test --beam 3 ...            # captioner/evaluation/evaluate.py
    captioner ensemble OUT.keras A.keras B.keras            # captioner/cli/ensemble.py
    captioner compare A/captions.json B/captions.json ...   # captioner/evaluation/compare.py
    captioner serve --port 8000                             # captioner/cli/serve.py

`python -m captioner ...` is the same command without installing; `predict.py` and `train.py`
at the repository root are `captioner caption` and `captioner train`.
"""

from __future__ import annotations

import atexit
import functools
import gc
import importlib
import os
import sys

# subcommand -> (module with a main(argv) -> int, one line of help); modules load only when chosen
COMMANDS = {
    "caption": ("captioner.cli.caption", "caption photos and draw where the model looked for each word"),
    "train": ("captioner.cli.train", "train a model (with no options: the synthetic-scenes demo)"),
    "evaluate": ("captioner.evaluation.evaluate", "COCO caption metrics of free-running captions on a split"),
    "ensemble": ("captioner.cli.ensemble", "average several trained models' decoders into one model file"),
    "compare": ("captioner.evaluation.compare", "paired bootstrap of BLEU-4 and CIDEr-D between two models' captions"),
    "grounding": ("captioner.evaluation.grounding", "where attention lands on real photos (Flickr30k Entities boxes)"),
    "export": ("captioner.cli.export", "a SavedModel and a LiteRT file with the beam search inside, loadable without captioner"),
    "serve": ("captioner.cli.serve", "a local web page and JSON API: drop a photo, see where the model looked"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "usage: captioner COMMAND [options]   (captioner COMMAND --help for its options)\n\ncommands:\n" + "\n".join(lines)


def quiet_on_broken_pipe(main):
    """`main` ending with status 1 and no traceback when its reader stops reading (`captioner --help | head -1`).

    What Python's documentation advises (signal module, "Note on SIGPIPE"): stdout is pointed at
    /dev/null, so the flush at exit does not fail a second time.
    """

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            try:
                return main(*args, **kwargs)
            finally:
                sys.stdout.flush()  # a write still buffered fails here, not at exit
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1

    return wrapped


def exit_without_collecting_garbage() -> None:
    """At exit, skip the garbage collection of everything still alive (TensorFlow's and Keras's objects).

    That collection took about 1 s of a 8 s cold `predict.py` on our shared 2-core machine (0.1 s
    with this; bench/RESULTS.md, "Cold start"). `gc.freeze` moves every object out of the collector's
    reach; run from `atexit`, it happens only when the interpreter is ending anyway, after the
    command's files are written and closed, so a process that runs several commands (the tests)
    still collects its garbage in between.
    """
    atexit.unregister(gc.freeze)  # registered once, however many commands this process runs
    atexit.register(gc.freeze)


@quiet_on_broken_pipe
def main(argv=None) -> int:
    exit_without_collecting_garbage()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)
