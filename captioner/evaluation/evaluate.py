"""Score a trained model on a dataset split the way papers do: free-running captions, COCO metrics.

    captioner evaluate --model runs/x/best.keras --dataset flickr8k \\
        --data-dir ../shared/data/flickr8k --split test --beam 3 --out runs/x/eval-test-beam3

Captions come from greedy or beam search (never teacher forcing). Writes scores.json, the
captions in COCO results format (captions.json: [{"image_id", "caption"}], image_id being the
file name) and prints a table. Two BLEUs are reported and named: pycocoevalcap's (PTB
tokenizer, the papers' number) and nltk's corpus BLEU on our tokenizer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from captioner.utils.quiet import import_tensorflow_quietly

DECODE_BATCH = 50


def evaluate_captions(captions, split) -> dict:
    """COCO metrics (and nltk BLEU) of captions against a split's references."""
    from captioner.evaluation import metrics
    from captioner.evaluation.coco_metrics import coco_scores

    ids = [Path(p).name for p in split.paths] if split.paths else [str(i) for i in range(len(split))]
    references = dict(zip(ids, split.captions))
    hypotheses = {i: c.text for i, c in zip(ids, captions)}
    scores = coco_scores(references, hypotheses)
    nltk_bleu = metrics.bleu_scores([c.words for c in captions], split.captions)
    scores.update({f"nltk BLEU-{n}": nltk_bleu[f"bleu{n}"] for n in range(1, 5)})
    return scores, [{"image_id": i, "caption": hypotheses[i]} for i in ids]


def format_table(scores: dict, title: str) -> str:
    from captioner.evaluation.coco_metrics import METRIC_NAMES

    lines = [title, f"{'metric':<16}{'score':>8}"]
    for name in METRIC_NAMES + tuple(f"nltk BLEU-{n}" for n in range(1, 5)):
        value = scores.get(name)
        lines.append(f"{name:<16}{'n/a' if value is None else f'{value:.4f}':>8}")
    lines.append(f"BLEU-n: pycocoevalcap, {scores['tokenizer']} tokens; nltk BLEU-n: nltk corpus_bleu, captioner tokens")
    for name, reason in scores.get("unavailable", {}).items():
        lines.append(f"{name} unavailable: {reason}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="captioner evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a .keras file written by train.py, or a shipped model by name: soft (the default) or hard")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--beam", type=int, default=1, help="beam size; 1 is greedy")
    parser.add_argument("--length-penalty", type=float, default=None,
                        help="score / length ** this; 0: none; default: the model's own (chosen on dev)")
    parser.add_argument("--no-repeat-ngram", type=int, default=None, metavar="N",
                        help="never write an N-gram twice in one caption; 0: allowed; default: the model's own")
    parser.add_argument("--limit", type=int, help="only the first N images of the split")
    parser.add_argument("--feature-cache", help="where encoder features are cached")
    parser.add_argument("--out", help="folder for scores.json and captions.json")
    args = parser.parse_args(argv)
    if args.beam < 1:
        parser.error("--beam must be at least 1")
    if args.no_repeat_ngram is not None and args.no_repeat_ngram < 0:
        parser.error("--no-repeat-ngram must not be negative")

    import_tensorflow_quietly()
    from captioner.config import Config
    from captioner.data.datasets import load_splits
    from captioner.data.features import DEFAULT_CACHE, FeatureStore
    from captioner.evaluation.coco_metrics import start_meteor
    from captioner.model.captioner import caption_features
    from captioner.model.saving import default_model_path, load_captioner
    from captioner.utils.atomic import atomic_write_text

    args.model = str(default_model_path(args.model))
    try:
        captioner = load_captioner(args.model)
        config = Config(dataset=args.dataset, data_dir=args.data_dir, backbone=captioner.encoder.backbone_name)
        split = load_splits(config)[args.split]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.limit:
        split.captions, split.paths = split.captions[: args.limit], split.paths[: args.limit]
    store = FeatureStore(args.feature_cache or DEFAULT_CACHE, captioner.encoder)
    failed = store.extract_missing(split.paths, f"{args.split} images")
    if failed:
        split = split.without(failed)
    features = store.view(split.paths)

    if args.length_penalty is None:  # the model's own, for beam search
        args.length_penalty = captioner.length_penalty if args.beam > 1 else 0.0
    if args.no_repeat_ngram is None:
        args.no_repeat_ngram = captioner.no_repeat_ngram
    start_meteor()  # its Java scorer starts while the split is captioned
    started = time.time()
    captions = caption_features(captioner, features, beam_size=args.beam, batch_size=DECODE_BATCH,
                                length_penalty=args.length_penalty, no_repeat_ngram=args.no_repeat_ngram)
    seconds = time.time() - started
    scores, results = evaluate_captions(captions, split)
    decoding = "greedy" if args.beam == 1 else f"beam {args.beam}"
    report = {
        "model": str(args.model), "dataset": args.dataset, "split": args.split, "images": len(split),
        "decoding": decoding, "length_penalty": args.length_penalty,
        "no_repeat_ngram": args.no_repeat_ngram, "decode_seconds": seconds, **scores,
    }
    print(format_table(scores, f"{args.dataset} {args.split} ({len(split)} images), {decoding}"))
    if args.out:
        out = Path(args.out)
        atomic_write_text(out / "scores.json", json.dumps(report, indent=2))
        atomic_write_text(out / "captions.json", json.dumps(results, indent=1))
        print(f"wrote {out / 'scores.json'} and {out / 'captions.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
