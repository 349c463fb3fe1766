"""The encoder: a pretrained `keras.applications` CNN cut at a convolutional layer.

Cutting before the classifier keeps a spatial grid: a 224x224 image through
MobileNetV2 gives 7x7 locations of 1280 features each. The decoder attends over
those L = 49 "annotation vectors".
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import keras
from keras import ops


@dataclasses.dataclass(frozen=True)
class Backbone:
    constructor: Callable  # keras.applications model
    preprocessing: object  # the module whose preprocess_input the backbone was trained with
    layer: str  # last convolutional block: the default place to cut
    image_size: int  # the resolution it was trained at


applications = keras.applications
BACKBONES = {
    "mobilenet_v2": Backbone(applications.MobileNetV2, applications.mobilenet_v2, "out_relu", 224),
    "efficientnet_b0": Backbone(applications.EfficientNetB0, applications.efficientnet, "top_activation", 224),
    "efficientnet_b1": Backbone(applications.EfficientNetB1, applications.efficientnet, "top_activation", 240),
    "efficientnet_b2": Backbone(applications.EfficientNetB2, applications.efficientnet, "top_activation", 260),
    "efficientnet_b3": Backbone(applications.EfficientNetB3, applications.efficientnet, "top_activation", 300),
    "resnet50": Backbone(applications.ResNet50, applications.resnet50, "conv5_block3_out", 224),
    "resnet101": Backbone(applications.ResNet101, applications.resnet, "conv5_block3_out", 224),
    "inception_v3": Backbone(applications.InceptionV3, applications.inception_v3, "mixed10", 299),
    "vgg16": Backbone(applications.VGG16, applications.vgg16, "block5_conv3", 224),
    "vgg19": Backbone(applications.VGG19, applications.vgg19, "block5_conv4", 224),  # the paper's: 14x14x512
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone_name = backbone
        self.image_size = image_size or default_image_size(backbone)
        self.trainable_backbone = trainable_backbone
        full = _load_backbone(backbone, weights, self.image_size)
        self.layer_name = layer or BACKBONES[backbone].layer
        self.preprocess = BACKBONES[backbone].preprocessing.preprocess_input
        try:
            cut = full.get_layer(self.layer_name).output
        except ValueError as error:
            raise ValueError(f"backbone {backbone} has no layer {self.layer_name!r}") from error
        self.backbone = keras.Model(full.input, cut, name=f"{backbone}_to_{self.layer_name}")
        self.backbone.trainable = trainable_backbone
        _, rows, columns, channels = self.backbone.output.shape
        self.grid = (rows, columns)
        self.feature_size = channels

    def build(self, images_shape=None):
        pass  # the backbone was built when it was made

    def call(self, images):
        features = self.backbone(self.preprocess(ops.cast(images, "float32")), training=False)
        rows, columns = self.grid
        return ops.reshape(features, (-1, rows * columns, self.feature_size))  # (B, L, D)

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": self.backbone_name,
            # A saved model carries its own weights, so loading it must not download anything.
            "weights": None,
            "image_size": self.image_size,
            "layer": self.layer_name,
            "trainable_backbone": self.trainable_backbone,
        }
