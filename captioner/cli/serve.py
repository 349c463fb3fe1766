"""A local web page and JSON API: drop photos into a browser page and see where the model looked.

    captioner serve                                  # the shipped models, http://127.0.0.1:8000
    captioner serve --model runs/x/best.keras --port 8080
    curl -F image=@photo.jpg -F beam=3 http://127.0.0.1:8000/api/caption

Loads the models once into a pool of worker processes (the NumPy copy: no TensorFlow), serves until
Ctrl-C. Listens on this machine only unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from captioner.model.shipped import SHIPPED_MODELS, default_model_path
from captioner.serve.captioning import MAX_BEAM


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="captioner serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", metavar="NAME_OR_PATH",
                        help="a shipped model's name (soft, hard) or a .keras file; repeat to serve several "
                             "(default: every shipped model, soft first)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="captioning processes (default: 2, or 1 on one core)")
    parser.add_argument("--queue", type=int, default=16, help="uploads that may wait for a worker; more get 503")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds an upload may take before a 504")
    parser.add_argument("--beam", type=int, default=3, help=f"beam size when a request names none (1 to {MAX_BEAM})")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be from 1 to 65535, not {args.port}")
    for name in ("workers", "queue"):
        if getattr(args, name) < (1 if name == "workers" else 0):
            parser.error(f"--{name} must be {'positive' if name == 'workers' else 'zero or more'}")
    if not args.timeout > 0:
        parser.error("--timeout must be positive")
    if not 1 <= args.beam <= MAX_BEAM:
        parser.error(f"--beam must be from 1 to {MAX_BEAM}")
    return args


def served_models(choices: list[str] | None) -> dict[str, str]:
    """name -> path of every model to serve; a path's name is its file's stem."""
    if not choices:
        return {name: str(path) for name, path in SHIPPED_MODELS.items() if path.exists()} or \
            {"default": str(default_model_path())}
    models = {}
    for choice in choices:
        path = default_model_path(choice)
        name = choice if choice in SHIPPED_MODELS and path == SHIPPED_MODELS[choice] else Path(choice).stem
        models[name] = str(path)
    return models


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv=None) -> int:
    args = parse_args(argv)
    models = served_models(args.model)
    for path in models.values():
        if not Path(path).is_file():
            print(f"error: {path}: no such model file", file=sys.stderr)
            return 2
    from captioner.numpy_model import UnsupportedModel, load_numpy_captioner

    for path in models.values():  # fail here, in one line, rather than in every worker
        try:
            load_numpy_captioner(path)
        except (ValueError, UnsupportedModel) as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            return 2
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the server",
              file=sys.stderr)
    import uvicorn

    from captioner.serve.app import Settings, create_app

    host = f"[{args.host}]" if ":" in args.host else args.host
    settings = Settings(models, next(iter(models)), args.workers, args.queue, args.timeout, default_beam=args.beam,
                        url=f"http://{host}:{args.port}/")
    try:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
