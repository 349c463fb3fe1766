"""Several trained decoders that caption as one: at every word, the average of their probabilities.

Decoders trained from different seeds make different mistakes; averaging their next-word
distributions (not their weights: each run ends in its own minimum) cancels some of them.
All members read the same frozen encoder's features, so an ensemble costs one encoder pass
and N decoder steps per word, and one model file holds it (`make_ensemble`, then `save_model`).
Members whose encoders were fine-tuned (`--fine-tune-encoder`) share the frozen part and each keep
their own fine-tuned blocks: each reads its own features (`feature_groups`).

    p(word | history) = 1/N sum_n p_n(word | history)        (all members see the same history)
    alpha            = 1/N sum_n alpha_n                      (the overlay shows where they looked on average)

Members with hard attention (`--attention hard`) look once between them: the cell read for a word is
the argmax of the mean alpha, and every member reads that one cell. The ensemble then still makes one
sharp look per word, the cell its overlay outlines, rather than N looks that could not be drawn as one.

The ensemble has the decoder's interface (`prepare`, `step`, `call`), so greedy, beam and sampled
decoding work unchanged. Its "logits" are log probabilities: softmax leaves them as they are.
The members' prepared features and keys are concatenated on the last axis, and their states are
one flat list, so a search can repeat and reorder them (beams) as single tensors.

Command line: captioner ensemble OUT.keras MEMBER.keras MEMBER.keras [...] [--float32]
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from captioner.model.decoder import DecoderWithAttention, most_likely_cell


@keras.saving.register_keras_serializable(package="captioner")
class EnsembleDecoder(keras.layers.Layer):
    def __init__(self, members: list[dict], vocabulary_size: int, feature_groups: int = 1, **kwargs):
        """feature_groups: 1 if every member reads all the features; len(members) if the features are the
        members' own side by side (members with their own fine-tuned encoder blocks, `Encoder(members=M)`)."""
        super().__init__(**kwargs)
        if feature_groups not in (1, len(members)):
            raise ValueError(f"an ensemble of {len(members)} decoders reads 1 or {len(members)} feature groups, "
                             f"not {feature_groups}")
        self.feature_groups = feature_groups
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 decoders, got {len(members)}")
        if len({bool(config.get("hard_attention")) for config in members}) > 1:
            raise ValueError("an ensemble's decoders must all use soft attention or all use hard attention")
        self.vocabulary_size = vocabulary_size
        self.members = [
            DecoderWithAttention(**{**config, "vocabulary_size": vocabulary_size, "name": f"member_{index}"})
            for index, config in enumerate(members)
        ]

    def build(self, features_shape, tokens_shape=None):
        raw_size = features_shape[-1] // self.feature_groups
        for member in self.members:
            member.build((*features_shape[:-1], raw_size))
        # Where each member's part of the concatenated features and keys ends.
        feature_sizes = [member.feature_units or raw_size for member in self.members]
        key_sizes = [member.attention.key_size(size) for member, size in zip(self.members, feature_sizes)]
        self._feature_splits = list(np.cumsum(feature_sizes)[:-1])
        self._key_splits = list(np.cumsum(key_sizes)[:-1])

    def prepare(self, features):
        """features (B, L, raw D) -> (features (B, L, sum D_n), keys (B, L, sum K_n), [h_1, c_1, ..., h_N, c_N])."""
        prepared = [member.prepare(own) for member, own in zip(self.members, self._own_features(features))]
        member_features = ops.concatenate([p[0] for p in prepared], axis=-1)
        member_keys = ops.concatenate([p[1] for p in prepared], axis=-1)
        state = [tensor for p in prepared for tensor in p[2]]
        return member_features, member_keys, state

    @property
    def hard_attention(self) -> bool:
        return self.members[0].hard_attention

    @property
    def hard_inference(self) -> str:
        """"argmax": hard members read the one cell the ensemble chose; "expected": each its expected context."""
        return self.members[0].hard_inference

    @hard_inference.setter
    def hard_inference(self, value: str):
        for member in self.members:
            member.hard_inference = value

    def step(self, previous_words, state, features, keys, training=False):
        """previous_words (B,) -> log of the mean probabilities (B, V), new state, mean attention weights (B, L)."""
        member_features = ops.split(features, self._feature_splits, axis=-1)
        member_keys = ops.split(keys, self._key_splits, axis=-1)
        if self.hard_attention and self.hard_inference == "argmax":
            return self._hard_step(previous_words, state, member_features, member_keys, training)
        log_probs, new_state, weights = [], [], []
        for index, member in enumerate(self.members):
            member_state = state[2 * index : 2 * index + 2]
            logits, member_state, attention_weights = member.step(
                previous_words, member_state, member_features[index], member_keys[index], training=training
            )
            log_probs.append(ops.log_softmax(logits, axis=-1))
            new_state.extend(member_state)
            weights.append(attention_weights)
        return self._average(log_probs), new_state, ops.mean(ops.stack(weights), axis=0)

    def _hard_step(self, previous_words, state, member_features, member_keys, training):
        """Hard members: one cell for all, the argmax of their mean alpha; each reads it with its own state."""
        member_states = [state[2 * index : 2 * index + 2] for index in range(len(self.members))]
        looks = [member.look(member_state, own_features, own_keys)  # each (expected context, alpha)
                 for member, member_state, own_features, own_keys
                 in zip(self.members, member_states, member_features, member_keys)]
        mean_weights = ops.mean(ops.stack([weights for _, weights in looks]), axis=0)  # (B, L)
        chosen = most_likely_cell(mean_weights)  # (B,)
        log_probs, new_state = [], []
        for member, member_state, own_features, (expected_context, _) in zip(
                self.members, member_states, member_features, looks):
            logits, member_state = member.read_cell(previous_words, member_state, own_features, expected_context,
                                                    chosen, training)
            log_probs.append(ops.log_softmax(logits, axis=-1))
            new_state.extend(member_state)
        return self._average(log_probs), new_state, mean_weights

    def call(self, features, token_ids, training=False):
        """Teacher forcing: -> log of the mean probabilities (B, T, V), mean attention weights (B, T, L)."""
        outputs = [member(own, token_ids, training=training)
                   for member, own in zip(self.members, self._own_features(features))]
        log_probs = [ops.log_softmax(logits, axis=-1) for logits, _ in outputs]
        return self._average(log_probs), ops.mean(ops.stack([weights for _, weights in outputs]), axis=0)

    def _own_features(self, features) -> list:
        """Each member's raw features: all of them, or its group of the members' side-by-side features."""
        if self.feature_groups == 1:
            return [features] * len(self.members)
        return ops.split(features, self.feature_groups, axis=-1)

    def _average(self, log_probs):
        """log(1/N sum_n p_n), computed from log p_n without leaving log space."""
        return ops.logsumexp(ops.stack(log_probs), axis=0) - math.log(len(log_probs))

    @property
    def member_configs(self) -> list[dict]:
        return [member.get_config() for member in self.members]

    def get_config(self):
        return {**super().get_config(), "members": self.member_configs, "vocabulary_size": self.vocabulary_size,
                "feature_groups": self.feature_groups}
