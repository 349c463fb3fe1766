"""Training speed under each tf.distribute strategy on this machine: one epoch of a Flickr8k subset.

    python bench/distributed_speed.py [--images 1000]

Runs train.py four ways on the same data and global batch (64): one device (XLA on, the default),
one device without XLA, MirroredStrategy over two logical CPU devices, and two
MultiWorkerMirroredStrategy worker processes on loopback addresses (the distributed step is not
XLA-compiled). Reports the training part of the epoch (captions/s), from each run's metrics.jsonl,
and the whole command's wall time. On a machine whose cores one device already keeps busy,
splitting it cannot be faster: this measures the cost of the machinery, not a speed-up.
Appends dated rows to bench/results/distributed_speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

from captioner.training.distribute import local_tf_configs

RUNNER = common.ROOT / "tests" / "distributed_train.py"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(common.FLICKR8K))
    parser.add_argument("--feature-cache", help="where the features are cached (default: the usual cache)")
    parser.add_argument("--images", type=int, default=1000, help="training images (5 captions each)")
    args = parser.parse_args(argv)
    flags = ["--dataset", "flickr8k", "--data-dir", args.data_dir, "--max-train-images", str(args.images),
             "--epochs", "1", "--batch-size", "64"]
    if args.feature_cache:
        flags += ["--feature-cache", args.feature_cache]
    settings = {"one device (XLA)": ([], 1, 1), "one device (no XLA)": (["--no-xla"], 1, 1),
                "mirrored, 2 logical CPUs": (["--strategy", "mirrored"], 2, 1),
                "multiworker, 2 processes": (["--strategy", "multiworker"], 1, 2)}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, (extra, replicas, workers) in settings.items():
            run_dir = Path(scratch) / name.replace(" ", "_").replace(",", "")
            command = [sys.executable, str(RUNNER), "--cpu-replicas", str(replicas), "--", *flags, *extra,
                       "--run-dir", str(run_dir)]
            tf_configs = local_tf_configs(workers) if workers > 1 else [None]
            print(f"{name} ...", flush=True)
            started = time.perf_counter()
            processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                          env={**os.environ, **({"TF_CONFIG": tf_config} if tf_config else {})})
                         for tf_config in tf_configs]
            errors = [process.communicate()[1] for process in processes]
            wall = time.perf_counter() - started
            if any(process.returncode for process in processes):
                print(f"error: {name} failed:\n{errors[0][-2000:]}", file=sys.stderr)
                continue
            epoch = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
            rows.append({"setting": name, "replicas": replicas * workers, "captions": epoch["captions"],
                         "train_seconds": epoch["train_seconds"], "captions_per_second": epoch["captions_per_second"],
                         "command_seconds": wall, **common.machine()})
    if rows:
        print(f"\n{rows[0]['cpu']}, {rows[0]['cores']} cores, TensorFlow {rows[0]['tensorflow']}; "
              f"{rows[0]['captions']} captions, global batch 64")
        common.print_table(rows, [("setting", "setting", "s"), ("captions_per_second", "captions/s", ".0f"),
                                  ("train_seconds", "train s", ".1f"), ("command_seconds", "command s", ".0f")])
        print(f"results appended to {common.append_results('distributed_speed', rows)}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
