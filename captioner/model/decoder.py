"""The decoder of "Show, Attend and Tell" (Xu et al. 2015): an LSTM that attends before every word.

One step, given the previous word y, the previous state (h, c) and the image
features a (B, L, D):

    alpha, z = attention(a, h)              where to look, and what is there
    z        = sigmoid(W_beta h) * z        gating scalar beta (paper, section 4.2.1)
    h, c     = LSTM([E y, z], (h, c))
    logits   = L_o(dropout(E y + L_h h + L_z z))    deep output layer (paper, eq. 7)

The initial state comes from the mean feature through two MLPs (paper, section 3.1.2).

Hard attention (paper, section 4.1; `hard_attention=True`): instead of the expected
context sum_i alpha_i a_i, the decoder uses the feature of ONE location s ~ alpha while
training (`sample_locations`, `read_cells`), and at inference the most likely location
(`hard_inference="argmax"`) or the expected context (`"expected"`). Training it needs REINFORCE
for the location choice: see `captioner.training.reinforce` and the trainer.

What the LSTM carries to the next word (`hard_state`):
  * "sampled" (the paper): the state that read the drawn cell. A draw then changes every later
    word, so its reward must be the whole caption's.
  * "expected": the word is predicted from the drawn cell, but the state carried forward is the one
    that read the expected context. Each draw then answers for its own word alone, and
    log p(word | expected context), computed in the same pass, is a baseline for that word
    (Deng et al., "Latent Alignment and Variational Attention", NeurIPS 2018).

Two additions the paper does not have, both optional:
  * `feature_units`: project the CNN features once per image (Dense + ReLU) to a
    smaller size; faster, and lets dot-product scores match the decoder's size.
  * `location_embedding`: add a learned vector per grid location to the features,
    so the context vector also says *where* the model looked. Without it the
    decoder can hardly tell "above" from "below".

`fused_layout` (set by the Captioner from a fused encoder, e.g. 14x14x576 beside 7x7x1280 repeated 2x2)
changes only how the projection is computed: W [a; repeat(b)] = W_a a + repeat(W_b b), so each coarse
part is projected once per coarse cell instead of once per fine cell (the same numbers, 2x less work
for MobileNetV2's fused 14x14 grid, where the projection is most of a training step).
"""

from __future__ import annotations

import keras
from keras import ops

from captioner.model.attention import Attention

HARD_INFERENCE = ("argmax", "expected")
HARD_STATES = ("sampled", "expected")


def most_likely_cell(attention_weights):
    """alpha (B, L) -> the index of its largest weight (B,), int32.

    top_k rather than argmax: the same cell (the first of ties), and an op LiteRT has.
    """
    return ops.cast(ops.top_k(attention_weights, 1)[1][:, 0], "int32")


