"""The shipped kind of captioner again, in NumPy alone: captions without importing TensorFlow.

A new process that captions one photo spends most of its time starting TensorFlow, building the
Keras model and compiling the search, not computing (bench/RESULTS.md, "Cold start"). Inference
needs none of that: MobileNetV2, the decoder's step and the searches are a few hundred lines of
array code reading the same `.keras` file. The command line uses this model for a few photos and the
Keras model for many (`captioner.cli.caption`); `tests/test_numpy_model.py` checks that both give the
same captions, scores and attention maps.

    model = load_numpy_captioner("captioner/pretrained/flickr8k_mobilenetv2.keras")
    captions = model.caption(images, beam_size=3)       # images (B, S, S, 3), RGB in [0, 255]

What it runs: MobileNetV2 encoders (frozen or fine-tuned, cut at any of its layers), soft-attention
decoders with every score function, hard attention at inference, ensembles (members with their own
fine-tuned blocks too: the frozen layers below the blocks run once, then each member's blocks). Anything else
(another backbone) raises `UnsupportedModel`, and callers use the Keras model.

Layer 2, beside `captioner.model`: imports the data layer and `captioner.model.caption` only.
"""

from captioner.numpy_model.captioner import NumpyCaptioner, UnsupportedModel, load_numpy_captioner

__all__ = ["NumpyCaptioner", "UnsupportedModel", "load_numpy_captioner"]
