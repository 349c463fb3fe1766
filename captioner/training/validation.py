"""The dev split after each epoch: its loss, free-running captions and their scores.

The scores are the row's `val_*` metrics; `val_<best_metric>` picks the best checkpoint,
the learning-rate cuts and early stopping (`captioner.training.callbacks`).
"""

from __future__ import annotations

from captioner.data.datasets import Split
from captioner.evaluation import metrics
from captioner.model.captioner import caption_features
from captioner.training.epochs import validation_loss
from captioner.training.trainer import Trainer


def validate(trainer: Trainer, features, image_index, token_ids, split: Split) -> dict[str, float]:
    """val_loss (teacher forced) and the scores of greedy (or `validation_beam`) dev captions, as `val_*` metrics."""
    row = {"val_loss": validation_loss(trainer, features, image_index, token_ids)}
    # Plain search, whatever decoding a model started from has saved: each run's dev column compares with all others.
    captions = caption_features(trainer.captioner, features, trainer.config.validation_beam, length_penalty=0.0,
                                no_repeat_ngram=0)
    row.update({f"val_{key}": value for key, value in score_captions(captions, split).items()})
    best = f"val_{trainer.config.best_metric}"
    if best not in row:
        raise ValueError(f"best_metric {trainer.config.best_metric!r} is not measured here; choose from "
                         f"{', '.join(key[4:] for key in row if key.startswith('val_'))}")
    return row


def score_captions(captions, split: Split) -> dict[str, float]:
    """BLEU-1..4 (nltk corpus BLEU), CIDEr-D and, for synthetic scenes, exact match and attention grounding."""
    hypotheses = [c.words for c in captions]
    scores = metrics.bleu_scores(hypotheses, split.captions)
    scores["cider"] = metrics.cider_d(hypotheses, split.captions)
    return {**scores, **synthetic_scores(captions, split)}


def synthetic_scores(captions, split: Split) -> dict[str, float]:
    """Exact match, attention grounding and peaks, for splits with ground truth (synthetic scenes); else nothing."""
    if split.scenes is None:
        return {}
    return {
        "exact_match": metrics.exact_match([c.words for c in captions], split.captions),
        **metrics.attention_grounding(captions, split.scenes),
        **metrics.attention_peaks(captions, split.scenes),
    }
