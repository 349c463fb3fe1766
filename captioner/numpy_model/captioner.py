"""A `.keras` captioner loaded into NumPy: `load_numpy_captioner(path).caption(images, beam_size)`.

The same interface as the Keras `Captioner` for what captioning needs (`caption`, `decode_features`,
`grid`, `vocabulary`, `encoder.image_size`, `decoder.hard_inference`), and the same `Caption`s.
"""

from __future__ import annotations

import numpy as np

from captioner.data.vocabulary import Vocabulary
from captioner.model.caption import Caption, best_caption
from captioner.numpy_model.decoder import Decoder, Ensemble
from captioner.numpy_model.mobilenet_v2 import MobileNetV2
from captioner.numpy_model.search import beam_search, greedy_search
from captioner.numpy_model.weights import KerasFile, numbered_layer

ENCODE_BATCH = 8  # images per encoder call: MobileNetV2's early maps take about 5 MB per image each


class UnsupportedModel(ValueError):
    """The model holds something the NumPy version does not run (another backbone): use the Keras model."""


class Encoder:
    """images (B, S, S, 3), RGB in [0, 255] -> features (B, L, D), like `captioner.model.encoder.Encoder`."""

    def __init__(self, config: dict, keras_file: KerasFile):
        if config.get("backbone") != "mobilenet_v2":
            raise UnsupportedModel(f"{keras_file.path}: the NumPy model runs MobileNetV2 encoders, not "
                                   f"{config.get('backbone')}")
        self.image_size = config["image_size"]
        self.layers = (config.get("layer") or "out_relu").split("+")  # several: fused (captioner.model.encoder)
        names = MobileNetV2.layer_names()
        unknown = [name for name in self.layers if name not in names]
        if unknown:
            raise UnsupportedModel(f"{keras_file.path}: MobileNetV2 has no layer {unknown[0]!r} this NumPy version "
                                   f"can stop at")
        in_order = sorted(self.layers, key=names.index)  # the last ends the forward pass, the others are kept
        backbone = "encoder/backbone/layers"
        # With fine-tuned blocks, one network per ensemble member: the same frozen layers, each member's own blocks.
        weights = [_MemberWeights(keras_file, backbone, index) for index in range(config.get("members", 1))]
        self.networks = [MobileNetV2(variables, cut=in_order[-1], also=tuple(in_order[:-1])) for variables in weights]
        # Where the members' own blocks begin: the frozen layers below run once for all of them.
        owned = [layer for layer, saved in self.networks[0].saved_names.items()
                 if any(variables.owns(saved) for variables in weights[1:])]
        self.first_own = min(owned, key=self.networks[0].layer_order.index) if owned else None
        self.grid = max((MobileNetV2.grid(self.image_size, name) for name in self.layers), key=lambda grid: grid[0])

    def __call__(self, images) -> np.ndarray:
        shared = {"input": MobileNetV2.preprocess(images)}
        if self.first_own:  # the frozen part once, then each member's blocks from where they begin
            shared = self.networks[0].run(shared, stop=self.first_own)
        # Members side by side on the channel axis, as `Encoder.encode_above` joins them.
        features = np.concatenate([self._features(network.run(shared, first=self.first_own))
                                   for network in self.networks], axis=-1)
        return features.reshape(len(features), -1, features.shape[-1])

    def _features(self, activations: dict[str, np.ndarray]) -> np.ndarray:
        """The cut's activations; fused: each named map repeated up to the finest grid, in the config's order."""
        if len(self.layers) == 1:
            return activations[self.layers[0]]
        rows = self.grid[0]
        return np.concatenate([np.repeat(np.repeat(activations[name], rows // activations[name].shape[1], axis=1),
                                         rows // activations[name].shape[2], axis=2) for name in self.layers],
                              axis=-1)


class _MemberWeights:
    """The weights of a backbone layer by its saved name, for ensemble member `member`: `weights(name)`.

    A fine-tuned encoder's blocks are saved as a model of their own: member 0's at `encoder/above` (Keras keeps
    each weight once, where it meets it first), member m's copy at `encoder/member_blocks/functional_<m-1>`.
    Their layers are numbered from 0 per class, so their `conv2d_k` is the network's `conv2d_{k + offset}`,
    offset being how many layers of that class lie below the blocks.
    """

    def __init__(self, keras_file: KerasFile, backbone: str, member: int):
        above = "encoder/above/layers"
        self.keras_file, self.backbone = keras_file, backbone
        self.blocks = above if member == 0 else (
            "encoder/member_blocks/functional" + (f"_{member - 1}" if member > 1 else "") + "/layers")
        self.in_blocks = keras_file.layer_counts(self.blocks)
        if member and not self.in_blocks:
            raise UnsupportedModel(f"{keras_file.path}: no fine-tuned blocks saved for ensemble member {member}")
        self.in_network = keras_file.layer_counts(backbone)
        for kind, count in keras_file.layer_counts(above).items():
            self.in_network[kind] = self.in_network.get(kind, 0) + count

    def _own_number(self, name: str) -> int:
        """The layer's number among the member's own blocks (negative: below them, shared by every member)."""
        kind, number = numbered_layer(name)
        return number - (self.in_network.get(kind, 0) - self.in_blocks.get(kind, 0))

    def owns(self, name: str) -> bool:
        """Whether the layer saved as `name` is one of the member's own fine-tuned blocks."""
        return bool(self.in_blocks) and self._own_number(name) >= 0

    def __call__(self, name: str) -> list[np.ndarray]:
        own = self._own_number(name)
        if own < 0:
            return self.keras_file.variables(f"{self.backbone}/{name}")
        kind, _ = numbered_layer(name)
        return self.keras_file.variables(f"{self.blocks}/{kind}" + (f"_{own}" if own else ""))


class NumpyCaptioner:
    def __init__(self, keras_file: KerasFile):
        config = keras_file.config
        self.vocabulary = Vocabulary(config["vocabulary"])
        self.max_length = config.get("max_length", 20)
        self.length_penalty = float(config.get("length_penalty", 0.0))  # the model's own (models saved before: none)
        self.no_repeat_ngram = int(config.get("no_repeat_ngram", 0))
        self.encoder = Encoder(config["encoder"], keras_file)
        decoder = config["decoder"]
        try:
            if isinstance(decoder, list):  # an ensemble: members saved in order, named by their class
                members = [
                    Decoder({**member, "vocabulary_size": len(self.vocabulary)},
                            _under(keras_file, "decoder/members/decoder_with_attention" + (f"_{index}" if index else "")))
                    for index, member in enumerate(decoder)]
                self.decoder = Ensemble(members, feature_groups=config["encoder"].get("members", 1))
            else:
                self.decoder = Decoder({**decoder, "vocabulary_size": len(self.vocabulary)}, _under(keras_file, "decoder"))
        except ValueError as error:
            raise UnsupportedModel(str(error)) from error

    @property
    def grid(self) -> tuple[int, int]:
        return self.encoder.grid

    def decode_features(self, features, beam_size: int = 1, max_length: int | None = None,
                        length_penalty: float | None = None, no_repeat_ngram: int | None = None) -> list[Caption]:
        max_length = max_length or self.max_length
        if length_penalty is None:  # the model's own, for beam search: greedy search stays greedy
            length_penalty = self.length_penalty if beam_size > 1 else 0.0
        no_repeat_ngram = self.no_repeat_ngram if no_repeat_ngram is None else no_repeat_ngram
        start_id, end_id = self.vocabulary.start_id, self.vocabulary.end_id
        features = np.asarray(features, np.float32)
        if beam_size == 1 and length_penalty == 0 and not no_repeat_ngram:
            word_ids, weights = greedy_search(self.decoder, features, start_id, end_id, max_length)
            word_ids, weights, scores = word_ids[:, None], weights[:, None], np.full((len(features), 1), np.nan)
        else:
            word_ids, weights, scores = beam_search(self.decoder, features, start_id, end_id, max_length, beam_size,
                                                    length_penalty=length_penalty, no_repeat_ngram=no_repeat_ngram)
        marks_chosen = self.decoder.hard_attention and self.decoder.hard_inference == "argmax"
        return [best_caption(self.vocabulary, self.grid, ids, maps, image_scores, marks_chosen)
                for ids, maps, image_scores in zip(word_ids, weights, scores)]

    def caption(self, images, beam_size: int = 1, max_length: int | None = None,
                length_penalty: float | None = None, no_repeat_ngram: int | None = None) -> list[Caption]:
        """Captions for images (B, S, S, 3) with RGB values in [0, 255]."""
        captions = []
        for start in range(0, len(images), ENCODE_BATCH):
            features = self.encoder(images[start : start + ENCODE_BATCH])
            captions.extend(self.decode_features(features, beam_size, max_length, length_penalty, no_repeat_ngram))
        return captions


def _under(keras_file: KerasFile, prefix: str):
    """The variables of the layers under `prefix` ("" for the layer's own)."""
    return lambda path: keras_file.variables(f"{prefix}/{path}" if path else prefix)


def load_numpy_captioner(path) -> NumpyCaptioner:
    """ValueError naming the file if it is not a captioner; UnsupportedModel if NumPy cannot run it."""
    return NumpyCaptioner(KerasFile(path))
