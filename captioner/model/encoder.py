"""The encoder: a pretrained `keras.applications` CNN cut at a convolutional layer.

Cutting before the classifier keeps a spatial grid: a 224x224 image through
MobileNetV2 gives 7x7 locations of 1280 features each. The decoder attends over
those L = 49 "annotation vectors".

Several layers joined by "+" (`layer="block_13_expand_relu+out_relu"`) are fused: the coarser maps
are repeated up to the finest grid and all are concatenated along the channels, so every 14x14 cell
has its own local features (what is here) beside the 7x7 block's (what this part of the photo is).

Fine-tuning (`fine_tune_blocks` N > 0) splits the CNN at the start of its last N blocks:
`below` (frozen) runs once per image and its output is what the feature cache stores;
`above` (the last N blocks) trains with the decoder. BatchNorm layers stay in inference
mode: their statistics were measured on ImageNet and a caption batch is too small to re-estimate them.

An ensemble of fine-tuned models (`members` M > 1) shares `below` and keeps each member's own copy of
the fine-tuned blocks: its features are the M members' features side by side, (B, L, M * D), and the
ensemble's decoder gives member m its share.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable

import keras
from keras import ops


@dataclasses.dataclass(frozen=True)
class Backbone:
    constructor: Callable  # keras.applications model
    preprocessing: object  # the module whose preprocess_input the backbone was trained with
    layer: str  # last convolutional block: the default place to cut
    image_size: int  # the resolution it was trained at
    # The layers that end a block (a single tensor leaves them: a place to split for fine-tuning).
    # A block with a residual connection ends at its `add`, so its projection is not an end.
    block_ends: str | None = None


applications = keras.applications
BACKBONES = {
    "mobilenet_v2": Backbone(applications.MobileNetV2, applications.mobilenet_v2, "out_relu", 224,
                             r"expanded_conv_project_BN|block_\d+_(add|project_BN)"),
    "efficientnet_b0": Backbone(applications.EfficientNetB0, applications.efficientnet, "top_activation", 224,
                                r"block\w+_(add|project_bn)"),
    "efficientnet_b1": Backbone(applications.EfficientNetB1, applications.efficientnet, "top_activation", 240,
                                r"block\w+_(add|project_bn)"),
    "efficientnet_b2": Backbone(applications.EfficientNetB2, applications.efficientnet, "top_activation", 260,
                                r"block\w+_(add|project_bn)"),
    "efficientnet_b3": Backbone(applications.EfficientNetB3, applications.efficientnet, "top_activation", 300,
                                r"block\w+_(add|project_bn)"),
    "resnet50": Backbone(applications.ResNet50, applications.resnet50, "conv5_block3_out", 224, r"conv\d_block\d+_out"),
    "resnet101": Backbone(applications.ResNet101, applications.resnet, "conv5_block3_out", 224, r"conv\d_block\d+_out"),
    "inception_v3": Backbone(applications.InceptionV3, applications.inception_v3, "mixed10", 299, r"mixed\d+"),
    "vgg16": Backbone(applications.VGG16, applications.vgg16, "block5_conv3", 224, r"block\d_(pool|conv\d)"),
    "vgg19": Backbone(applications.VGG19, applications.vgg19, "block5_conv4", 224,  # the paper's: 14x14x512
                      r"block\d_(pool|conv\d)"),
    "densenet121": Backbone(applications.DenseNet121, applications.densenet, "relu", 224),
}


def default_image_size(backbone: str) -> int:
    return BACKBONES[backbone].image_size if backbone in BACKBONES else 224


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or found in the Keras cache."""


def _load_backbone(name: str, weights: str | None, image_size: int) -> keras.Model:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    constructor = BACKBONES[name].constructor
    try:
        return constructor(include_top=False, weights=weights, input_shape=(image_size, image_size, 3))
    except Exception as error:  # keras raises plain Exception for a failed download
        if weights != "imagenet":
            raise
        cache = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsUnavailableError(
            f"could not get ImageNet weights for {name} ({reason}); connect to the internet once so Keras "
            f"can cache them, or set KERAS_HOME to a Keras cache that holds them (now: {cache}), "
            f"or use --weights none"
        ) from error


