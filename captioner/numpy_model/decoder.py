"""The decoder's step in NumPy (`captioner.model.decoder` has the equations), and the ensemble's average.

Shapes as there: B images (times beams), L locations, D feature size, V words.

Decoding one photo with beam 3 reads every weight matrix of every member for three rows at a time: the step is
bound by memory, not arithmetic (bench/RESULTS.md, "The NumPy copy's decoding step").
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np


def _tanh(x: np.ndarray) -> np.ndarray:
    """tanh(x) = 1 - 2 / (exp(2x) + 1): NumPy's float32 exp is vectorised where its tanh is not (without
    AVX-512), and tanh over the attention's (B, L, A) sums was a third of a decoding step."""
    with np.errstate(over="ignore"):  # exp(2x) = inf for large x gives 1 - 0 = 1, as it should
        y = np.exp(2.0 * x)
    y += 1.0
    np.divide(-2.0, y, out=y)
    y += 1.0
    return y


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (_tanh(0.5 * x) + 1.0)  # = 1 / (1 + exp(-x)), without overflow for large -x


def _softmax(scores: np.ndarray) -> np.ndarray:
    exponentials = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class Dense:
    """x @ kernel + bias, then the activation (the variables of a keras Dense layer)."""

    def __init__(self, variables: list[np.ndarray], activation: Callable | None = None):
        self.kernel = variables[0]
        self.bias = variables[1] if len(variables) > 1 else None
        self.activation = activation

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.kernel
        if self.bias is not None:
            y += self.bias
        return self.activation(y) if self.activation else y


def _relu(x):
    return np.maximum(x, 0.0)


class Decoder:
    """One `DecoderWithAttention`: config as saved, variables(path) its weights under its own path."""

    def __init__(self, config: dict, variables: Callable[[str], list[np.ndarray]]):
        self.vocabulary_size = config["vocabulary_size"]
        self.score = config.get("attention", "additive")
        self.hard_attention = config.get("hard_attention", False)
        self.hard_inference = config.get("hard_inference", "argmax")
        self.hard_state = config.get("hard_state", "sampled")  # what the LSTM carries on: see DecoderWithAttention
        self.feature_projection = (Dense(variables("feature_projection"), _relu)
                                   if config.get("feature_units") else None)
        self.fused_layout = config.get("fused_layout")  # [[rows, columns, channels], ...], the finest grid first
        self.location_embedding = variables("")[0] if config.get("location_embedding", True) else None
        self.init_h = Dense(variables("init_h"), _tanh)
        self.init_c = Dense(variables("init_c"), _tanh)
        if self.score == "additive":
            self.key_projection = Dense(variables("attention/feature_projection"))
            self.query_projection = Dense(variables("attention/query_projection"))
            self.score_vector = Dense(variables("attention/score_vector"))
        elif self.score == "general":
            self.query_projection = Dense(variables("attention/query_projection"))
        self.gate = Dense(variables("gate"), _sigmoid)
        (self.embedding,) = variables("embedding")
        self.lstm_kernel, self.lstm_recurrent_kernel, self.lstm_bias = variables("lstm_cell")
        self.hidden_to_embedding = Dense(variables("hidden_to_embedding"))
        self.context_to_embedding = Dense(variables("context_to_embedding"))
        self.output_projection = Dense(variables("output_projection"))

    def prepare(self, features: np.ndarray):
        """features (B, L, raw D) -> features (B, L, D), keys, [h, c]: what depends only on the image."""
        if self.feature_projection is not None:
            features = self._project(features)
        if self.location_embedding is not None:
            features = features + self.location_embedding
        mean_feature = features.mean(axis=1)
        keys = self.key_projection(features) if self.score == "additive" else features
        return features, keys, [self.init_h(mean_feature), self.init_c(mean_feature)]

    def _project(self, features: np.ndarray) -> np.ndarray:
        """The feature projection; fused features' coarse parts projected once per coarse cell and repeated, as
        `DecoderWithAttention._project` does (the same numbers, less work)."""
        if not self.fused_layout:
            return self.feature_projection(features)
        rows, columns = self.fused_layout[0][:2]
        kernel, projected, start = self.feature_projection.kernel, self.feature_projection.bias, 0
        for part_rows, _, channels in self.fused_layout:
            part, part_kernel = features[:, :, start : start + channels], kernel[start : start + channels]
            start += channels
            factor = rows // part_rows
            if factor > 1:  # the top-left copy of each coarse cell, projected, then repeated over its block
                coarse = part.reshape(-1, rows, columns, channels)[:, ::factor, ::factor] @ part_kernel
                coarse = coarse.repeat(factor, axis=1).repeat(factor, axis=2)
                part_projected = coarse.reshape(len(part), rows * columns, -1)
            else:
                part_projected = part @ part_kernel
            projected = projected + part_projected
        return _relu(projected)

    def attend(self, features, keys, hidden):
        """-> context (B, D), attention weights (B, L)."""
        if self.score == "none":
            scores = np.zeros(keys.shape[:2], np.float32)
        elif self.score == "additive":
            scores = self.score_vector(_tanh(keys + self.query_projection(hidden)[:, None]))[..., 0]
        else:
            query = self.query_projection(hidden) if self.score == "general" else hidden
            scores = np.einsum("bld,bd->bl", keys, query)
            if self.score == "scaled_dot":
                scores = scores / np.float32(math.sqrt(keys.shape[-1]))
        weights = _softmax(scores)
        return (weights[:, None, :] @ features)[:, 0], weights  # sum_i alpha_i a_i

    def step(self, previous_words, state, features, keys):
        """previous_words (B,) -> logits (B, V), new [h, c], attention weights (B, L)."""
        context, weights = self.attend(features, keys, state[0])
        if not (self.hard_attention and self.hard_inference == "argmax"):
            embedded = self.embedding[previous_words]
            return (*self._read(embedded, self.gate(state[0]) * context, state), weights)
        chosen = weights.argmax(axis=-1)  # one location: the most likely
        return (*self.read_cell(previous_words, state, features, context, chosen), weights)

    def read_cell(self, previous_words, state, features, context, chosen):
        """The next word read from the cell chosen (B,) of each row: -> logits (B, V), new [h, c]."""
        gate = self.gate(state[0])
        embedded = self.embedding[previous_words]
        cell = features[np.arange(len(features)), chosen]
        logits, cell_state = self._read(embedded, gate * cell, state)
        if self.hard_state == "expected":  # the word read one cell; the memory reads the expected context
            cell_state = self._remember(embedded, gate * context, state)
        return logits, cell_state

    def _remember(self, embedded, context, state):
        """keras.layers.LSTMCell on [E y, gated context]: gates input, forget, cell, output, in that order."""
        hidden, memory = state
        gates = np.concatenate([embedded, context], axis=-1) @ self.lstm_kernel + hidden @ self.lstm_recurrent_kernel
        gates += self.lstm_bias
        input_gate, forget_gate, candidate, output_gate = np.split(gates, 4, axis=-1)
        memory = _sigmoid(forget_gate) * memory + _sigmoid(input_gate) * _tanh(candidate)
        return [_sigmoid(output_gate) * _tanh(memory), memory]

    def _read(self, embedded, context, state):
        """The LSTM step and the deep output layer for one gated context: -> logits (B, V), new [h, c]."""
        state = self._remember(embedded, context, state)
        deep_output = embedded + self.hidden_to_embedding(state[0]) + self.context_to_embedding(context)
        return self.output_projection(deep_output), state


