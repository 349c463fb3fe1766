"""How well one attention map finds a phrase's boxes, and the averages of those scores per entity type.

Maps are (L,) over the encoder's grid in its row-major order (cell index row * cols + col), boxes are in the
square the model sees (`captioner.data.entities.normalised_boxes`), and `coverage` is the share of each cell
inside the union of the boxes (`captioner.data.entities.box_coverage`).

    mass      sum over cells of weight x covered share of the cell: the attention that lands on the named
              thing. A uniform map scores the boxes' share of the image, `chance`.
    pointing  whether the centre of the highest-weight cell lies inside a box (the pointing game of Zhang et
              al. 2016, on the grid). Baseline: always the centre cell.

Whether the maps are word-specific, not one map of "where the objects are" whatever the word, is scored on
pairs of phrases of one caption that name different things (boxes overlapping less than DISTINCT_OVERLAP):

    specificity  whether phrase A's head map puts more mass in A's boxes than phrase B's head map does (1, 0;
                 0.5 on a tie). Any word-agnostic map, the same for every word, scores exactly 0.5.
"""

from __future__ import annotations

import collections

import numpy as np

REPORT_TYPES = ("people", "animals", "clothing", "bodyparts", "vehicles", "instruments", "scene", "other")
OVERALL = "overall"
DISTINCT_OVERLAP = 0.5  # two phrases name different things when their covered cells overlap less (IoU)

# (block, column title, score key); the `drawn` columns exist for hard attention only
COLUMNS = (
    ("mass", "chance", "chance"),
    ("mass", "words", "mass_words"),
    ("mass", "head", "mass_head"),
    ("mass", "drawn w", "mass_words_drawn"),
    ("mass", "drawn h", "mass_head_drawn"),
    ("mass", "f-norm", "mass_norm"),
    ("pointing", "centre", "pointing_centre"),
    ("pointing", "words", "pointing_words"),
    ("pointing", "head", "pointing_head"),
    ("pointing", "drawn w", "pointing_words_drawn"),
    ("pointing", "drawn h", "pointing_head_drawn"),
    ("pointing", "f-norm", "pointing_norm"),
)


def chance(coverage: np.ndarray) -> float:
    """What a uniform map scores: the covered share of the image."""
    return float(np.mean(coverage))


def mass(weights: np.ndarray, coverage: np.ndarray) -> float:
    """Attention inside the boxes: sum_cells weight x covered share (weights normalised to sum 1)."""
    weights = np.asarray(weights, dtype=np.float64)
    return float(np.dot(weights, coverage) / weights.sum())


def cell_centre(cell: int, grid: tuple[int, int]) -> tuple[float, float]:
    """(x, y) of a cell's centre in the unit square."""
    rows, cols = grid
    row, col = divmod(int(cell), cols)
    return (col + 0.5) / cols, (row + 0.5) / rows


def points_inside(cell: int, corners: np.ndarray, grid: tuple[int, int]) -> bool:
    """Whether the centre of `cell` lies inside any box (corners (K, 4): x0, y0, x1, y1)."""
    x, y = cell_centre(cell, grid)
    return bool(np.any((corners[:, 0] <= x) & (x <= corners[:, 2]) & (corners[:, 1] <= y) & (y <= corners[:, 3])))


def pointing(weights: np.ndarray, corners: np.ndarray, grid: tuple[int, int]) -> float:
    """The pointing game: 1 if the highest-weight cell has its centre inside a box, else 0.

    On a tie for the top (a flat map: no attention), the share of the tied cells whose centres are inside,
    which is what breaking the tie at random scores on average; taking the first would always point at
    the top-left corner.
    """
    weights = np.asarray(weights, dtype=np.float64)
    top = np.flatnonzero(np.isclose(weights, weights.max(), rtol=1e-6, atol=0.0))
    return float(np.mean([points_inside(int(cell), corners, grid) for cell in top]))


