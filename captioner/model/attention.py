"""Soft attention: how much each image location matters for the next word.

For image features a_1..a_L and the decoder's previous hidden state h, a score
function rates every location, a softmax over locations turns the scores into
weights alpha (they sum to 1), and the context vector is sum_i alpha_i * a_i.

Score functions (`score=`):
    additive    v . tanh(W_f a_i + W_h h)         Bahdanau et al. 2015; the paper's choice
    dot         a_i . h                           Luong et al. 2015; needs size(a) == size(h)
    general     a_i . (W h)                       Luong et al. 2015
    scaled_dot  a_i . h / sqrt(size(a))           Vaswani et al. 2017; needs size(a) == size(h)
    none        0 for every location                  no attention: alpha is uniform, the context is the
                                                      mean feature ("Show and Tell"-style baseline)

The parts that depend only on the image (W_f a for additive) are computed once
per image by `keys()` and reused for every word.
"""

from __future__ import annotations

import math

import keras
from keras import ops

SCORES = ("additive", "dot", "general", "scaled_dot", "none")


@keras.saving.register_keras_serializable(package="captioner")
class Attention(keras.layers.Layer):
    """features (B, L, D) and query (B, H) -> context (B, D) and weights (B, L)."""

    def __init__(self, score: str = "additive", units: int = 256, **kwargs):
        super().__init__(**kwargs)
        if score not in SCORES:
            raise ValueError(f"unknown attention score {score!r}; choose one of {', '.join(SCORES)}")
        self.score = score
        self.units = units
        if score == "additive":
            self.feature_projection = keras.layers.Dense(units, name="feature_projection")
            self.query_projection = keras.layers.Dense(units, use_bias=False, name="query_projection")
            self.score_vector = keras.layers.Dense(1, name="score_vector")

    def build(self, features_shape, query_shape):
        feature_size, query_size = features_shape[-1], query_shape[-1]
        if self.score in ("dot", "scaled_dot") and feature_size != query_size:
            raise ValueError(
                f"{self.score} attention needs feature size == decoder units, got {feature_size} and "
                f"{query_size}; project the features (feature_units) to the decoder's size or use "
                "additive/general attention"
            )
        if self.score == "additive":
            self.feature_projection.build(features_shape)
            self.query_projection.build(query_shape)
            self.score_vector.build((None, None, self.units))
        elif self.score == "general":
            # W maps the query to the feature size, known only now.
            self.query_projection = keras.layers.Dense(feature_size, use_bias=False, name="query_projection")
            self.query_projection.build(query_shape)

    def key_size(self, feature_size: int) -> int:
        """The last dimension of `keys()` for features of `feature_size`."""
        return self.units if self.score == "additive" else feature_size

    def keys(self, features):
        """The image-only part of the score, computed once per image: (B, L, units) or the features."""
        if self.score == "additive":
            return self.feature_projection(features)
        return features

    def call(self, features, query, keys=None):
        if keys is None:
            keys = self.keys(features)
        # scores: (B, L)
        if self.score == "none":
            scores = ops.zeros_like(keys[..., 0])
        elif self.score == "additive":
            hidden = ops.tanh(keys + ops.expand_dims(self.query_projection(query), 1))  # (B, L, units)
            scores = ops.squeeze(self.score_vector(hidden), -1)
        else:
            if self.score == "general":
                query = self.query_projection(query)  # (B, D)
            scores = ops.einsum("bld,bd->bl", keys, query)
            if self.score == "scaled_dot":
                scores = scores / math.sqrt(keys.shape[-1])
        weights = ops.softmax(scores, axis=-1)  # (B, L), sums to 1 over locations
        context = ops.einsum("bl,bld->bd", weights, features)  # (B, D)
        return context, weights

    def get_config(self):
        return {**super().get_config(), "score": self.score, "units": self.units}
