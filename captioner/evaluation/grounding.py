"""Where the attention lands on real photos: a model's maps against the human boxes of Flickr30k Entities.

    captioner grounding --dataset flickr8k --data-dir ../shared/data/flickr8k --split val \\
        --entities ../shared/data/flickr30k_entities --out runs/x/grounding
    captioner grounding --dataset synthetic --model runs/demo/best.keras --split test   # the demo's shapes

Every Entities caption of each annotated image of the split is teacher-forced (its own words through the
model's vocabulary, unknown words as <unk>, cut at the model's max_length as training cuts captions). For
every phrase whose boxes cover less than 90% of the image, the maps of the steps that predict its words
(step t predicts word t; `words`: their mean) and the map of its last word (`head`, the head noun) are
scored (captioner/evaluation/grounding_scores.py): attention mass inside the boxes against chance (a uniform
map), and pointing (the top cell's centre inside a box) against always pointing at the centre cell; a
word-agnostic map, the L2 norm of the encoder's features per cell (`f-norm`), is scored the same way.
Word specificity: for pairs of phrases of one caption that name different things, whether each phrase's head
map puts more mass in its own boxes than the other phrase's head map does (a word-agnostic map: 0.5).
Hard-attention models (argmax inference) are scored on their soft alpha and on the one cell they draw
(`drawn`); an ensemble on its members' average map, the map its overlays show. Images without annotation
files are skipped and counted. Writes DIR/grounding.json (--out) and prints a table per entity type.

Synthetic scenes are scored by the same code: each shape is an entity with its bounding box, each phrase naming
it ("large red circle") a phrase of the shape's type (`captioner.data.entity_matching.scene_annotations`).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

from captioner.evaluation.grounding_scores import (
    OVERALL,
    Tally,
    centre_cell,
    format_specificity,
    format_table,
    norm_map,
    pair_scores,
    score_phrase,
)
from captioner.utils.quiet import import_tensorflow_quietly

DECODE_BATCH = 100  # captions teacher-forced at once, sorted by length so a batch pads little
IMAGES_PER_CHUNK = 200  # images whose features the decoder prepares at once (once per image, not per caption)


def teacher_forced_maps(decoder, prepared, inputs: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Attention maps (B, T, L) while reading inputs (B, T) = ids[:, :-1]: map t is the one used to predict word t.

    prepared: `decoder.prepare(features)` of some images; images (B,): which of them each caption describes.
    The decoder's own steps, as when it captions: the same maps as its teacher-forcing call for soft attention
    (an ensemble's are its members' mean), while a hard-attention decoder with argmax inference reads the
    argmax cell's feature, as it does when it captions (its call would use the expected context).
    """
    from keras import ops

    image_features, image_keys, image_state = prepared
    features, keys = ops.take(image_features, images, axis=0), ops.take(image_keys, images, axis=0)
    state = [ops.take(x, images, axis=0) for x in image_state]
    maps = []
    for t in range(inputs.shape[1]):
        _, state, weights = decoder.step(ops.convert_to_tensor(inputs[:, t]), state, features, keys)
        maps.append(ops.convert_to_numpy(weights))
    return np.stack(maps, axis=1)


def encode_words(words, vocabulary, max_length: int) -> list[int]:
    """`<start> words <end>` as ids, unknown words as `<unk>`, cut to max_length words (as Vocabulary.encode)."""
    return [vocabulary.start_id, *(vocabulary.ids.get(w, vocabulary.unknown_id) for w in words[:max_length]),
            vocabulary.end_id]


def annotated_images(split, entities_dir):
    """(indices of the split's images that have annotation files, their Annotations); ReaderError if malformed."""
    from captioner.data.entities import image_id, read_annotation

    found = [(index, read_annotation(entities_dir, image_id(path))) for index, path in enumerate(split.paths)]
    return [index for index, a in found if a is not None], [a for _, a in found if a is not None]


SKIPPED = ("no_box", "too_large", "past_max_length")  # why a phrase is not scored


class Scorer:
    """Scores every boxed phrase of the captions it is given into a Tally, the pairs of phrases of one caption
    into another (word specificity), and counts what it skips."""

    def __init__(self, grid, hard: bool, max_cover: float):
        self.grid, self.hard, self.max_cover = grid, hard, max_cover
        self.tally, self.pairs, self.skipped = Tally(), Tally(counted="pairs"), collections.Counter()

    def caption(self, maps: np.ndarray, sentence, annotation, kept: int, feature_norm: np.ndarray, cache: dict) -> None:
        """maps (T, L) of one teacher-forced caption whose first `kept` words were fed."""
        from captioner.data.entities import normalised_boxes, phrase_coverage

        scored = []  # (types, head map, coverage) of this caption's scored phrases
        for phrase in sentence.phrases:
            coverage = phrase_coverage(annotation, phrase, self.grid, cache)
            if coverage is None or not coverage.any():
                self.skipped["no_box"] += 1
            elif coverage.mean() >= self.max_cover:
                self.skipped["too_large"] += 1
            elif phrase.last >= kept:
                self.skipped["past_max_length"] += 1
            else:
                corners = normalised_boxes(annotation.boxes_of(phrase), annotation.width, annotation.height)
                self.score(phrase, maps, coverage, corners, feature_norm)
                scored.append((phrase.types, maps[phrase.last], coverage))
        for types, scores in pair_scores(scored):
            self.pairs.add(types, scores)

    def score(self, phrase, maps: np.ndarray, coverage: np.ndarray, corners, feature_norm: np.ndarray) -> None:
        """One scored phrase into the tally (a diagnostic may extend it: `bench/pointing_limits.py`)."""
        self.tally.add(phrase.types, score_phrase(maps, phrase.first, phrase.last, coverage, corners, self.grid,
                                                  feature_norm, self.hard))


