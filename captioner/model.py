"""The whole captioner in one Keras model: encoder, decoder and vocabulary.

`Captioner.save("model.keras")` writes one self-contained file; `load_captioner`
reads it back without downloading anything.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioner.decoder import DecoderWithAttention
from captioner.encoder import Encoder
from captioner.ensemble import EnsembleDecoder
from captioner.graph import compile_function
from captioner.io_utils import atomic_path
from captioner.search import beam_search, greedy_search, sample_search
from captioner.vocabulary import Vocabulary


@dataclasses.dataclass
class Caption:
    words: list[str]
    attention: np.ndarray  # (len(words) + 1, rows, columns): one map per word, then `<end>`'s
    score: float | None = None  # beam search's (normalised) log probability
    alternatives: list[tuple[str, float]] = dataclasses.field(default_factory=list)  # beam search's runners-up
    chosen_cells: list[tuple[int, int]] | None = None  # hard attention (argmax): the one cell used for each word

    @property
    def text(self) -> str:
        return " ".join(self.words)


ENCODE_BATCH = 32  # images per encoder call in `Captioner.caption`


@keras.saving.register_keras_serializable(package="captioner")
class Captioner(keras.Model):
    def __init__(self, vocabulary: list[str], encoder: dict, decoder: dict | list[dict], max_length: int = 20,
                 **kwargs):
        """decoder: one decoder's config, or a list of them for an ensemble (`captioner.ensemble`)."""
        super().__init__(**kwargs)
        self.vocabulary = Vocabulary(vocabulary)
        self.max_length = max_length
        self.encoder = Encoder(**encoder)
        if isinstance(decoder, (list, tuple)):
            self.decoder = EnsembleDecoder(list(decoder), vocabulary_size=len(self.vocabulary), name="ensemble")
        else:
            decoder = {key: value for key, value in decoder.items() if key != "vocabulary_size"}
            self.decoder = DecoderWithAttention(vocabulary_size=len(self.vocabulary), **decoder)
        self._decoders = {}  # compiled decoding functions, one per (beam size, max length)

    @property
    def is_ensemble(self) -> bool:
        return isinstance(self.decoder, EnsembleDecoder)

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
        """Captions for features (B, L, D) from `encoder`; beam_size 1 (without length penalty) is greedy search.

        Beam search also fills each caption's `alternatives`: the other finished beams, best first.
        """
        max_length = max_length or self.max_length
        key = (beam_size, max_length, length_penalty, self.decoder.hard_inference)
        if key not in self._decoders:
            locations, size = self.feature_shape
            self._decoders[key] = compile_function(
                self._search_function(beam_size, max_length, length_penalty),
                [tf.TensorSpec([None, locations, size], tf.float32)],
            )
        outputs = self._decoders[key](tf.convert_to_tensor(features, tf.float32))
        word_ids, weights = outputs[0].numpy(), outputs[1].numpy()
        if len(outputs) == 2:  # greedy: one caption per image, no score
            word_ids, weights, scores = word_ids[:, None], weights[:, None], np.full(word_ids.shape[:1] + (1,), np.nan)
        else:
            scores = outputs[2].numpy()
        return [self._caption(ids, attention, image_scores) for ids, attention, image_scores in zip(word_ids, weights, scores)]

    def sample_features(self, features, seed: tuple[int, int]) -> np.ndarray:
        """Captions drawn from the model's distribution, as word ids (B, max_length + 1), repeatable by `seed`."""
        if "sample" not in self._decoders:
            locations, size = self.feature_shape
            vocabulary, max_length = self.vocabulary, self.max_length
            self._decoders["sample"] = compile_function(
                lambda features, seed: sample_search(self.decoder, features, vocabulary.start_id, vocabulary.end_id,
                                                     max_length, seed),
                [tf.TensorSpec([None, locations, size], tf.float32), tf.TensorSpec([2], tf.int32)],
            )
        return self._decoders["sample"](tf.convert_to_tensor(features, tf.float32), tf.constant(seed, tf.int32)).numpy()

    def _caption(self, word_ids, weights, scores) -> Caption:
        """The best of an image's captions (K, T) with its attention maps; the others as alternatives."""
        rows, columns = self.grid
        words = self.vocabulary.decode(word_ids[0])
        steps = min(len(words) + 1, word_ids.shape[1])  # the words and the `<end>` after them
        alternatives = [(" ".join(self.vocabulary.decode(ids)), float(score))
                        for ids, score in zip(word_ids[1:], scores[1:]) if np.isfinite(score)]
        attention = weights[0, :steps].reshape(steps, rows, columns)
        chosen = None
        if self.decoder.hard_attention and self.decoder.hard_inference == "argmax":
            chosen = [tuple(int(i) for i in np.unravel_index(np.argmax(m), m.shape)) for m in attention]
        return Caption(words, attention, None if np.isnan(scores[0]) else float(scores[0]), alternatives, chosen)

    def _search_function(self, beam_size: int, max_length: int, length_penalty: float):
        vocabulary = self.vocabulary
        if beam_size == 1 and length_penalty == 0:
            return lambda features: greedy_search(
                self.decoder, features, vocabulary.start_id, vocabulary.end_id, max_length
            )
        return lambda features: beam_search(
            self.decoder, features, vocabulary.start_id, vocabulary.end_id, max_length, beam_size,
            length_penalty=length_penalty, all_beams=True,
        )

    def caption(self, images, beam_size: int = 1, max_length: int | None = None,
                length_penalty: float = 0.0) -> list[Caption]:
        """Captions for images (B, S, S, 3) with RGB values in [0, 255], encoded `ENCODE_BATCH` at a time.

        The CNN's early activations are large (about 5 MB per image for MobileNetV2 at 224 px), so a
        few hundred images in one call would need gigabytes at once.
        """
        captions = []
        for start in range(0, len(images), ENCODE_BATCH):
            features = self.encoder(images[start : start + ENCODE_BATCH])
            captions.extend(self.decode_features(features, beam_size, max_length, length_penalty))
        return captions

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary.words,
            "encoder": self.encoder.get_config(),
            "decoder": self.decoder.member_configs if self.is_ensemble else self.decoder.get_config(),
            "max_length": self.max_length,
        }


SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "flickr8k_mobilenetv2.keras"


def default_model_path() -> Path:
    """The model shipped in the repository's models/ (or $CAPTIONER_MODEL): used when no --model is given."""
    return Path(os.environ.get("CAPTIONER_MODEL", SHIPPED_MODEL))


def save_model(model: Captioner, path, weights_dtype: str = "float32") -> None:
    """Write `model` to one .keras file atomically; weights_dtype "float16" halves the file.

    float16 is only how the weights are stored: loading casts them back into the model's float32
    variables, so computation (and speed) stays float32. MobileNetV2's and the decoder's weights
    lose nothing that moves the captions (measured in docs/results.md).
    """
    if weights_dtype not in ("float32", "float16"):
        raise ValueError(f"weights_dtype must be float32 or float16, got {weights_dtype!r}")
    with atomic_path(path) as temporary:
        model.save(temporary)
        if weights_dtype == "float16":
            _store_weights_as_float16(temporary)


def _store_weights_as_float16(keras_file) -> None:
    """Rewrite the float32 arrays of a .keras file's `model.weights.h5` as float16, everything else as it is."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(keras_file) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]

    def copy(source, target):
        target.attrs.update(source.attrs)
        for name, item in source.items():
            if isinstance(item, h5py.Group):
                copy(item, target.create_group(name))
            else:
                values = item[()]
                if getattr(values, "dtype", None) == np.float32:
                    values = values.astype(np.float16)
                target.create_dataset(name, data=values).attrs.update(item.attrs)

    with zipfile.ZipFile(keras_file, "w") as archive:
        for info, data in entries:
            if info.filename.endswith(".h5"):
                converted = io.BytesIO()
                with h5py.File(io.BytesIO(data), "r") as source, h5py.File(converted, "w") as target:
                    copy(source, target)
                data = converted.getvalue()
            archive.writestr(info, data)


def load_captioner(path) -> Captioner:
    """Load a model written by `Captioner.save`; raises ValueError with the path on failure."""
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
