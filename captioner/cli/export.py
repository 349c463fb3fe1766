"""Export a trained model as a TensorFlow SavedModel and a LiteRT file with its beam search inside.

    captioner export MODEL OUT_DIR [--format saved_model|litert|both] [--beam 3]
    captioner export soft exported/soft        # a shipped model by name
    captioner export hard exported/hard-int8 --format litert --litert-weights int8

OUT_DIR/saved_model loads with TensorFlow alone (`tf.saved_model.load`), no captioner needed: its
`serving_default` signature takes uint8 images (B, S, S, 3) and returns every beam's word ids, words,
lengths, scores and per-word attention; `caption_encoded` takes one JPEG or PNG file's bytes.
OUT_DIR/captioner.tflite runs with `ai-edge-litert` and NumPy alone: uint8 images in, attention, lengths, scores and
word ids out. OUT_DIR/captioner.json holds the vocabulary, grid, decoding and the LiteRT outputs' order. docs/deploy.md shows the use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioner.utils.quiet import import_tensorflow_quietly


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="captioner export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .keras model, or a shipped model by name (soft, hard)")
    parser.add_argument("out_dir")
    parser.add_argument("--format", default="both", choices=["saved_model", "litert", "both"],
                        help="saved_model (OUT_DIR/saved_model), litert (OUT_DIR/captioner.tflite) or both (default)")
    parser.add_argument("--beam", type=int, default=3, help="beam size, fixed in the exported graph (1 to 10)")
    parser.add_argument("--litert-weights", default="float32", choices=["float32", "float16", "int8"],
                        help="how the LiteRT file stores its weights: float32 (default), float16 (half the size) or "
                             "int8 (a quarter; dynamic-range quantisation); docs/deploy.md gives each one's scores")
    args = parser.parse_args(argv)
    if not 1 <= args.beam <= 10:
        parser.error(f"--beam must be from 1 to 10, not {args.beam}")
    from captioner.model.shipped import default_model_path

    path = default_model_path(args.model)
    if not path.is_file():
        print(f"error: {path}: no such model file", file=sys.stderr)
        return 2
    import_tensorflow_quietly()
    from captioner.model.export import export
    from captioner.model.saving import load_captioner

    try:
        written = export(load_captioner(path), args.out_dir, args.format, args.beam, args.litert_weights)
    except ValueError as error:
        print(f"error: {path}: {error}", file=sys.stderr)
        return 2
    print("Wrote " + ", ".join(str(Path(p)) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
