"""What every benchmark shares: the machine it ran on, peak memory, and the results files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SHARED = ROOT.parent / "shared"
FLICKR8K = SHARED / "data" / "flickr8k"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if "KERAS_HOME" not in os.environ and (SHARED / "keras_home").exists():
    os.environ["KERAS_HOME"] = str(SHARED / "keras_home")  # MobileNetV2's ImageNet weights, offline


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine() -> dict:
    import tensorflow as tf

    return {"cores": usable_cores(), "cpu": cpu_model(), "tensorflow": tf.__version__,
            "python": platform.python_version()}


def peak_memory_mib(children: bool = False) -> float:
    """Peak resident memory of this process so far, or of its largest finished child (Linux: KiB, macOS: bytes)."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def append_results(name: str, rows: list[dict]) -> Path:
    """Append dated rows to bench/results/NAME.jsonl (one JSON object per line)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    today = datetime.date.today().isoformat()
    with open(path, "a") as file:
        for row in rows:
            file.write(json.dumps({"date": today, **row}) + "\n")
    return path


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, heading, format)."""
    widths = [max(len(heading), 10) for _, heading, _ in columns]
    print("  ".join(heading.rjust(width) if i else heading.ljust(width + 14)
                    for i, ((_, heading, _), width) in enumerate(zip(columns, widths))))
    for row in rows:
        cells = []
        for i, ((key, _, spec), width) in enumerate(zip(columns, widths)):
            value = row.get(key)
            text = "-" if value is None else format(value, spec)
            cells.append(text.rjust(width) if i else text.ljust(width + 14))
        print("  ".join(cells))


RESULT_PREFIX = "RESULT "


def print_result(result) -> None:
    """What a benchmark's child process hands back to its parent (`run_child`)."""
    print(RESULT_PREFIX + json.dumps(result))


def run_child(command: list[str], name: str):
    """Run one measurement in a process of its own (its own peak memory); its result, or None if it failed."""
    print(f"{name} ...", flush=True)
    process = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode or not lines:
        print(f"error: {name} failed:\n{process.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def run_children(children: list[tuple[list[str], str]]) -> list:
    """`run_child` for each (command, name) in turn; the results of those that succeeded."""
    return [row for row in (run_child(command, name) for command, name in children) if row]
