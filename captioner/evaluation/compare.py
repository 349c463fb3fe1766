"""Is model B really better than model A? A paired bootstrap over the test images.

On a 1,000-image test split, two runs of one recipe that differ only in their seed can differ
by half a BLEU-4 point and two CIDEr-D points, so a difference between two models means little
until we know how much it would move with other test images. The paired bootstrap (Koehn 2004)
draws the images with replacement many times, scores both models' captions of the same draw,
and reports the difference's 95% interval and how often B came out ahead.

    captioner compare runs/a/eval-test-beam3/captions.json runs/b/eval-test-beam3/captions.json \\
        --dataset flickr8k --data-dir ../shared/data/flickr8k --split test

Scores use our tokenizer: BLEU-4 is corpus BLEU (nltk's definition: clipped n-gram counts and
the closest reference length, summed over the drawn images), CIDEr-D is `captioner.evaluation.cider`'s (the
COCO definition, document frequencies from the whole split's references, fixed across draws).
Both agree with pycocoevalcap's to about 0.2 points; the intervals are what this tool adds.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
from nltk.translate.bleu_score import closest_ref_length, modified_precision

BLEU_ORDER = 4
DRAWS = 2000
SEED = 0


def bleu_statistics(hypothesis: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """One image's sufficient statistics for corpus BLEU: matches and totals per n, its length, the closest reference's."""
    row = []
    for n in range(1, BLEU_ORDER + 1):
        precision: Fraction = modified_precision(references, hypothesis, n)
        row += [precision.numerator, precision.denominator]
    return np.array(row + [len(hypothesis), closest_ref_length(references, len(hypothesis))], dtype=np.float64)


def corpus_bleu_from(statistics: np.ndarray) -> np.ndarray:
    """statistics (..., images, 2 * BLEU_ORDER + 2) -> corpus BLEU-4 (...) of each set of images."""
    totals = statistics.sum(axis=-2)
    matches, counts = totals[..., 0 : 2 * BLEU_ORDER : 2], totals[..., 1 : 2 * BLEU_ORDER : 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_precision = np.where(matches > 0, np.log(matches / np.maximum(counts, 1)), -np.inf).mean(axis=-1)
        length, reference_length = totals[..., -2], totals[..., -1]
        brevity = np.where(length < reference_length, 1 - reference_length / np.maximum(length, 1), 0.0)
    return np.exp(log_precision + brevity)


def _interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def paired_bootstrap(captions_a, captions_b, references, draws: int = DRAWS, seed: int = SEED) -> dict:
    """captions_*: one tokenised caption per image; references: each image's tokenised references.

    Returns, per metric, A's and B's score on all images, B - A, the 95% interval of B - A over
    `draws` resamples of the images, and the share of resamples in which B scored higher.
    """
    from captioner.evaluation.cider import CiderD

    if not (len(captions_a) == len(captions_b) == len(references)):
        raise ValueError("both models need one caption for every image")
    cider = CiderD(references)
    per_image = {
        "CIDEr-D": [cider.scores(captions, references).astype(np.float64) for captions in (captions_a, captions_b)],
        "BLEU-4": [np.stack([bleu_statistics(c, r) for c, r in zip(captions, references)])
                   for captions in (captions_a, captions_b)],
    }
    score = {"CIDEr-D": lambda values: values.mean(axis=-1), "BLEU-4": corpus_bleu_from}
    draw = np.random.default_rng(seed).integers(0, len(references), size=(draws, len(references)))

    report = {}
    for metric, (a, b) in per_image.items():
        difference = score[metric](b[draw]) - score[metric](a[draw])  # the same images for both models
        whole_a, whole_b = float(score[metric](a)), float(score[metric](b))
        report[metric] = {
            "a": whole_a, "b": whole_b, "difference": whole_b - whole_a,
            "interval": _interval(difference), "b_ahead": float(np.mean(difference > 0)),
        }
    return report


def load_captions(path, image_ids: list[str]) -> list[str]:
    """Captions in COCO results format ([{"image_id", "caption"}]) in the order of `image_ids`."""
    try:
        entries = json.loads(Path(path).read_text())
        captions = {str(entry["image_id"]): entry["caption"] for entry in entries}
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path}: not a captions file in COCO results format ({error})") from None
    missing = [image for image in image_ids if image not in captions]
    if missing:
        raise ValueError(f"{path}: no caption for {len(missing)} of the split's images (e.g. {missing[0]})")
    return [captions[image] for image in image_ids]


def format_report(report: dict, name_a: str, name_b: str, draws: int) -> str:
    lines = [f"A = {name_a}", f"B = {name_b}", f"paired bootstrap, {draws} draws of the images; scores x 100",
             f"{'metric':<10}{'A':>8}{'B':>8}{'B - A':>8}   {'95% interval':<18}{'B ahead in':>10}"]
    for metric, row in report.items():
        low, high = row["interval"]
        interval = f"[{100 * low:+.2f}, {100 * high:+.2f}]"
        lines.append(f"{metric:<10}{100 * row['a']:>8.2f}{100 * row['b']:>8.2f}{100 * row['difference']:>+8.2f}   "
                     f"{interval:<18}{100 * row['b_ahead']:>9.1f}%")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="captioner compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("captions_a", help="model A's captions.json (from captioner evaluate --out)")
    parser.add_argument("captions_b", help="model B's captions.json")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--draws", type=int, default=DRAWS, help="bootstrap resamples")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    if args.draws < 100:
        parser.error("--draws must be at least 100 for a 95% interval")

    from captioner.utils.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()  # the dataset readers import it
    from captioner.config import Config
    from captioner.data.datasets import load_splits
    from captioner.data.vocabulary import tokenize
    from captioner.utils.atomic import atomic_write_text

    try:
        split = load_splits(Config(dataset=args.dataset, data_dir=args.data_dir))[args.split]
        image_ids = [Path(p).name for p in split.paths]
        captions = [load_captions(path, image_ids) for path in (args.captions_a, args.captions_b)]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    references = [[tokenize(r) for r in refs] for refs in split.captions]
    report = paired_bootstrap(*[[tokenize(c) for c in model] for model in captions], references, draws=args.draws)
    print(format_report(report, args.captions_a, args.captions_b, args.draws))
    if args.out:
        atomic_write_text(args.out, json.dumps({"a": args.captions_a, "b": args.captions_b, "split": args.split,
                                                "draws": args.draws, **report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
