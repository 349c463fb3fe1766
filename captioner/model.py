"""The whole captioner in one Keras model: encoder, decoder and vocabulary.

`Captioner.save("model.keras")` writes one self-contained file; `load_captioner`
reads it back without downloading anything.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from captioner.decoder import DecoderWithAttention
from captioner.encoder import Encoder
from captioner.graph import compile_function
from captioner.search import beam_search, greedy_search
from captioner.vocabulary import Vocabulary


@dataclasses.dataclass
class Caption:
    words: list[str]
    attention: np.ndarray  # (len(words) + 1, rows, columns): one map per word, then `<end>`'s
    score: float | None = None  # beam search's (normalised) log probability

    @property
    def text(self) -> str:
        return " ".join(self.words)


@keras.saving.register_keras_serializable(package="captioner")
class Captioner(keras.Model):
    def __init__(self, vocabulary: list[str], encoder: dict, decoder: dict, max_length: int = 20, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = Vocabulary(vocabulary)
        self.max_length = max_length
        self.encoder = Encoder(**encoder)
        decoder = {key: value for key, value in decoder.items() if key != "vocabulary_size"}
        self.decoder = DecoderWithAttention(vocabulary_size=len(self.vocabulary), **decoder)
        self._decoders = {}  # compiled decoding functions, one per (beam size, max length)

    @property
    def grid(self) -> tuple[int, int]:
        return self.encoder.grid

    @property
    def feature_shape(self) -> tuple[int, int]:
        rows, columns = self.encoder.grid
        return rows * columns, self.encoder.feature_size

    def build(self, input_shape=None):
        self.decoder.build((None, *self.feature_shape))
        self.built = True

    def call(self, inputs, training=False):
        """(images (B, S, S, 3), previous words (B, T)) -> logits (B, T, V), attention (B, T, L)."""
        images, token_ids = inputs
        return self.decoder(self.encoder(images), token_ids, training=training)

    def decode_features(self, features, beam_size: int = 1, max_length: int | None = None,
                        length_penalty: float = 0.0) -> list[Caption]:
        """Captions for features (B, L, D) from `encoder`; beam_size 1 (without length penalty) is greedy search."""
        max_length = max_length or self.max_length
        key = (beam_size, max_length, length_penalty)
        if key not in self._decoders:
            locations, size = self.feature_shape
            self._decoders[key] = compile_function(
                self._search_function(beam_size, max_length, length_penalty),
                [tf.TensorSpec([None, locations, size], tf.float32)],
            )
        outputs = self._decoders[key](tf.convert_to_tensor(features, tf.float32))
        word_ids, weights = outputs[0].numpy(), outputs[1].numpy()
        scores = outputs[2].numpy() if len(outputs) > 2 else [None] * len(word_ids)
        rows, columns = self.grid
        captions = []
        for ids, attention, score in zip(word_ids, weights, scores):
            words = self.vocabulary.decode(ids)
            steps = min(len(words) + 1, len(ids))  # the words and the `<end>` after them
            captions.append(
                Caption(words, attention[:steps].reshape(steps, rows, columns), None if score is None else float(score))
            )
        return captions

    def _search_function(self, beam_size: int, max_length: int, length_penalty: float):
        vocabulary = self.vocabulary
        if beam_size == 1 and length_penalty == 0:
            return lambda features: greedy_search(
                self.decoder, features, vocabulary.start_id, vocabulary.end_id, max_length
            )
        return lambda features: beam_search(
            self.decoder, features, vocabulary.start_id, vocabulary.end_id, max_length, beam_size,
            length_penalty=length_penalty,
        )

    def caption(self, images, beam_size: int = 1, max_length: int | None = None,
                length_penalty: float = 0.0) -> list[Caption]:
        """Captions for images (B, S, S, 3) with RGB values in [0, 255]."""
        return self.decode_features(self.encoder(images), beam_size, max_length, length_penalty)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary.words,
            "encoder": self.encoder.get_config(),
            "decoder": self.decoder.get_config(),
            "max_length": self.max_length,
        }


def load_captioner(path) -> Captioner:
    """Load a model written by `Captioner.save`; raises ValueError with the path on failure."""
    import os
    import zipfile

    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .keras model file (not a zip archive, or cut short)")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:
        raise ValueError(f"{path}: not a captioner model ({str(error).splitlines()[0] if str(error) else error})")
    if not isinstance(model, Captioner):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a Captioner")
    return model
