import numpy as np
import pytest

from captioner.model.attention import SCORES, Attention


@pytest.mark.parametrize("score", SCORES)
def test_weights_sum_to_one_and_context_is_their_weighted_sum(score):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 9, 8)).astype("float32")
    query = rng.normal(size=(2, 8)).astype("float32")
    context, weights = Attention(score, units=4)(features, query)
    weights = np.asarray(weights)
    assert weights.shape == (2, 9)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), np.einsum("bl,bld->bd", weights, features), atol=1e-5)


def test_dot_score_matches_numpy():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(1, 5, 4)).astype("float32")
    query = rng.normal(size=(1, 4)).astype("float32")
    for score, scale in (("dot", 1.0), ("scaled_dot", 2.0)):
        _, weights = Attention(score)(features, query)
        scores = features[0] @ query[0] / scale
        expected = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        np.testing.assert_allclose(np.asarray(weights)[0], expected, rtol=1e-5)


def test_query_changes_the_weights():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(1, 6, 8)).astype("float32")
    attention = Attention("additive", units=8)
    _, first = attention(features, rng.normal(size=(1, 8)).astype("float32"))
    _, second = attention(features, rng.normal(size=(1, 8)).astype("float32"))
    assert np.abs(np.asarray(first) - np.asarray(second)).max() > 1e-3


def test_dot_needs_matching_sizes():
    with pytest.raises(ValueError, match="feature size"):
        Attention("dot")(np.zeros((1, 4, 8), "float32"), np.zeros((1, 6), "float32"))


def test_unknown_score_is_refused():
    with pytest.raises(ValueError, match="unknown attention score"):
        Attention("cosine")


def test_no_attention_is_the_mean_feature_whatever_the_query():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(2, 6, 4)).astype("float32")
    attention = Attention("none")
    for _ in range(2):
        context, weights = attention(features, rng.normal(size=(2, 4)).astype("float32"))
        np.testing.assert_allclose(np.asarray(weights), 1 / 6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(context), features.mean(axis=1), atol=1e-5)
