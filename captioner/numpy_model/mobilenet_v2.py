"""MobileNetV2 (Sandler et al. 2018) in NumPy: inference only, with the weights a `.keras` file holds.

The network, as `keras.applications.MobileNetV2` builds it (alpha 1):

    Conv1 (3x3, stride 2, 32) -> BN -> ReLU6
    17 inverted residual blocks:  [1x1 expand (x t) -> BN -> ReLU6] -> 3x3 depthwise -> BN -> ReLU6
                                  -> 1x1 project -> BN  (+ the block's input when shapes allow)
    Conv_1 (1x1, 1280) -> BN -> out_relu                    224 px in: 7x7x1280 out

Every layer keeps its Keras name (`block_13_expand_relu`), so the encoder can stop at the layer
a model was cut at. Weights are looked up the way Keras saved them: layers of one class numbered
in the order the network makes them (`conv2d`, `conv2d_1`, ...). Each BatchNorm is folded into the
convolution before it (inference needs only its scale and shift), unless the caller reads that convolution's map.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

# (expansion t, output channels c, blocks n, first block's stride s): the paper's Table 2.
BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
FIRST_FILTERS = 32  # Conv1's channels; every other size comes from the saved kernels
BATCH_NORM_EPSILON = 1e-3  # keras.applications' MobileNetV2 uses 1e-3, not BatchNormalization's default


def _padded(x: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))) if top or bottom or left or right else x


def _same_padding(size: int, stride: int, kernel: int = 3) -> tuple[int, int]:
    """TensorFlow's 'same' padding of one side's `size`: (before, after)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, stride: int, kernel: int = 3):
    """The kernel x kernel shifted views of x (B, H, W, C) that a 'valid' convolution combines: ((i, j), view)."""
    rows = (x.shape[1] - kernel) // stride + 1
    columns = (x.shape[2] - kernel) // stride + 1
    for i in range(kernel):
        for j in range(kernel):
            yield (i, j), x[:, i : i + stride * (rows - 1) + 1 : stride, j : j + stride * (columns - 1) + 1 : stride]


def _convolution(kernel: np.ndarray, stride: int, scale=None, shift=None) -> Callable:
    """A convolution (k, k, in, out) with 'same' padding; with a BatchNorm folded in, its `scale` and `shift` per
    output channel."""
    if scale is not None:
        kernel = kernel * scale  # output channels are the kernel's last axis
    def conv(x):
        if kernel.shape[0] == 1:  # pointwise: one matrix product over every pixel
            out = x @ kernel[0, 0]
        else:
            top, bottom = _same_padding(x.shape[1], stride)
            left, right = _same_padding(x.shape[2], stride)
            views = [view for _, view in _windows(_padded(x, top, bottom, left, right), stride, kernel.shape[0])]
            patches = np.concatenate(views, axis=-1)  # (B, H', W', k*k*in), ordered like the kernel's rows
            out = patches @ kernel.reshape(-1, kernel.shape[-1])
        if shift is not None:
            out += shift
        return out
    return conv


def _depthwise_convolution(kernel: np.ndarray, stride: int, scale=None, shift=None) -> Callable:
    """A 3x3 depthwise convolution (3, 3, channels, 1); with a BatchNorm folded in, its `scale` and `shift` per
    channel."""
    if scale is not None:
        kernel = kernel * scale[:, None]
    def depthwise(x):
        if stride == 1:  # 'same' padding; stride 2 follows an explicit ZeroPadding2D and pads nothing
            x = _padded(x, 1, 1, 1, 1)
        out = term = None
        for (i, j), view in _windows(x, stride):
            if out is None:
                out = view * kernel[i, j, :, 0]
                term = np.empty_like(out)  # one buffer for the other eight products
                continue
            out += np.multiply(view, kernel[i, j, :, 0], out=term)
        if shift is not None:
            out += shift
        return out
    return depthwise


class _CutReached(Exception):
    """Raised by the layer at the cut: building stops there."""