@keras.saving.register_keras_serializable(package="captioner")
class DecoderWithAttention(keras.layers.Layer):
    def __init__(
        self,
        vocabulary_size: int,
        embedding_dim: int = 128,
        units: int = 512,
        attention: str = "additive",
        attention_units: int = 256,
        feature_units: int | None = 512,
        location_embedding: bool = True,
        dropout: float = 0.5,
        hard_attention: bool = False,
        hard_inference: str = "argmax",
        hard_state: str = "sampled",
        seed: int | None = None,
        fused_layout: list[list[int]] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hard_inference not in HARD_INFERENCE:
            raise ValueError(f"unknown hard_inference {hard_inference!r}; use {' or '.join(HARD_INFERENCE)}")
        if hard_state not in HARD_STATES:
            raise ValueError(f"unknown hard_state {hard_state!r}; use {' or '.join(HARD_STATES)}")
        self.vocabulary_size = vocabulary_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.attention_score = attention
        self.attention_units = attention_units
        self.feature_units = feature_units
        self.use_location_embedding = location_embedding
        self.dropout_rate = dropout
        self.hard_attention = hard_attention
        self.hard_inference = hard_inference
        self.hard_state = hard_state
        self.seed = seed
        self.fused_layout = [list(part) for part in fused_layout] if fused_layout else None
        if hard_attention:  # its state is a variable: checkpoints keep it, so a resumed run samples the same
            self.location_seed = keras.random.SeedGenerator(seed, name="location_seed")

        if feature_units:
            self.feature_projection = keras.layers.Dense(feature_units, activation="relu", name="feature_projection")
        self.init_h = keras.layers.Dense(units, activation="tanh", name="init_h")
        self.init_c = keras.layers.Dense(units, activation="tanh", name="init_c")
        self.attention = Attention(attention, attention_units, name="attention")
        self.gate = keras.layers.Dense(1, activation="sigmoid", name="gate")  # beta
        self.embedding = keras.layers.Embedding(vocabulary_size, embedding_dim, name="embedding")
        self.lstm_cell = keras.layers.LSTMCell(units, name="lstm_cell")
        self.hidden_to_embedding = keras.layers.Dense(embedding_dim, name="hidden_to_embedding")  # L_h
        self.context_to_embedding = keras.layers.Dense(embedding_dim, name="context_to_embedding")  # L_z
        self.dropout = keras.layers.Dropout(dropout, name="dropout")
        self.output_projection = keras.layers.Dense(vocabulary_size, name="output_projection")  # L_o

    def build(self, features_shape, tokens_shape=None):
        _, locations, raw_size = features_shape
        size = self.feature_units or raw_size
        if self.feature_units:
            self.feature_projection.build((None, locations, raw_size))
        if self.use_location_embedding:
            self.location_embedding = self.add_weight(
                shape=(locations, size), initializer="zeros", name="location_embedding"
            )
        self.init_h.build((None, size))
        self.init_c.build((None, size))
        self.attention.build((None, locations, size), (None, self.units))
        self.gate.build((None, self.units))
        self.embedding.build((None,))
        self.lstm_cell.build((None, self.embedding_dim + size))
        self.hidden_to_embedding.build((None, self.units))
        self.context_to_embedding.build((None, size))
        self.output_projection.build((None, self.embedding_dim))

    def prepare(self, features):
        """Everything that depends only on the image, computed once per image.

        features (B, L, raw D) -> (features (B, L, D), attention keys, initial [h, c] each (B, units))
        """
        if self.feature_units:
            features = self._project(features)
        if self.use_location_embedding:
            features = features + self.location_embedding
        mean_feature = ops.mean(features, axis=1)  # (B, D)
        state = [self.init_h(mean_feature), self.init_c(mean_feature)]
        return features, self.attention.keys(features), state

    def _project(self, features):
        """The feature projection, Dense + ReLU: (B, L, raw D) -> (B, L, feature_units).

        For fused features, each coarse part's channels are multiplied on its own grid and the products
        repeated up to the fine grid, which is what multiplying the repeated features would give.
        """
        if not self.fused_layout:
            return self.feature_projection(features)
        rows, columns = self.fused_layout[0][:2]  # the finest grid comes first (`Encoder.fused_layout`)
        kernel = ops.cast(self.feature_projection.kernel, features.dtype)
        projected, start = self.feature_projection.bias, 0
        for part_rows, _, channels in self.fused_layout:  # a coarse part's grid divides the fine one evenly
            part = features[:, :, start : start + channels]  # (B, L, channels)
            part_kernel = kernel[start : start + channels]
            start += channels
            factor = rows // part_rows
            if factor == 1:
                projected = projected + ops.matmul(part, part_kernel)
                continue
            # One fine cell per coarse cell (its top-left copy), projected, then repeated back over the block.
            coarse = ops.reshape(part, (-1, rows, columns, channels))[:, ::factor, ::factor]
            coarse = ops.matmul(coarse, part_kernel)  # (B, rows / factor, columns / factor, feature_units)
            coarse = ops.repeat(ops.repeat(coarse, factor, axis=1), factor, axis=2)
            projected = projected + ops.reshape(coarse, (-1, rows * columns, self.feature_units))
        return ops.relu(projected)

    def step(self, previous_words, state, features, keys, training=False):
        """One word: previous_words (B,) -> logits (B, V), new [h, c], attention weights (B, L).

        A hard-attention decoder uses one location here: the argmax (or the expected context, as set by
        `hard_inference`); sampling happens only in `sample_locations`.
        """
        policy = self.hard_inference if self.hard_attention else "expected"
        logits, state, attention_weights, _ = self._step(previous_words, state, features, keys, training, policy)
        return logits, state, attention_weights

    def _step(self, previous_words, state, features, keys, training, policy):
        """policy: "expected" (soft: sum_i alpha_i a_i), "argmax" or "sample" (one location's a_i)."""
        expected_context, attention_weights = self.look(state, features, keys)  # (B, D), (B, L)
        if policy == "expected":
            embedded = self.embedding(previous_words)  # (B, E)
            logits, state = self._read(embedded, self.gate(state[0]) * expected_context, state, training)
            return logits, state, attention_weights, None
        if policy == "sample":
            chosen = ops.squeeze(keras.random.categorical(ops.log(attention_weights + 1e-9), 1,
                                                          seed=self.location_seed), -1)
        else:
            chosen = most_likely_cell(attention_weights)
        chosen = ops.cast(chosen, "int32")  # (B,)
        logits, state = self.read_cell(previous_words, state, features, expected_context, chosen, training)
        return logits, state, attention_weights, chosen

    def look(self, state, features, keys):
        """Where to look before the next word: -> expected context (B, D), attention weights alpha (B, L)."""
        return self.attention(features, state[0], keys=keys)

    def read_cell(self, previous_words, state, features, expected_context, chosen, training=False):
        """The next word read from one cell per row, chosen (B,) int32: -> logits (B, V), new [h, c].

        Hard attention's reading, apart from the choice of the cell so that an ensemble can choose one cell
        for all its members (`EnsembleDecoder`).
        """
        hidden, _ = state
        gate = self.gate(hidden)  # (B, 1)
        embedded = self.embedding(previous_words)  # (B, E)
        index = ops.expand_dims(ops.expand_dims(chosen, -1), -1)  # (B, 1, 1); not chosen[:, None, None], see search.py
        cell = ops.squeeze(ops.take_along_axis(features, index, axis=1), 1)  # (B, D)
        logits, cell_state = self._read(embedded, gate * cell, state, training)
        if self.hard_state == "expected":  # the word read one cell; the memory reads the expected context
            cell_state = self._remember(embedded, gate * expected_context, state, training)[1]
        return logits, cell_state

    def _remember(self, embedded, context, state, training):
        """The LSTM's step on [E y, gated context]: -> hidden (B, units), [h, c]."""
        return self.lstm_cell(ops.concatenate([embedded, context], axis=-1), state, training=training)

    def _read(self, embedded, context, state, training, dropout_mask=None):
        """The LSTM step and the deep output layer for one gated context: -> logits (B, V), new [h, c].

        dropout_mask (B, E): one mask shared by several readings of the same word (see `read_cells`);
        None: the dropout layer's own.
        """
        hidden, state = self._remember(embedded, context, state, training)
        deep_output = embedded + self.hidden_to_embedding(hidden) + self.context_to_embedding(context)
        if dropout_mask is None:
            deep_output = self.dropout(deep_output, training=training)
        else:
            deep_output = deep_output * dropout_mask
        return self.output_projection(deep_output), state

    def read_cells(self, features, token_ids, cells: int = 1, choice: str = "sample", training=True):
        """Teacher forcing for hard attention with the expected context carried forward (`hard_state="expected"`).

        Every word is read twice over: once from the expected context (whose state goes on to the next word)
        and once from each of `cells` single cells, drawn from alpha (`choice="sample"`) or its top `cells`
        (`"top"`). The readings of one word share their dropout mask, so they differ only by what they read.
        token_ids (B, T) -> expected logits (B, T, V), cell logits (B, T, K, V), weights (B, T, L), chosen (B, T, K).
        """
        features, keys, state = self.prepare(features)
        all_expected, all_cells, all_weights, all_chosen = [], [], [], []
        for t in range(token_ids.shape[1]):
            hidden, _ = state
            expected_context, attention_weights = self.attention(features, hidden, keys=keys)  # (B, D), (B, L)
            if choice == "sample":
                chosen = keras.random.categorical(ops.log(attention_weights + 1e-9), cells, seed=self.location_seed)
            else:
                chosen = ops.top_k(attention_weights, cells)[1]
            chosen = ops.cast(chosen, "int32")  # (B, K)
            gate = self.gate(hidden)  # (B, 1)
            embedded = self.embedding(token_ids[:, t])  # (B, E)
            dropout_mask = self.dropout(ops.ones_like(embedded), training=training)  # 0 or 1 / (1 - rate)
            expected_logits, next_state = self._read(embedded, gate * expected_context, state, training, dropout_mask)
            cell_features = ops.take_along_axis(features, chosen[:, :, None], axis=1)  # (B, K, D)

            def repeat(tensor):  # (B, ...) -> (B * K, ...), each row's K copies side by side
                return ops.repeat(tensor, cells, axis=0)

            cell_logits, _ = self._read(repeat(embedded), repeat(gate) * ops.reshape(cell_features, (-1, features.shape[-1])),
                                        [repeat(part) for part in state], training, repeat(dropout_mask))
            all_expected.append(expected_logits)
            all_cells.append(ops.reshape(cell_logits, (-1, cells, self.vocabulary_size)))
            all_weights.append(attention_weights)
            all_chosen.append(chosen)
            state = next_state
        return (ops.stack(all_expected, axis=1), ops.stack(all_cells, axis=1), ops.stack(all_weights, axis=1),
                ops.stack(all_chosen, axis=1))

    def _teacher_forced(self, features, token_ids, training, policy):
        features, keys, state = self.prepare(features)
        all_logits, all_weights, all_chosen = [], [], []
        for t in range(token_ids.shape[1]):
            logits, state, attention_weights, chosen = self._step(token_ids[:, t], state, features, keys, training, policy)
            all_logits.append(logits)
            all_weights.append(attention_weights)
            all_chosen.append(chosen)
        return ops.stack(all_logits, axis=1), ops.stack(all_weights, axis=1), all_chosen

    def call(self, features, token_ids, training=False):
        """Teacher forcing: token_ids (B, T) are the previous words -> logits (B, T, V), weights (B, T, L).

        Soft attention; a hard-attention decoder uses the expected context here (the paper's training
        mixes it in half the time) unless `sample_locations` is called instead.
        """
        logits, weights, _ = self._teacher_forced(features, token_ids, training, "expected")
        return logits, weights

    def sample_locations(self, features, token_ids, training=True):
        """Teacher forcing with one sampled location per word: logits (B, T, V), weights (B, T, L), chosen (B, T)."""
        logits, weights, chosen = self._teacher_forced(features, token_ids, training, "sample")
        return logits, weights, ops.stack(chosen, axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "attention": self.attention_score,
            "attention_units": self.attention_units,
            "feature_units": self.feature_units,
            "location_embedding": self.use_location_embedding,
            "dropout": self.dropout_rate,
            "hard_attention": self.hard_attention,
            "hard_inference": self.hard_inference,
            "hard_state": self.hard_state,
            "seed": self.seed,
            "fused_layout": self.fused_layout,
        }