@keras.saving.register_keras_serializable(package="captioner")
class Encoder(keras.layers.Layer):
    """images (B, S, S, 3), RGB values in [0, 255] -> features (B, L, D)."""

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        weights: str | None = "imagenet",
        image_size: int | None = None,
        layer: str | None = None,
        trainable_backbone: bool = False,
        fine_tune_blocks: int = 0,
        members: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if members > 1 and not fine_tune_blocks:
            raise ValueError("only an encoder with fine-tuned blocks has one copy of them per ensemble member")
        self.backbone_name = backbone
        self.image_size = image_size or default_image_size(backbone)
        self.trainable_backbone = trainable_backbone
        self.fine_tune_blocks = int(fine_tune_blocks)
        full = _load_backbone(backbone, weights, self.image_size)
        self.layer_name = layer or BACKBONES[backbone].layer
        self.preprocess = BACKBONES[backbone].preprocessing.preprocess_input
        self.cut_layers = self.layer_name.split("+")
        self.backbone = keras.Model(full.input, _fused_output(full, backbone, self.cut_layers),
                                    name=f"{backbone}_to_{'_and_'.join(self.cut_layers)}")
        self.backbone.trainable = trainable_backbone
        _, rows, columns, channels = self.backbone.output.shape
        self.grid = (rows, columns)
        self.feature_size = channels
        # A fusion's parts as [rows, columns, channels], in channel order: the decoder projects each coarse
        # part on its own grid (`DecoderWithAttention(fused_layout=...)`); None for one layer.
        self.fused_layout = ([list(full.get_layer(name).output.shape[1:]) for name in self.cut_layers]
                             if len(self.cut_layers) > 1 else None)
        # Where the frozen part ends: the cut itself, or the start of the last `fine_tune_blocks` blocks.
        self.split_layer = self.layer_name
        # With a fusion, the N blocks count down from its earliest layer, and everything above the split trains.
        if self.fine_tune_blocks:
            order = [layer.name for layer in self.backbone.layers]
            earliest = min(self.cut_layers, key=order.index)
            self.split_layer = find_split_layer(self.backbone, backbone, earliest, self.fine_tune_blocks)
            for tuned in self.above.layers:
                # BatchNorm with trainable=False runs in inference mode in Keras 3, whatever `training` says.
                tuned.trainable = not isinstance(tuned, keras.layers.BatchNormalization)
        _, rows, columns, channels = self.below.output.shape
        self.cached_shape = (rows * columns, channels)  # what the feature cache holds per image: (L', D')
        self.members = int(members)
        # Members 1 .. M-1's copies of the fine-tuned blocks (member 0's are the backbone's own).
        self.member_blocks = [self._copy_of_above(index) for index in range(1, self.members)]
        self.feature_size *= self.members

    def _copy_of_above(self, index: int) -> keras.Model:
        copy = keras.models.clone_model(self.above)
        copy.name = f"member_{index}_{self.above.name}"
        for layer, original in zip(copy.layers, self.above.layers):
            layer.trainable = original.trainable
        return copy

    # `below` and `above` share the backbone's layers (and so its weights, saved once with it); kept as
    # cached properties so Keras does not track them as more sublayers of the encoder.
    @functools.cached_property
    def below(self) -> keras.Model:
        """images, preprocessed -> the split layer's activations: the frozen part, run once per image."""
        if not self.fine_tune_blocks:
            return self.backbone
        return keras.Model(self.backbone.input, self.backbone.get_layer(self.split_layer).output,
                           name=f"{self.backbone_name}_to_{self.split_layer}")

    @functools.cached_property
    def above(self) -> keras.Model | None:
        """The split layer's activations -> the features at the cut: the fine-tuned blocks (None: frozen encoder)."""
        if not self.fine_tune_blocks:
            return None
        return keras.Model(self.backbone.get_layer(self.split_layer).output, self.backbone.output,
                           name=f"{self.split_layer}_to_{'_and_'.join(self.cut_layers)}")

    @property
    def fine_tuned_variables(self) -> list:
        """The weights that train with the decoder (none for a frozen encoder; BatchNorm never)."""
        tops = [self.above, *self.member_blocks] if self.above is not None else []
        return [variable for top in tops for variable in top.trainable_variables]

    def build(self, images_shape=None):
        pass  # the backbone was built when it was made

    def call(self, images):
        if self.members > 1:
            return self.encode_above(self.encode_below(images))
        features = self.backbone(self.preprocess(ops.cast(images, "float32")), training=False)
        rows, columns = self.grid
        return ops.reshape(features, (-1, rows * columns, self.feature_size))  # (B, L, D)

    def encode_below(self, images):
        """images (B, S, S, 3) in [0, 255] -> the frozen part's activations (B, L', D'): what the cache stores.
        For a frozen encoder these are the features themselves."""
        activations = self.below(self.preprocess(ops.cast(images, "float32")), training=False)
        return ops.reshape(activations, (-1, *self.cached_shape))

    def encode_above(self, activations, training: bool = False):
        """Cached activations (B, L', D') -> features (B, L, D); the identity for a frozen encoder."""
        if self.above is None:
            return activations
        side = self.below.output.shape[1:3]
        activations = ops.reshape(ops.cast(activations, "float32"), (-1, *side, self.cached_shape[1]))
        # BatchNorm in inference mode even while training
        features = [top(activations, training=False) for top in (self.above, *self.member_blocks)]
        features = ops.concatenate(features, axis=-1) if len(features) > 1 else features[0]
        rows, columns = self.grid
        return ops.reshape(features, (-1, rows * columns, self.feature_size))

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": self.backbone_name,
            # A saved model carries its own weights, so loading it must not download anything.
            "weights": None,
            "image_size": self.image_size,
            "layer": self.layer_name,
            "trainable_backbone": self.trainable_backbone,
            "fine_tune_blocks": self.fine_tune_blocks,
            "members": self.members,
        }