def centre_cell(grid: tuple[int, int]) -> int:
    """The cell a fixed guess points at: the middle one; on an even side, the one just below / right of the middle."""
    rows, cols = grid
    return (rows // 2) * cols + cols // 2


def norm_map(features: np.ndarray) -> np.ndarray:
    """A word-agnostic map: the L2 norm of the encoder's features per cell, normalised to sum 1.

    (..., L, D) -> (..., L); where every cell's features are zero, nothing stands out: a uniform map.
    """
    norms = np.linalg.norm(np.asarray(features, dtype=np.float64), axis=-1)
    norms[norms.sum(axis=-1) == 0] = 1.0
    return norms / norms.sum(axis=-1, keepdims=True)


def drawn_maps(weights: np.ndarray) -> np.ndarray:
    """What a hard-attention model draws: a one-hot map of the argmax cell. (..., L) -> (..., L)"""
    return np.eye(weights.shape[-1])[np.argmax(weights, axis=-1)]


def score_phrase(maps: np.ndarray, first: int, last: int, coverage: np.ndarray, corners: np.ndarray,
                 grid: tuple[int, int], feature_norm: np.ndarray, hard: bool = False) -> dict[str, float]:
    """Every score of one phrase: maps (T, L) of its caption (step t predicts word t), its words first..last.

    `words` is the mean map of the steps that predict the phrase's words, `head` the map of its last word.
    hard: also score the one-hot maps of the argmax cells (`drawn`).
    """
    scores = {
        "chance": chance(coverage),
        "mass_norm": mass(feature_norm, coverage),
        "pointing_centre": float(points_inside(centre_cell(grid), corners, grid)),
        "pointing_norm": float(pointing(feature_norm, corners, grid)),
    }
    sources = {"": maps}
    if hard:
        sources["_drawn"] = drawn_maps(maps)
    for suffix, source in sources.items():
        words, head = source[first : last + 1].mean(axis=0), source[last]
        scores[f"mass_words{suffix}"], scores[f"mass_head{suffix}"] = mass(words, coverage), mass(head, coverage)
        scores[f"pointing_words{suffix}"] = float(pointing(words, corners, grid))
        scores[f"pointing_head{suffix}"] = float(pointing(head, corners, grid))
    return scores


def overlap(coverage: np.ndarray, other: np.ndarray) -> float:
    """Intersection over union of two phrases' covered shares of the cells (0: disjoint boxes, 1: the same)."""
    union = np.maximum(coverage, other).sum()
    return float(np.minimum(coverage, other).sum() / union) if union else 0.0


def specificity(own: np.ndarray, other: np.ndarray, coverage: np.ndarray) -> dict[str, float]:
    """Does a phrase's own map find its boxes better than another word's map of the same caption does?

    own, other: (L,) head maps of the two phrases; coverage: the first phrase's boxes. `specificity` is 1, 0,
    or 0.5 on a tie; `specificity_margin` is the difference of the two masses.
    """
    own_mass, other_mass = mass(own, coverage), mass(other, coverage)
    won = 0.5 if np.isclose(own_mass, other_mass, rtol=0.0, atol=1e-9) else float(own_mass > other_mass)
    return {"specificity": won, "specificity_margin": own_mass - other_mass}


def pair_scores(phrases) -> list[tuple[tuple, dict[str, float]]]:
    """phrases: (types, head map, coverage) of the scored phrases of one caption -> (types of A, scores) for
    every ordered pair (A, B) whose boxes overlap less than DISTINCT_OVERLAP."""
    return [(types, specificity(head, other_head, coverage))
            for a, (types, head, coverage) in enumerate(phrases)
            for b, (_, other_head, other_coverage) in enumerate(phrases)
            if a != b and overlap(coverage, other_coverage) < DISTINCT_OVERLAP]


class Tally:
    """Means of phrase scores per entity type (a phrase with several types counts under each) and overall.

    counted: what one `add` is, the name of the count in the summary ("phrases", or "pairs" of phrases).
    """

    def __init__(self, counted: str = "phrases"):
        self.counted = counted
        self.sums: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.counts: collections.Counter = collections.Counter()

    def add(self, types, scores: dict[str, float]) -> None:
        for group in (*dict.fromkeys(types), OVERALL):  # each type once, then overall once
            self.counts[group] += 1
            self.sums[group].update(scores)

    def summary(self) -> dict[str, dict]:
        """{group: {counted: n, score: mean}}: the report's types in order, any others, then overall."""
        others = sorted(set(self.counts) - set(REPORT_TYPES) - {OVERALL})
        groups = [g for g in REPORT_TYPES if g in self.counts] + others + ([OVERALL] if self.counts else [])
        return {group: {self.counted: self.counts[group], **{key: total / self.counts[group]
                                                          for key, total in self.sums[group].items()}}
                for group in groups}


def format_table(summary: dict[str, dict], title: str) -> str:
    """The summary as a text table: attention mass in the boxes, then pointing; one row per type."""
    present = next(iter(summary.values()), {})
    blocks = [[(label, key) for b, label, key in COLUMNS if b == block and key in present]
              for block in ("mass", "pointing")]
    header = "  ".join("".join(f"{label:>8}" for label, _ in block) for block in blocks)
    lines = [title,
             f"{'':<21}{'attention mass in the boxes':<{8 * len(blocks[0])}}  pointing (top cell's centre in a box)",
             f"{'type':<12}{'phrases':>9}{header}"]
    for group, scores in summary.items():
        row = "  ".join("".join(f"{scores[key]:>8.3f}" for _, key in block) for block in blocks)
        lines.append(f"{group:<12}{scores['phrases']:>9}{row}")
    return "\n".join(lines)


def format_specificity(summary: dict[str, dict]) -> str:
    """The pairs' summary ({group: {"pairs": n, "specificity": mean, "specificity_margin": mean}}) as a text table."""
    lines = ["word specificity: phrase A's head map against phrase B's, in A's boxes (pairs of one caption naming "
             "different things;\nwins: share of pairs where A's own map puts more mass there; any word-agnostic map "
             "scores 0.500, margin 0)",
             f"{'type of A':<12}{'pairs':>9}{'wins':>8}{'margin':>8}"]
    for group, scores in summary.items():
        lines.append(f"{group:<12}{scores['pairs']:>9}{scores['specificity']:>8.3f}"
                     f"{scores['specificity_margin']:>8.3f}")
    return "\n".join(lines)
