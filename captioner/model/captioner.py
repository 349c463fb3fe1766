"""The whole captioner in one Keras model: encoder, decoder and vocabulary.

`Captioner.save("model.keras")` writes one self-contained file; `load_captioner`
reads it back without downloading anything.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from captioner.data.vocabulary import Vocabulary
from captioner.model.caption import Caption, best_caption
from captioner.model.decoder import DecoderWithAttention
from captioner.model.encoder import Encoder
from captioner.model.ensemble import EnsembleDecoder
from captioner.model.search import beam_search, greedy_search, sample_search
from captioner.model.storage_rounding import same_up_to_storage_rounding
from captioner.utils.graph import compile_function

ENCODE_BATCH = 32  # images per encoder call in `Captioner.caption`


@keras.saving.register_keras_serializable(package="captioner")
class Captioner(keras.Model):
    def __init__(self, vocabulary: list[str], encoder: dict, decoder: dict | list[dict], max_length: int = 20,
                 length_penalty: float = 0.0, no_repeat_ngram: int = 0, **kwargs):
        """decoder: one decoder's config, or a list of them for an ensemble (`captioner.model.ensemble`).
        length_penalty, no_repeat_ngram: how beam search decodes this model unless told otherwise (0: plain
        log probability; 0: repeats allowed), chosen on dev; saved with it, like the maximum length, so every
        tool decodes the model as it was measured."""
        super().__init__(**kwargs)
        self.vocabulary = Vocabulary(vocabulary)
        self.max_length = max_length
        self.length_penalty = float(length_penalty)
        self.no_repeat_ngram = int(no_repeat_ngram)
        self.encoder = Encoder(**encoder)
        # How the encoder's features are laid out is the encoder's to say (models saved before it was a setting
        # get it too).
        layout = {"fused_layout": self.encoder.fused_layout}
        if isinstance(decoder, (list, tuple)):
            decoder = [{**member, **layout} for member in decoder]
            self.decoder = EnsembleDecoder(decoder, vocabulary_size=len(self.vocabulary),
                                           feature_groups=self.encoder.members, name="ensemble")
        elif self.encoder.members > 1:
            raise ValueError(f"an encoder with {self.encoder.members} members' blocks needs as many decoders")
        else:
            decoder = {key: value for key, value in {**decoder, **layout}.items() if key != "vocabulary_size"}
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
                        length_penalty: float | None = None, no_repeat_ngram: int | None = None) -> list[Caption]:
        """Captions for features (B, L, D) from `encoder`; beam_size 1 (with neither length penalty nor n-gram
        blocking) is greedy search. length_penalty, no_repeat_ngram None: the model's own (its length penalty
        is for beam search: greedy search stays greedy).

        Beam search also fills each caption's `alternatives`: the other finished beams, best first.
        """
        max_length = max_length or self.max_length
        if length_penalty is None:
            length_penalty = self.length_penalty if beam_size > 1 else 0.0
        no_repeat_ngram = self.no_repeat_ngram if no_repeat_ngram is None else no_repeat_ngram
        key = (beam_size, max_length, length_penalty, no_repeat_ngram, self.decoder.hard_inference)
        if key not in self._decoders:
            locations, size = self.feature_shape
            self._decoders[key] = compile_function(
                self._search_function(beam_size, max_length, length_penalty, no_repeat_ngram),
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
        marks_chosen = self.decoder.hard_attention and self.decoder.hard_inference == "argmax"
        return best_caption(self.vocabulary, self.grid, word_ids, weights, scores, marks_chosen)

    def _search_function(self, beam_size: int, max_length: int, length_penalty: float, no_repeat_ngram: int):
        vocabulary = self.vocabulary
        if beam_size == 1 and length_penalty == 0 and not no_repeat_ngram:
            return lambda features: greedy_search(
                self.decoder, features, vocabulary.start_id, vocabulary.end_id, max_length
            )
        return lambda features: beam_search(
            self.decoder, features, vocabulary.start_id, vocabulary.end_id, max_length, beam_size,
            length_penalty=length_penalty, all_beams=True, no_repeat_ngram=no_repeat_ngram,
        )

    def caption(self, images, beam_size: int = 1, max_length: int | None = None,
                length_penalty: float | None = None, no_repeat_ngram: int | None = None) -> list[Caption]:
        """Captions for images (B, S, S, 3) with RGB values in [0, 255], encoded `ENCODE_BATCH` at a time.

        The CNN's early activations are large (about 5 MB per image for MobileNetV2 at 224 px), so a
        few hundred images in one call would need gigabytes at once.
        """
        captions = []
        for start in range(0, len(images), ENCODE_BATCH):
            features = self.encoder(images[start : start + ENCODE_BATCH])
            captions.extend(self.decode_features(features, beam_size, max_length, length_penalty, no_repeat_ngram))
        return captions

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary.words,
            "encoder": self.encoder.get_config(),
            "decoder": self.decoder.member_configs if self.is_ensemble else self.decoder.get_config(),
            "max_length": self.max_length,
            "length_penalty": self.length_penalty,
            "no_repeat_ngram": self.no_repeat_ngram,
        }


def make_ensemble(models, length_penalty: float = 0.0, no_repeat_ngram: int = 0):
    """One Captioner whose decoder averages the decoders of `models` (trained Captioners), decoding with
    `length_penalty` and `no_repeat_ngram` unless told otherwise (a new model: its own, chosen on dev).

    The members must share vocabulary, encoder configuration and maximum caption length, and the
    frozen part of their encoder; otherwise ValueError says which differs. Members with fine-tuned
    encoder blocks that differ keep one copy of those blocks each (`Encoder(members=N)`); a member with a
    frozen encoder joins them with the untuned blocks as its copy.
    """
    def encoder_config(model):  # Keras numbers the names of layers built in one process
        return {key: value for key, value in model.encoder.get_config().items() if key != "name"}

    def frozen_weights(model):
        return model.encoder.below.get_weights() if model.encoder.fine_tune_blocks else model.encoder.get_weights()

    # A frozen-encoder member may join fine-tuned ones: it is the same model with blocks tuned for zero steps.
    tuned = {model.encoder.fine_tune_blocks for model in models} - {0}
    if len(tuned) == 1:
        models = [model if model.encoder.fine_tune_blocks else _with_fine_tuned_blocks(model, *tuned)
                  for model in models]
    first = models[0]
    own_blocks = False  # whether the members' fine-tuned blocks differ
    for index, model in enumerate(models):
        if model.is_ensemble:
            raise ValueError(f"model {index} is an ensemble; members must be single models (unpack it first)")
        if index == 0:
            continue
        if model.decoder.hard_attention != first.decoder.hard_attention:
            kinds = {True: "hard", False: "soft"}
            raise ValueError(f"model {index} uses {kinds[model.decoder.hard_attention]} attention and model 0 "
                             f"{kinds[first.decoder.hard_attention]}: members must all be soft or all be hard")
        if model.vocabulary.words != first.vocabulary.words:
            raise ValueError(f"model {index} has another vocabulary than model 0 (train them on the same data)")
        if encoder_config(model) != encoder_config(first) or model.max_length != first.max_length:
            raise ValueError(f"model {index} has another encoder or caption length than model 0")
        if not same_up_to_storage_rounding(frozen_weights(model), frozen_weights(first)):
            raise ValueError(f"model {index}'s encoder weights differ from model 0's"
                             + (" below the fine-tuned blocks" if first.encoder.fine_tune_blocks else
                                " (fine-tuned? only fine-tuned blocks may differ)"))
        if first.encoder.fine_tune_blocks:
            own_blocks |= not _same_weights(model.encoder.above.get_weights(), first.encoder.above.get_weights())
    ensemble = Captioner(
        first.vocabulary.words, {**first.encoder.get_config(), "members": len(models) if own_blocks else 1},
        [model.decoder.get_config() for model in models], max_length=first.max_length, length_penalty=length_penalty,
        no_repeat_ngram=no_repeat_ngram,
    )
    ensemble.build()
    ensemble.encoder.backbone.set_weights(first.encoder.backbone.get_weights())
    for blocks, model in zip(ensemble.encoder.member_blocks, models[1:]):
        blocks.set_weights(model.encoder.above.get_weights())
    for member, model in zip(ensemble.decoder.members, models):
        member.set_weights(model.decoder.get_weights())
    return ensemble


def _with_fine_tuned_blocks(model: Captioner, blocks: int) -> Captioner:
    """The same captioner (same weights, same captions) with its encoder split for `blocks` fine-tuned blocks."""
    if model.is_ensemble:
        return model  # refused by make_ensemble with its own message
    copy = Captioner(model.vocabulary.words, {**model.encoder.get_config(), "fine_tune_blocks": blocks},
                     model.decoder.get_config(), max_length=model.max_length, length_penalty=model.length_penalty,
                     no_repeat_ngram=model.no_repeat_ngram)
    copy.build()
    copy.encoder.backbone.set_weights(model.encoder.backbone.get_weights())
    copy.decoder.set_weights(model.decoder.get_weights())
    return copy


def _same_weights(first: list, second: list) -> bool:
    return len(first) == len(second) and all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, second))


def ensemble_members(ensemble: Captioner) -> list[Captioner]:
    """The single models inside an ensemble (the inverse of `make_ensemble`), each with its encoder.

    Used to train the members further (e.g. fine-tuning with attention supervision) and ensemble them again.
    """
    if not ensemble.is_ensemble:
        raise ValueError("not an ensemble: it has one decoder")
    encoder_config = {**ensemble.encoder.get_config(), "members": 1}
    members = []
    for index, decoder in enumerate(ensemble.decoder.members):
        config = {key: value for key, value in decoder.get_config().items() if key not in ("name", "vocabulary_size")}
        member = Captioner(ensemble.vocabulary.words, encoder_config, config, max_length=ensemble.max_length)
        member.build()
        member.encoder.backbone.set_weights(ensemble.encoder.backbone.get_weights())
        if index and ensemble.encoder.member_blocks:
            member.encoder.above.set_weights(ensemble.encoder.member_blocks[index - 1].get_weights())
        member.decoder.set_weights(decoder.get_weights())
        members.append(member)
    return members

def caption_features(captioner: Captioner, features, beam_size: int = 1, batch_size: int = 100,
                     length_penalty: float | None = None, no_repeat_ngram: int | None = None):
    """Free-running captions for cached encoder outputs (N, L', D') (`Encoder.encode_below`; a memory-mapped
    view, say), in batches. For a frozen encoder those are the features; a fine-tuned one runs its top blocks."""
    captions = []
    for start in range(0, len(features), batch_size):
        batch = captioner.encoder.encode_above(np.asarray(features[start : start + batch_size], dtype=np.float32))
        captions.extend(captioner.decode_features(batch, beam_size=beam_size, length_penalty=length_penalty,
                                                  no_repeat_ngram=no_repeat_ngram))
    return captions
