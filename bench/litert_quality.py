"""What the LiteRT file's smaller weights cost: captions and maps of float32, float16 and int8 files on a split.

    python bench/litert_quality.py --model hard --split val                  # the three files on Flickr8k dev
    python bench/litert_quality.py --model soft --split test --limit 50 --keras   # and the Keras model beside

Exports MODEL once per weight storage (`captioner export --format litert --litert-weights W`), runs each file
with ai-edge-litert on the split's photos one at a time (uint8 at the encoder's size, read as the command line
reads them), and reports for each:
* captions: BLEU-4, METEOR, CIDEr-D (pycocoevalcap, as `captioner evaluate`), and how many are word for word
  those of the float32 file (and of the Keras model with --keras);
* maps: the largest difference of any attention weight from the float32 file's, on the captions both wrote;
  and, where Flickr30k Entities annotates the photo, how often the map of a word it wrote points inside the boxes
  of a phrase that word heads in the references (the pointing game on free-running captions: `captioner
  grounding` scores teacher-forced maps, which an exported file cannot produce);
* the file's size against the `.keras` file's.
Appends dated rows to bench/results/litert_quality.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import common

WEIGHTS = ("float32", "float16", "int8")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="hard", help="a .keras file or a shipped model by name (soft, hard)")
    parser.add_argument("--data-dir", default=str(common.FLICKR8K))
    parser.add_argument("--entities", default=str(common.SHARED / "data" / "flickr30k_entities"))
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--limit", type=int, help="the split's first N photos")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--weights", default=",".join(WEIGHTS))
    parser.add_argument("--keras", action="store_true", help="also caption with the Keras model and compare")
    parser.add_argument("--out", help="where the exported files go (default: a temporary folder)")
    return parser.parse_args(argv)


def run_file(path: Path, images) -> list[dict]:
    """Each photo through the LiteRT file alone: the best beam's word ids, length and attention (T, L)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=common.usable_cores())
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    names = json.loads((path.parent / "captioner.json").read_text())["litert_outputs"]
    results = []
    for image in images:
        interpreter.set_tensor(index, image[None])
        interpreter.invoke()
        out = {name: interpreter.get_tensor(d["index"]) for name, d in zip(names, interpreter.get_output_details())}
        length = int(out["lengths"][0, 0])
        results.append({"ids": out["word_ids"][0, 0, :length].tolist(),
                        "attention": np.asarray(out["attention"][0, 0, : length + 1], np.float32)})
    return results


def pointing_on_written_words(results, words_of, annotations, grid) -> tuple[float, int]:
    """Share of written words heading a boxed reference phrase whose map's top cell lies in one of its boxes."""
    from captioner.data.entity_matching import boxes_of_words
    from captioner.evaluation.grounding_scores import pointing

    hits, words = 0.0, 0
    for result, annotation in zip(results, annotations):
        if annotation is None:
            continue
        written = words_of(result["ids"])
        for step, boxes in enumerate(boxes_of_words(annotation, written)):
            if len(boxes):
                hits += pointing(result["attention"][step], boxes, grid)
                words += 1
    return hits / max(words, 1), words


def main(argv=None) -> int:
    args = parse_args(argv)
    from captioner.utils.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import numpy as np

    from captioner.config import Config
    from captioner.data.datasets import load_splits
    from captioner.data.entities import image_id, read_annotation
    from captioner.data.images import load_image
    from captioner.evaluation.evaluate import evaluate_captions
    from captioner.model.caption import Caption
    from captioner.model.export import export
    from captioner.model.saving import load_captioner
    from captioner.model.shipped import default_model_path

    model_path = default_model_path(args.model)
    captioner = load_captioner(model_path)
    split = load_splits(Config(dataset="flickr8k", data_dir=args.data_dir))[args.split]
    if args.limit:
        split.captions, split.paths = split.captions[: args.limit], split.paths[: args.limit]
    size, grid = captioner.encoder.image_size, captioner.grid
    images = np.stack([load_image(path, size) for path in split.paths]).astype(np.uint8)
    entities = Path(args.entities)
    annotations = [read_annotation(entities, image_id(path)) if entities.is_dir() else None for path in split.paths]
    vocabulary = captioner.vocabulary

    def words_of(ids):
        return vocabulary.decode(list(ids) + [vocabulary.end_id])

    def as_captions(results):
        return [Caption(words_of(r["ids"]), r["attention"].reshape(-1, *grid)) for r in results]

    def measured(variant, results, reference, **extra) -> dict:
        """One row: the captions' scores, their agreement with `reference` (the float32 file's), their maps."""
        scores, _ = evaluate_captions(as_captions(results), split)
        same = [a["ids"] == b["ids"] for a, b in zip(results, reference)]
        difference = max((float(np.abs(a["attention"] - b["attention"]).max()) for a, b, s in
                          zip(results, reference, same) if s), default=0.0)
        point, words = pointing_on_written_words(results, words_of, annotations, grid)
        row = {"variant": variant, "model": str(model_path), "split": args.split, "images": len(images),
               "beam": args.beam, "bleu4": scores.get("BLEU-4"), "meteor": scores.get("METEOR"),
               "cider_d": scores.get("CIDEr-D"), "same_as_float32": float(np.mean(same)),
               "attention_max_difference": difference, "pointing_written_words": point, "scored_words": words,
               **extra, **common.machine()}
        print(json.dumps({k: v for k, v in row.items() if k not in ("cpu", "python")}), flush=True)
        return row

    out = Path(args.out or tempfile.mkdtemp(prefix="litert-quality-"))
    rows, reference = [], None
    for weights in args.weights.split(","):
        litert, _ = export(captioner, out / weights, "litert", args.beam, litert_weights=weights)
        started = time.perf_counter()
        results = run_file(litert, images)
        seconds = time.perf_counter() - started
        reference = reference or results
        rows.append(measured(f"litert {weights}", results, reference, megabytes=litert.stat().st_size / 1e6,
                             keras_megabytes=model_path.stat().st_size / 1e6, seconds_per_photo=seconds / len(images)))
    if args.keras:
        captions = captioner.caption(images.astype(np.float32), beam_size=args.beam)
        rows.append(measured("keras", [{"ids": [vocabulary.ids[w] for w in c.words],
                                        "attention": c.attention.reshape(len(c.attention), -1)} for c in captions],
                             reference))
    common.print_table(rows, [("variant", "variant", "s"), ("cider_d", "CIDEr-D", ".3f"), ("bleu4", "BLEU-4", ".3f"),
                              ("meteor", "METEOR", ".3f"), ("same_as_float32", "same words", ".3f"),
                              ("attention_max_difference", "max |d alpha|", ".1e"),
                              ("pointing_written_words", "pointing", ".3f"), ("megabytes", "MB", ".1f")])
    print(f"results appended to {common.append_results('litert_quality', rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
