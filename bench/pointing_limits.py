"""What limits a hard model's pointing on dev head words (issue 32): does its drawn cell miss when it did not
expect the word, and how much would choosing the cell after the word gain?

    python bench/pointing_limits.py --model hard --dataset flickr8k --data-dir ../shared/data/flickr8k \
        --entities ../shared/data/flickr30k_entities --split val --cells 8

`captioner grounding`'s own scoring of the teacher-forced maps (same phrases, same boxes, same pointing), with
two things kept per scored phrase:
  * expectation: the model's probability of the reference head word at the step that draws its cell, from the
    cell it drew (the argmax of the members' mean alpha): pointing by how much the model expected the word;
  * the posterior cell (`--cells K`): among the K cells of largest alpha, the one that best explains the word,
    argmax_k alpha_k^tau p(word | cell k) (tau: `--tau`, 1 is Bayes' rule on the model's own latent cell).
    That is the cell a decoder would show if it chose its word from the mixture sum_k alpha_k p(word | cell k)
    and drew the mixture's largest part for it; today's decoders draw the argmax before the word.

A diagnostic of hard ensembles with `hard_state="expected"` (the shipped hard model), whose states do not depend on
the cell drawn; nothing here changes how a model captions. Prints the tables; `--out FILE` keeps every phrase.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy as np

import captioner.evaluation.grounding as grounding
from captioner.evaluation.grounding_scores import points_inside
from captioner.utils.quiet import import_tensorflow_quietly

PROBABILITY_BINS = [0.0, 0.05, 0.2, 0.5, 1.0]


def word_aware_maps(cells: int, tau: float, kept: dict):
    """A `teacher_forced_maps` that also keeps, per step, log p(reference word | drawn cell) and the posterior cell."""
    from keras import ops

    def maps_and_expectations(decoder, prepared, inputs, images):
        image_features, image_keys, image_state = prepared
        features, keys = ops.take(image_features, images, axis=0), ops.take(image_keys, images, axis=0)
        state = [ops.take(x, images, axis=0) for x in image_state]
        member_features = ops.split(features, decoder._feature_splits, axis=-1)
        member_keys = ops.split(keys, decoder._key_splits, axis=-1)
        rows = np.arange(len(inputs))
        maps, word_log_probs, posterior_cells = [], [], []
        for t in range(inputs.shape[1]):
            previous = ops.convert_to_tensor(inputs[:, t])
            target = inputs[:, t + 1] if t + 1 < inputs.shape[1] else np.zeros(len(inputs), np.int32)
            member_states = [state[2 * i : 2 * i + 2] for i in range(len(decoder.members))]
            looks = [member.look(own_state, own_features, own_keys) for member, own_state, own_features, own_keys
                     in zip(decoder.members, member_states, member_features, member_keys)]
            weights = ops.convert_to_numpy(ops.mean(ops.stack([alpha for _, alpha in looks]), axis=0))  # (B, L)
            # Candidate 0 is the drawn cell (alpha's argmax, ties to the lower index as `most_likely_cell`): its
            # reading is the model's own step, whose states go on to the next word.
            top = np.argsort(-weights, axis=-1, kind="stable")[:, : max(cells, 1)]  # (B, K)
            scores = tau * np.log(np.take_along_axis(weights, top, axis=1) + 1e-30)
            for k in range(top.shape[1]):
                chosen = ops.convert_to_tensor(top[:, k].astype(np.int32))
                readings = [member.read_cell(previous, own_state, own_features, context, chosen)
                            for member, own_state, own_features, (context, _)
                            in zip(decoder.members, member_states, member_features, looks)]
                log_probs = ops.convert_to_numpy(decoder._average([ops.log_softmax(logits, axis=-1)
                                                                   for logits, _ in readings]))[rows, target]
                if k == 0:
                    word_log_probs.append(log_probs)
                    state = [tensor for _, member_state in readings for tensor in member_state]
                scores[:, k] += log_probs
            if cells:
                posterior_cells.append(top[rows, scores.argmax(axis=1)])
            maps.append(weights)
        kept["word_log_probs"] = np.stack(word_log_probs, axis=1)  # (B, T)
        kept["posterior_cells"] = np.stack(posterior_cells, axis=1) if cells else None
        kept["row"] = 0
        return np.stack(maps, axis=1)

    return maps_and_expectations


class PhraseRecorder(grounding.Scorer):
    """The grounding scorer, also recording each scored phrase's head-word expectation and posterior pointing."""

    def __init__(self, kept: dict, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kept, self.records = kept, []

    def caption(self, *args, **kwargs):
        super().caption(*args, **kwargs)
        self.kept["row"] += 1  # the next caption's row of the kept arrays

    def score(self, phrase, maps, coverage, corners, feature_norm):
        super().score(phrase, maps, coverage, corners, feature_norm)
        row, head = self.kept["row"], phrase.last
        record = {"types": list(phrase.types),
                  "pointing": bool(points_inside(int(maps[head].argmax()), corners, self.grid)),
                  "probability": float(np.exp(self.kept["word_log_probs"][row, head]))}
        if self.kept["posterior_cells"] is not None:
            cell = int(self.kept["posterior_cells"][row, head])
            record["posterior_pointing"] = bool(points_inside(cell, corners, self.grid))
        self.records.append(record)


def report(records: list[dict]) -> str:
    def share(chosen, key="pointing"):
        return np.mean([r[key] for r in chosen]) if chosen else float("nan")

    def line(name, chosen, key="pointing"):
        return f"{name:44s} {len(chosen):7d} {share(chosen, key):9.3f}"

    lines = [f"{'head words':44s} {'phrases':>7s} {'pointing':>9s}",
             line("all (the drawn cell, as grounding)", records)]
    for low, high in zip(PROBABILITY_BINS, PROBABILITY_BINS[1:]):
        in_bin = [r for r in records if low <= r["probability"] < high or r["probability"] == high == 1.0]
        lines.append(line(f"  p(head word | drawn cell) in [{low}, {high})", in_bin))
    posterior = bool(records) and "posterior_pointing" in records[0]
    if posterior:
        lines.append(line("all, the posterior cell", records, "posterior_pointing"))
    by_type = collections.defaultdict(list)
    for record in records:
        for kind in record["types"]:
            by_type[kind].append(record)
    lines.append(f"\n{'type':12s} {'phrases':>7s} {'drawn':>7s} {'p>=0.2':>7s} {'posterior':>9s}")
    for kind, chosen in sorted(by_type.items(), key=lambda item: -len(item[1])):
        expected = [r for r in chosen if r["probability"] >= 0.2]
        posterior_share = share(chosen, "posterior_pointing") if posterior else float("nan")
        lines.append(f"{kind:12s} {len(chosen):7d} {share(chosen):7.3f} {share(expected):7.3f} {posterior_share:9.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="hard")
    parser.add_argument("--dataset", default="flickr8k")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--entities", required=True)
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--limit", type=int, help="only the first N images of the split")
    parser.add_argument("--feature-cache")
    parser.add_argument("--cells", type=int, default=8, help="the posterior's candidate cells (0: none)")
    parser.add_argument("--tau", type=float, default=1.0, help="the posterior's power of alpha")
    parser.add_argument("--out", help="a JSON file for every scored phrase's record")
    args = parser.parse_args(argv)

    import_tensorflow_quietly()
    from captioner.model.saving import default_model_path

    args.model = str(default_model_path(args.model))
    captioner, split, indices, annotations = grounding.load(args)
    if not (captioner.is_ensemble and grounding.is_hard(captioner.decoder)
            and all(member.hard_state == "expected" for member in captioner.decoder.members)):
        print(f"error: {args.model}: needs a hard ensemble whose state reads the expected context", file=sys.stderr)
        return 2
    features, failed = grounding.annotated_features(captioner, split, indices, args)
    annotations = [a for a, index in zip(annotations, indices) if split.paths[index] not in failed]
    kept: dict = {}
    recorder = {}
    grounding.teacher_forced_maps = word_aware_maps(args.cells, args.tau, kept)
    grounding.Scorer = lambda *a, **k: recorder.setdefault("scorer", PhraseRecorder(kept, *a, **k))
    tally, _, _ = grounding.score_split(captioner, features, annotations)
    records = recorder["scorer"].records
    drawn = tally.summary()["overall"]["pointing_head_drawn"]
    print(f"{args.model} on {args.dataset} {args.split}, {len(annotations)} images; grounding's drawn pointing "
          f"{drawn:.3f}; posterior over the top {args.cells} cells, tau {args.tau}\n")
    print(report(records))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(records, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
