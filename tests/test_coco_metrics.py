import pytest

from captioner.data.vocabulary import tokenize
from captioner.evaluation import metrics
from captioner.evaluation.coco_metrics import coco_scores, java_available

REFERENCES = {
    "a.jpg": ["A dog runs on the grass.", "a brown dog running across a field", "The dog is running"],
    "b.jpg": ["Two men play football in a park", "men playing soccer", "two people kick a ball"],
}


def test_perfect_captions_score_higher_than_poor_ones_without_java():
    perfect = {k: v[0] for k, v in REFERENCES.items()}
    poor = {"a.jpg": "a cat sleeps on a sofa", "b.jpg": "a plate of food"}
    good_scores = coco_scores(REFERENCES, perfect, use_java=False)
    poor_scores = coco_scores(REFERENCES, poor, use_java=False)
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D"):
        assert good_scores[name] > poor_scores[name], name
    assert good_scores["BLEU-1"] == pytest.approx(1.0)
    assert "METEOR" in good_scores["unavailable"] and "Java" in good_scores["unavailable"]["METEOR"]
    assert good_scores["tokenizer"].startswith("captioner")


def test_our_cider_matches_the_coco_toolkit_on_the_same_tokens():
    hypotheses = {"a.jpg": "a dog running on grass", "b.jpg": "two men play soccer"}
    coco = coco_scores(REFERENCES, hypotheses, use_java=False, meteor=False)["CIDEr-D"]
    ours = metrics.cider_d([tokenize(h) for h in hypotheses.values()], list(REFERENCES.values()))
    assert ours == pytest.approx(coco)


@pytest.mark.skipif(not java_available(), reason="METEOR and the PTB tokenizer need Java")
def test_with_java_all_metrics_are_there():
    scores = coco_scores(REFERENCES, {"a.jpg": "a dog runs on the grass", "b.jpg": "men playing soccer"})
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"):
        assert 0.0 < scores[name], name
    assert "unavailable" not in scores and scores["tokenizer"].startswith("PTBTokenizer")


@pytest.mark.parametrize("use_java", [False, pytest.param(True, marks=pytest.mark.skipif(
    not java_available(), reason="the PTB tokenizer needs Java"))])
def test_known_answers_identical_and_disjoint(use_java):
    references = {"x": ["the cat sat on the mat today"], "y": ["a dog ran across the green park"]}
    identical = coco_scores(references, {k: v[0] for k, v in references.items()}, use_java=use_java, meteor=False)
    for n in range(1, 5):
        assert identical[f"BLEU-{n}"] == pytest.approx(1.0, abs=1e-6)
    assert identical["ROUGE-L"] == pytest.approx(1.0)
    disjoint = coco_scores(references, {"x": "zebra zebra zebra", "y": "quantum flux capacitor"},
                           use_java=use_java, meteor=False)
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D"):
        assert disjoint[name] == pytest.approx(0.0, abs=1e-6), name


def test_nltk_bleu_known_answers():
    references = [["the cat sat on the mat today"], ["a dog ran across the green park"]]
    same = metrics.bleu_scores([r[0].split() for r in references], references)
    assert all(same[f"bleu{n}"] == pytest.approx(1.0) for n in range(1, 5))
    disjoint = metrics.bleu_scores([["zebra"] * 3, ["quantum", "flux", "capacitor"]], references)
    assert all(disjoint[f"bleu{n}"] == 0.0 for n in range(1, 5))


@pytest.mark.skipif(not java_available(), reason="METEOR needs Java")
def test_one_meteor_process_serves_every_call_and_a_dead_one_is_replaced():
    from captioner.evaluation import coco_metrics

    references = {1: ["a dog runs on the grass", "a brown dog running"], 2: ["two people on a beach"]}
    hypotheses = {1: "a dog runs on grass", 2: "people on the beach"}
    first = coco_scores(references, hypotheses)["METEOR"]
    process = coco_metrics._meteor_scorer().meteor_p
    assert coco_scores(references, hypotheses)["METEOR"] == first
    assert coco_metrics._meteor_scorer().meteor_p is process  # the same Java process: started once
    process.kill()
    process.wait()
    assert coco_scores(references, hypotheses)["METEOR"] == first  # a new one, the same score
    assert coco_metrics._meteor_scorer().meteor_p is not process


@pytest.mark.skipif(not java_available(), reason="METEOR needs Java")
def test_a_meteor_scorer_started_early_is_running_before_and_scores_after():
    """`start_meteor` (before a split is captioned, at a run's last epoch) must start the very process that later
    scores."""
    from captioner.evaluation import coco_metrics

    coco_metrics._meteor_scorer.cache_clear()  # a fresh start, as in a new process
    coco_metrics.start_meteor()
    assert coco_metrics._meteor_scorer.cache_info().currsize == 1  # started by start_meteor itself
    process = coco_metrics._meteor_scorer().meteor_p
    assert process.poll() is None  # running, though no score has been asked for yet
    scores = coco_scores({1: ["a dog runs on the grass"]}, {1: "a dog runs on the grass"})
    assert scores["METEOR"] == pytest.approx(1.0, abs=1e-3)
    assert coco_metrics._meteor_scorer().meteor_p is process
