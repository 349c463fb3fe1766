"""The COCO caption metrics (pycocoevalcap): BLEU-1..4, METEOR, ROUGE-L and CIDEr-D.

These are the numbers papers report. Captions are tokenised with the Stanford PTB tokenizer
and METEOR runs its own jar; both need Java. Without Java, the references and captions are
tokenised with our own tokenizer instead, METEOR is reported as unavailable with the reason,
and the scores say which tokenizer made them. pycocoevalcap's `Cider` is CIDEr-D (the
clipped, length-penalised variant used by the COCO server). SPICE is not computed: it
downloads a Stanford model on first use.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import shutil

from captioner.data.vocabulary import tokenize

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")


def java_available() -> bool:
    return shutil.which("java") is not None


def _tokenised(references: dict, hypotheses: dict, use_java: bool):
    if use_java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        with contextlib.redirect_stdout(io.StringIO()):
            gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
            res = tokenizer.tokenize({k: [{"caption": hypotheses[k]}] for k in references})
        return gts, res
    gts = {k: [" ".join(tokenize(c)) for c in v] for k, v in references.items()}
    res = {k: [" ".join(tokenize(hypotheses[k]))] for k in references}
    return gts, res


def _cider_d(gts: dict, res: dict) -> float:
    from pycocoevalcap.cider.cider import Cider

    with contextlib.redirect_stdout(io.StringIO()):
        return float(Cider().compute_score(gts, res)[0])


def cider_d(references: dict, hypotheses: dict) -> float:
    """CIDEr-D alone, on our tokenizer's words: cheap enough for every epoch, no Java."""
    return _cider_d(*_tokenised(references, hypotheses, use_java=False))


def coco_scores(references: dict, hypotheses: dict, use_java: bool | None = None, meteor: bool = True) -> dict:
    """references {id: [caption, ...]}, hypotheses {id: caption} -> {"BLEU-4": ..., "unavailable": {...}}."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    use_java = java_available() if use_java is None else use_java
    gts, res = _tokenised(references, hypotheses, use_java)
    scores: dict = {"tokenizer": "PTBTokenizer (Stanford CoreNLP)" if use_java else "captioner regex (no Java)"}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its internals
        bleu, _ = Bleu(4).compute_score(gts, res)
        scores.update({f"BLEU-{n}": float(b) for n, b in enumerate(bleu, start=1)})
        scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr-D"] = _cider_d(gts, res)
    unavailable = {}
    if meteor and use_java:
        scores["METEOR"] = _meteor_score(gts, res)
    elif meteor:
        unavailable["METEOR"] = "needs Java (the METEOR 1.5 jar); install a JRE, e.g. apt-get install default-jre"
    if unavailable:
        scores["unavailable"] = unavailable
    return scores


def start_meteor() -> None:
    """Start METEOR's Java scorer now, in the background, so that its start (about 10 s) overlaps the work done
    before the scores are asked for: captioning a split, a training run's last epoch. Without Java, nothing."""
    if java_available():
        _meteor_scorer()  # starts the jar and returns; the first score waits for it to be ready


@functools.cache
def _meteor_scorer():
    """One METEOR scorer per process. Its jar takes about 10 s to start (Java, then its paraphrase tables: most
    of a short training run's test report), so every later call in the process reuses it: several splits or
    beam sizes, or a test suite's many small runs. Its Java process ends with ours."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    atexit.register(scorer.meteor_p.kill)
    return scorer


def _meteor_score(gts: dict, res: dict) -> float:
    try:
        return float(_meteor_scorer().compute_score(gts, res)[0])
    except (OSError, ValueError):  # its Java process died (killed, out of memory): start another, once
        stale = _meteor_scorer()
        _meteor_scorer.cache_clear()
        if stale.lock.locked():
            stale.lock.release()  # pycocoevalcap holds its lock across the failed exchange
        with contextlib.suppress(OSError):  # the pipe is broken; closed here, its __del__ has nothing left to do
            stale.meteor_p.stdin.close()
        return float(_meteor_scorer().compute_score(gts, res)[0])
