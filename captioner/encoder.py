"""The encoder: a pretrained `keras.applications` CNN cut at a convolutional layer.

Cutting before the classifier keeps a spatial grid: a 224x224 image through
MobileNetV2 gives 7x7 locations of 1280 features each. The decoder attends over
those L = 49 "annotation vectors".
"""

from __future__ import annotations

import os

import keras
from keras import ops

# name: (constructor, module with preprocess_input, default layer to cut at)
BACKBONES = {
    "mobilenet_v2": (keras.applications.MobileNetV2, keras.applications.mobilenet_v2, "out_relu"),
    "resnet50": (keras.applications.ResNet50, keras.applications.resnet50, "conv5_block3_out"),
    "vgg16": (keras.applications.VGG16, keras.applications.vgg16, "block5_conv3"),
    "vgg19": (keras.applications.VGG19, keras.applications.vgg19, "block5_conv4"),  # the paper's
    "inception_v3": (keras.applications.InceptionV3, keras.applications.inception_v3, "mixed10"),
    "efficientnet_b0": (keras.applications.EfficientNetB0, keras.applications.efficientnet, "top_activation"),
    "densenet121": (keras.applications.DenseNet121, keras.applications.densenet, "relu"),
}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or found in the Keras cache."""


def _load_backbone(name: str, weights: str | None, image_size: int) -> keras.Model:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    constructor = BACKBONES[name][0]
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
        image_size: int = 224,
        layer: str | None = None,
        trainable_backbone: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone_name = backbone
        self.image_size = image_size
        self.layer_name = layer or BACKBONES.get(backbone, (None, None, None))[2]
        self.trainable_backbone = trainable_backbone
        full = _load_backbone(backbone, weights, image_size)
        self.preprocess = BACKBONES[backbone][1].preprocess_input
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
