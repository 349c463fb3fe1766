"""Load on `captioner serve`, on loopback only: N clients for T seconds, good photos with bad uploads mixed in.

    python bench/serve_load.py [--clients 8] [--seconds 60] [--bad 100] [--beam 3] [--photos DIR] [--out FILE]

Starts the server in a subprocess on a free 127.0.0.1 port (the shipped soft model unless --model), waits for
it, then runs the clients in threads. Each client sends photos from DIR (Flickr8k's, or data/examples/) one
after another; --bad uploads (not an image, empty, truncated, wrong beam, no file) are spread over the run.
Bounded: stops at --seconds or --max-requests, whichever comes first. Prints and writes (--out, JSON) requests
per second, p50 / p95 latency of the good uploads, the status counts, and the server's memory (all its
processes) before, at its peak and after.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_serve import Server

BAD_UPLOADS = [  # (fields, files, what it is)
    ({}, {"image": ("notes.txt", b"not a photo")}, "not an image"),
    ({}, {"image": ("empty.jpg", b"")}, "empty"),
    ({"beam": "99"}, {"image": ("photo.jpg", None)}, "wrong beam"),
    ({}, {"other": ("photo.jpg", None)}, "no image field"),
    ({}, {"image": ("cut.jpg", "truncated")}, "truncated"),
]


def process_tree_rss(pid: int) -> int:
    """Resident memory (bytes) of a process and all its descendants (the workers), from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])  # the field after the state: the parent's pid
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    tree, total = {pid}, 0
    for _ in range(4):  # workers, and any process they start
        tree |= {child for child, parent in parents.items() if parent in tree}
    for member in tree:
        try:
            with open(f"/proc/{member}/status") as status:
                total += next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            continue
    return total


def photos_from(directory: Path, count: int) -> list[tuple[str, bytes]]:
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    random.Random(0).shuffle(paths)
    return [(p.name, p.read_bytes()) for p in paths[:count]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--bad", type=int, default=100, help="bad uploads mixed into the load")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--model", default="soft")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--photos", default=str(ROOT.parent / "shared/data/flickr8k/Flicker8k_Dataset"))
    parser.add_argument("--out", help="write the results here (JSON)")
    args = parser.parse_args(argv)
    directory = Path(args.photos) if Path(args.photos).is_dir() else ROOT / "data" / "examples"
    photos = photos_from(directory, 200)

    server = Server("--model", args.model, "--workers", str(args.workers))
    before = process_tree_rss(server.process.pid)
    peak = [before]
    stop = threading.Event()

    def watch_memory():
        while not stop.is_set():
            peak[0] = max(peak[0], process_tree_rss(server.process.pid))
            time.sleep(0.2)

    lock = threading.Lock()
    good_latencies, statuses, bad_statuses = [], {}, {}
    requests = itertools.count()
    bad_due = [0]
    deadline = time.time() + args.seconds

    def client(number: int):
        rng = random.Random(number)
        while time.time() < deadline and not stop.is_set():
            index = next(requests)
            if index >= args.max_requests:
                return
            elapsed = 1 - (deadline - time.time()) / args.seconds  # share of the run gone by
            with lock:
                send_bad = bad_due[0] < args.bad and bad_due[0] < elapsed / 0.8 * args.bad + 1  # all within 80 %
                if send_bad:
                    bad_due[0] += 1
            name, data = photos[rng.randrange(len(photos))]
            if send_bad:
                fields, files, _ = BAD_UPLOADS[index % len(BAD_UPLOADS)]
                files = {field: (filename, data if payload is None else data[:500] if payload == "truncated"
                                 else payload) for field, (filename, payload) in files.items()}
                status, _, _ = server.post(fields, files)
                with lock:
                    bad_statuses[status] = bad_statuses.get(status, 0) + 1
                continue
            started = time.time()
            status, result, _ = server.post({"beam": str(args.beam)}, {"image": (name, data)})
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200 and result.get("words"):
                    good_latencies.append(time.time() - started)

    watcher = threading.Thread(target=watch_memory, daemon=True)
    watcher.start()
    started = time.time()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.time() - started
    time.sleep(2)  # let the workers settle
    after = process_tree_rss(server.process.pid)
    stop.set()
    watcher.join()
    exit_status = server.stop()

    good_latencies.sort()

    def percentile(q):
        return good_latencies[min(len(good_latencies) - 1, int(q * len(good_latencies)))] if good_latencies else None

    results = {
        "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "model": args.model, "beam": args.beam,
        "clients": args.clients, "workers": args.workers, "seconds": round(wall, 1), "photos_from": str(directory),
        "captioned": len(good_latencies), "photos_per_second": round(len(good_latencies) / wall, 2),
        "p50_s": round(percentile(0.5), 3), "p95_s": round(percentile(0.95), 3),
        "good_statuses": statuses, "bad_uploads": sum(bad_statuses.values()), "bad_statuses": bad_statuses,
        "memory_before_mib": round(before / 2**20), "memory_peak_mib": round(peak[0] / 2**20),
        "memory_after_mib": round(after / 2**20), "server_exit_status": exit_status,
    }
    print(json.dumps(results, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    errors = sum(count for status, count in statuses.items() if status != 200)
    bad_5xx = sum(count for status, count in bad_statuses.items() if status >= 500)
    return 0 if errors == 0 and bad_5xx == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