def is_hard(decoder) -> bool:
    """Whether the decoder captions with one (argmax) cell: then that cell is the map it draws."""
    return bool(getattr(decoder, "hard_attention", False)) and decoder.hard_inference == "argmax"


def score_split(captioner, features, annotations, batch_size: int = DECODE_BATCH, max_cover: float | None = None):
    """(Tally of every boxed phrase's scores, Tally of the pairs' word specificity, counts of captions and of
    skipped phrases).

    features: (N, L', D') cached encoder outputs (`Encoder.encode_below`: the features of a frozen encoder; an
    array or a FeatureView) of the N annotated images, in the order of `annotations`.
    """
    from captioner.data.entities import MAX_COVER

    decoder, vocabulary = captioner.decoder, captioner.vocabulary
    scorer = Scorer(captioner.grid, is_hard(decoder), MAX_COVER if max_cover is None else max_cover)
    captions, caches = 0, collections.defaultdict(dict)  # caches: image -> chain -> coverage
    for first in range(0, len(annotations), IMAGES_PER_CHUNK):
        chunk = np.asarray(features[first : first + IMAGES_PER_CHUNK], dtype=np.float32)
        chunk = np.asarray(captioner.encoder.encode_above(chunk))  # (n, L, D); a fine-tuned encoder's top blocks
        prepared, norms = decoder.prepare(chunk), norm_map(chunk)
        items = [(first + n, sentence, encode_words(sentence.words, vocabulary, captioner.max_length))
                 for n in range(len(chunk)) for sentence in annotations[first + n].sentences]
        items.sort(key=lambda item: len(item[2]))
        captions += len(items)
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            inputs = np.zeros((len(batch), len(batch[-1][2]) - 1), dtype=np.int32)  # the longest is last; <pad> is 0
            for row, (_, _, ids) in enumerate(batch):
                inputs[row, : len(ids) - 1] = ids[:-1]
            images = np.array([image - first for image, _, _ in batch])
            maps = teacher_forced_maps(decoder, prepared, inputs, images).astype(np.float64)  # (B, T, L)
            for row, (image, sentence, ids) in enumerate(batch):
                kept = len(ids) - 2
                scorer.caption(maps[row], sentence, annotations[image], kept, norms[image - first], caches[image])
    return scorer.tally, scorer.pairs, {"captions": captions, **{reason: scorer.skipped[reason] for reason in SKIPPED}}


def describe_maps(captioner) -> dict[str, str]:
    """What each column of the report scores, in words (the JSON's "maps")."""
    decoder = captioner.decoder
    if captioner.is_ensemble and is_hard(decoder):
        kind = (f"ensemble of {len(decoder.members)} hard-attention decoders: their mean alpha (words, head) and "
                "the one cell they all read, its argmax (drawn)")
    elif captioner.is_ensemble:
        kind = f"ensemble of {len(decoder.members)} decoders: their mean alpha, as its overlays show"
    elif is_hard(decoder):
        kind = "hard attention, argmax inference: soft alpha (words, head) and the cell it uses and draws (drawn)"
    else:
        kind = f"{'hard attention with expected context' if decoder.hard_attention else 'soft attention'}: alpha"
    rows, cols = captioner.grid
    row, col = divmod(centre_cell(captioner.grid), cols)
    return {
        "model_maps": kind,
        "words": "mean of the maps of the steps that predict the phrase's words",
        "head": "the map of the step that predicts the phrase's last word (the head noun)",
        "drawn": "hard attention only: one-hot maps of the argmax cell (drawn w: over the words, drawn h: head)",
        "f-norm": "word-agnostic: the L2 norm of the encoder's features per cell",
        "centre": f"always cell (row {row}, column {col}) of the {rows}x{cols} grid, 0-based (on an even side, the "
                  "one just below / right of the middle)",
        "chance": "a uniform map: the boxes' share of the image",
    }