class MobileNetV2:
    """images (B, S, S, 3), RGB in [0, 255] -> the activations of `cut` (B, rows, columns, channels);
    with `also`, a list: those layers' activations, then `cut`'s (the layers of a fused encoder)."""

    def __init__(self, variables: Callable[[str], list[np.ndarray]] | None, cut: str = "out_relu",
                 also: tuple[str, ...] = ()):
        """variables: the weights of a backbone layer by its saved name (`KerasFile.variables` under the backbone);
        None builds the layer list alone (`layer_names`)."""
        self._variables = variables
        self.cut, self.also = cut, tuple(also)
        self._counts: dict[str, int] = {}
        self.saved_names: dict[str, str] = {}  # layer -> the saved name of its weights (the layers that have some)
        self._layers: list[tuple[str, tuple[str, ...], Callable]] = []  # (Keras name, its inputs' names, function)
        self._kept = {cut, *self.also}  # maps the caller reads: never folded away or overwritten in place
        self._last_convolution = None  # (name, factory, kernel, stride): what a BatchNorm after it folds into
        try:
            self._build()  # up to the cut: a model cut early holds no weights for the layers after it
        except _CutReached:
            return
        raise ValueError(f"MobileNetV2 has no layer {cut!r} this NumPy version can stop at")

    def _append(self, name: str, sources: tuple[str, ...], function: Callable) -> None:
        self._layers.append((name, sources, function))
        if name == self.cut:
            missing = [name for name in self.also if name not in {layer for layer, _, _ in self._layers}]
            if missing:
                raise ValueError(f"MobileNetV2 has no layer {missing[0]!r} before {self.cut!r}")
            raise _CutReached

    @classmethod
    @functools.cache
    def layer_names(cls) -> tuple[str, ...]:
        """Every layer's name, in order (built once, without weights)."""
        return tuple(name for name, _, _ in cls(None)._layers)

    @classmethod
    def grid(cls, image_size: int, layer: str) -> tuple[int, int]:
        """The grid of `layer`'s activations for square images of `image_size`: halved at each stride 2."""
        names = cls.layer_names()
        rows = image_size
        for name in names[: names.index(layer) + 1]:
            if name == "Conv1" or name.endswith("_pad"):
                rows = -(-rows // 2)
        return rows, rows

    def _next_weights(self, keras_class: str, layer: str) -> list[np.ndarray]:
        """The weights of the next layer of this class, in the order Keras made (and saved) them."""
        count = self._counts.get(keras_class, 0)
        self._counts[keras_class] = count + 1
        self.saved_names[layer] = keras_class if count == 0 else f"{keras_class}_{count}"
        if self._variables is None:  # names only
            return [np.ones(1, np.float32)] * (4 if keras_class == "batch_normalization" else 1)
        return self._variables(self.saved_names[layer])

    # The layers: each reads the activations of the layers it names (a block's add reads the block's input).
    # A convolution followed by its BatchNorm runs as one layer: the BatchNorm's scale multiplies the kernel
    # and its shift is added to the product, one pass over the map instead of three (`_batch_norm`).
    def _conv(self, name: str, source: str, stride: int = 1) -> None:
        (kernel,) = self._next_weights("conv2d", name)  # (k, k, in, out), no bias: BatchNorm follows
        self._last_convolution = (name, _convolution, kernel, stride)
        self._append(name, (source,), _convolution(kernel, stride))

    def _depthwise(self, name: str, source: str, stride: int) -> None:
        (kernel,) = self._next_weights("depthwise_conv2d", name)  # (3, 3, channels, 1)
        self._last_convolution = (name, _depthwise_convolution, kernel, stride)
        self._append(name, (source,), _depthwise_convolution(kernel, stride))

    def _batch_norm(self, name: str, source: str) -> None:
        gamma, beta, mean, variance = self._next_weights("batch_normalization", name)
        scale = gamma / np.sqrt(variance + BATCH_NORM_EPSILON)
        shift = beta - mean * scale
        convolution, make, kernel, stride = self._last_convolution
        if convolution == source == self._layers[-1][0] and source not in self._kept:
            # Folded into the convolution before it, whose own (unnormalised) output nothing else reads.
            self._layers[-1] = (source, self._layers[-1][1], make(kernel, stride, scale, shift))
            self._append(name, (source,), lambda x: x)
            return
        self._append(name, (source,), lambda x: x * scale + shift)

    def _relu6(self, name: str, source: str) -> None:
        if source not in self._kept:  # its source, a BatchNorm, made a map that only this layer reads
            self._append(name, (source,), lambda x: np.clip(x, 0.0, 6.0, out=x))
            return
        self._append(name, (source,), lambda x: np.clip(x, 0.0, 6.0))

    def _zero_pad_for_stride_2(self, name: str, source: str) -> None:
        """keras.applications' `correct_pad`: one row and column after; one before too for an odd size."""
        def pad(x):
            return _padded(x, x.shape[1] % 2, 1, x.shape[2] % 2, 1)
        self._append(name, (source,), pad)

    def _add(self, name: str, first: str, second: str) -> None:
        self._append(name, (first, second), np.add)

    def _build(self) -> None:
        self._conv("Conv1", "input", stride=2)
        self._batch_norm("bn_Conv1", "Conv1")
        self._relu6("Conv1_relu", "bn_Conv1")
        previous, channels, block_id = "Conv1_relu", FIRST_FILTERS, 0
        for expansion, filters, repeats, first_stride in BLOCKS:
            for repeat in range(repeats):
                stride = first_stride if repeat == 0 else 1
                prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
                x = previous
                if block_id:  # the first block does not expand
                    self._conv(prefix + "expand", x)
                    self._batch_norm(prefix + "expand_BN", prefix + "expand")
                    self._relu6(prefix + "expand_relu", prefix + "expand_BN")
                    x = prefix + "expand_relu"
                if stride == 2:
                    self._zero_pad_for_stride_2(prefix + "pad", x)
                    x = prefix + "pad"
                self._depthwise(prefix + "depthwise", x, stride)
                self._batch_norm(prefix + "depthwise_BN", prefix + "depthwise")
                self._relu6(prefix + "depthwise_relu", prefix + "depthwise_BN")
                self._conv(prefix + "project", prefix + "depthwise_relu")
                self._batch_norm(prefix + "project_BN", prefix + "project")
                x = prefix + "project_BN"
                if channels == filters and stride == 1:
                    self._add(prefix + "add", previous, x)
                    x = prefix + "add"
                previous, channels, block_id = x, filters, block_id + 1
        self._conv("Conv_1", previous)
        self._batch_norm("Conv_1_bn", "Conv_1")
        self._relu6("out_relu", "Conv_1_bn")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        activations = self.run({"input": self.preprocess(images)})
        if self.also:
            return [activations[name] for name in self.also] + [activations[self.cut]]
        return activations[self.cut]

    @staticmethod
    def preprocess(images) -> np.ndarray:
        """RGB in [0, 255] -> [-1, 1], as `keras.applications.mobilenet_v2.preprocess_input`."""
        return np.asarray(images, np.float32) / 127.5 - 1.0

    @property
    def layer_order(self) -> tuple[str, ...]:
        """The names of the layers this network runs, in order (up to its cut)."""
        return tuple(name for name, _, _ in self._layers)

    def run(self, known: dict[str, np.ndarray], first: str | None = None, stop: str | None = None
            ) -> dict[str, np.ndarray]:
        """Runs the layers from `first` (the first layer) up to, not including, `stop` (to the cut), on the
        activations `known` by layer name; returns those of `also` and the cut, with every one a layer from
        `stop` on still reads (so the part from `stop` can run on them alone); early maps are megabytes per
        image, so the rest are freed as soon as read."""
        order = self.layer_order
        start = order.index(first) if first else 0
        end = order.index(stop) if stop else len(order)
        last_read = {source: index for index, (_, sources, _) in enumerate(self._layers) for source in sources}
        kept = {*self.also, self.cut}
        activations = dict(known)
        for index in range(start, end):
            name, sources, layer = self._layers[index]
            activations[name] = layer(*(activations[source] for source in sources))
            for source in sources:
                if last_read[source] == index and source not in kept:
                    del activations[source]
        return activations