def _fused_output(model: keras.Model, backbone: str, layers: list[str]):
    """The output of `layers[0]`, or of several layers fused on the finest grid among them."""
    outputs = []
    for name in layers:
        try:
            outputs.append(model.get_layer(name).output)
        except ValueError as error:
            raise ValueError(f"backbone {backbone} has no layer {name!r}") from error
    if len(outputs) == 1:
        return outputs[0]
    rows = max(output.shape[1] for output in outputs)
    fused = []
    for name, output in zip(layers, outputs):
        factor, remainder = divmod(rows, output.shape[1])
        if remainder or rows != factor * output.shape[2]:
            raise ValueError(f"cannot fuse {'+'.join(layers)}: the {output.shape[1]}x{output.shape[2]} grid of "
                             f"{name} does not divide the {rows}x{rows} grid")
        # Nearest-neighbour: each coarse cell's features are repeated over the fine cells it covers.
        fused.append(keras.layers.UpSampling2D(factor, name=f"{name}_repeated")(output) if factor > 1 else output)
    return keras.layers.Concatenate(name="fused_features")(fused)


def block_ends(model: keras.Model, backbone: str, cut: str) -> list[str]:
    """The layers that end a block below `cut`, in order: the places the CNN can be split."""
    pattern = BACKBONES[backbone].block_ends if backbone in BACKBONES else None
    if pattern is None:
        raise ValueError(f"fine-tuning is not available for backbone {backbone}")
    names = [layer.name for layer in model.layers]
    names = names[: names.index(cut)]
    ends = [name for name in names if re.fullmatch(pattern, name)]
    # A block with a residual connection ends at its add (or `_out`), not at its projection.
    residual = {re.sub(r"_(add|out)$", "", name) for name in ends if re.search(r"_(add|out)$", name)}
    return [name for name in ends if not (re.sub(r"_project_(bn|BN)$", "", name) in residual
                                          and re.search(r"_project_(bn|BN)$", name))]


def find_split_layer(model: keras.Model, backbone: str, cut: str, blocks: int) -> str:
    """The layer whose output starts the last `blocks` blocks before `cut` (ValueError if there are fewer)."""
    ends = block_ends(model, backbone, cut)
    if not 0 < blocks <= len(ends):
        raise ValueError(f"cannot fine-tune {blocks} blocks: {backbone} cut at {cut} has {len(ends)} blocks "
                         f"to fine-tune (1 to {len(ends)})")
    return ends[-blocks]