class Ensemble:
    """Several decoders as one: log of their mean next-word probabilities, the mean of their maps.

    Hard members read one cell between them, the argmax of their mean map (as `EnsembleDecoder`).
    """

    def __init__(self, members: list[Decoder], feature_groups: int = 1):
        """feature_groups: 1 if every member reads all the features, len(members) if each reads its own part
        (members with their own fine-tuned encoder blocks), as in `captioner.model.ensemble`."""
        self.members = members
        self.feature_groups = feature_groups
        self.vocabulary_size = members[0].vocabulary_size

    @property
    def hard_attention(self) -> bool:
        return self.members[0].hard_attention

    @property
    def hard_inference(self) -> str:
        return self.members[0].hard_inference

    @hard_inference.setter
    def hard_inference(self, value: str):
        for member in self.members:
            member.hard_inference = value

    def prepare(self, features):
        own = ([features] * len(self.members) if self.feature_groups == 1
               else np.split(features, self.feature_groups, axis=-1))
        prepared = [member.prepare(part) for member, part in zip(self.members, own)]
        return ([p[0] for p in prepared], [p[1] for p in prepared], [tensor for p in prepared for tensor in p[2]])

    def step(self, previous_words, state, features, keys):
        states = [state[2 * index : 2 * index + 2] for index in range(len(self.members))]
        if self.hard_attention and self.hard_inference == "argmax":
            looks = [member.attend(features[index], keys[index], states[index][0])
                     for index, member in enumerate(self.members)]
            weights = np.mean(np.stack([member_weights for _, member_weights in looks]), axis=0)
            chosen = weights.argmax(axis=-1)  # one cell for all members
            outputs = [member.read_cell(previous_words, states[index], features[index], looks[index][0], chosen)
                       for index, member in enumerate(self.members)]
        else:
            stepped = [member.step(previous_words, states[index], features[index], keys[index])
                       for index, member in enumerate(self.members)]
            outputs = [(logits, member_state) for logits, member_state, _ in stepped]
            weights = np.mean(np.stack([member_weights for _, _, member_weights in stepped]), axis=0)
        stacked = np.stack([log_softmax(logits) for logits, _ in outputs])
        top = stacked.max(axis=0)
        average = top + np.log(np.exp(stacked - top).sum(axis=0)) - math.log(len(outputs))
        return average, [tensor for _, member_state in outputs for tensor in member_state], weights