def load(args):
    """(captioner, split, indices of its annotated images, their Annotations); ValueError (ReaderError) if bad."""
    from captioner.config import Config
    from captioner.data.datasets import load_splits
    from captioner.data.entities import check_layout
    from captioner.model.saving import load_captioner

    captioner = load_captioner(args.model)
    config = Config(dataset=args.dataset, data_dir=args.data_dir, backbone=captioner.encoder.backbone_name)
    if args.dataset == "synthetic":  # the demo's scenes: the default split sizes and seed of `train.py`
        from captioner.data.entity_matching import scene_annotations

        config.image_size = captioner.encoder.image_size
        split = load_splits(config)[args.split]
        scenes = split.scenes[: args.limit] if args.limit else split.scenes
        return captioner, split, list(range(len(scenes))), scene_annotations(scenes)
    split = load_splits(config)[args.split]
    if args.limit:
        split.captions, split.paths = split.captions[: args.limit], split.paths[: args.limit]
    return (captioner, split, *annotated_images(split, check_layout(args.entities)))


def annotated_features(captioner, split, indices, args):
    """(What the cache holds for the annotated images, in order: an array or a FeatureView; unreadable paths)."""
    from captioner.data.features import DEFAULT_CACHE, FeatureStore, encode_in_memory

    if split.images is not None:  # synthetic scenes, made in memory
        return encode_in_memory(captioner.encoder, split.images[: len(indices)], f"{args.split} scenes"), set()
    store = FeatureStore(args.feature_cache or DEFAULT_CACHE, captioner.encoder)
    paths = [split.paths[i] for i in indices]
    failed = store.extract_missing(paths, f"annotated {args.split} images")
    return store.view([path for path in paths if path not in failed]), failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="captioner grounding", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a .keras model, or a shipped model by name: soft (the default) or hard")
    parser.add_argument("--dataset", required=True, help="a photo dataset with --data-dir and --entities, or synthetic")
    parser.add_argument("--data-dir", help="the dataset's folder (photo datasets)")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--entities", help="Flickr30k Entities folder (Sentences/, Annotations/); photo datasets")
    parser.add_argument("--limit", type=int, help="only the first N images of the split")
    parser.add_argument("--feature-cache", help="where encoder features are cached")
    parser.add_argument("--out", help="folder for grounding.json")
    args = parser.parse_args(argv)
    if args.dataset != "synthetic" and not (args.data_dir and args.entities):
        parser.error(f"--dataset {args.dataset} needs --data-dir and --entities")

    import_tensorflow_quietly()
    from captioner.data.entities import MAX_COVER
    from captioner.model.saving import default_model_path
    from captioner.utils.atomic import atomic_write_text

    started = time.perf_counter()
    args.model = str(default_model_path(args.model))
    try:
        captioner, split, indices, annotations = load(args)
    except ValueError as error:  # a bad model, dataset or annotation file: one line
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not annotations:
        print(f"error: {args.entities}: none of the {len(split)} images of the {args.split} split has annotation "
              "files (Sentences/<id>.txt and Annotations/<id>.xml)", file=sys.stderr)
        return 1
    loaded = time.perf_counter()
    features, failed = annotated_features(captioner, split, indices, args)
    keep = [n for n, index in enumerate(indices) if split.paths is None or split.paths[index] not in failed]
    annotations = [annotations[n] for n in keep]
    encoded = time.perf_counter()
    tally, pairs, counts = score_split(captioner, features, annotations)
    summary = tally.summary()
    specificity = pairs.summary()
    report = {
        "model": str(args.model), "dataset": args.dataset, "split": args.split, "entities": str(args.entities),
        "images": len(split), "images_scored": len(annotations), "images_without_annotations": len(split) - len(indices),
        "images_unreadable": len(failed), "sentences": counts["captions"],
        "phrases_scored": summary.get(OVERALL, {}).get("phrases", 0),
        "phrases_skipped": {reason: counts[reason] for reason in SKIPPED}, "max_cover": MAX_COVER,
        "grid": list(captioner.grid), "maps": describe_maps(captioner), "types": summary,
        "word_specificity": specificity,
        "seconds": {"loading": loaded - started, "features": encoded - loaded,
                    "scoring": time.perf_counter() - encoded},
    }
    skipped = report["phrases_skipped"]
    print(format_table(summary, (
        f"grounding of {args.model} on {args.dataset} {args.split}: {len(annotations)} annotated images scored "
        f"({report['images_without_annotations']} without annotations skipped), {counts['captions']} sentences\n"
        f"{report['phrases_scored']} phrases scored; skipped: {skipped['no_box']} without boxes, "
        f"{skipped['too_large']} with boxes over >= {MAX_COVER:.0%} of the image, {skipped['past_max_length']} past "
        f"max_length\nmaps: {report['maps']['model_maps']}")))
    print(f"centre: {report['maps']['centre']}\nf-norm: {report['maps']['f-norm']}")
    if specificity:
        print(format_specificity(specificity))
    if args.out:
        atomic_write_text(Path(args.out) / "grounding.json", json.dumps(report, indent=2))
        print(f"wrote {Path(args.out) / 'grounding.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
