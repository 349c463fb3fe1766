"""Export a captioner where TensorFlow models go: a SavedModel and a LiteRT file with the decoding inside.

The serving function takes images, uint8 pixels (B, S, S, 3) at the encoder's size, and runs the encoder and
the model's own beam search (`captioner.model.search`: one `tf.while_loop`, so the graph holds one decoder step)
with the beam size fixed at export and the model's length penalty, n-gram blocking and maximum length. It
returns every finished beam, best first:

    word_ids   (B, K, T) int32   the words and `<end>`, 0 after
    lengths    (B, K)    int32   words before `<end>`
    scores     (B, K)    float32 log p / length ** length_penalty
    attention  (B, K, T, L)      the map each word was chosen with (L = rows x columns of the grid)

The LiteRT file (`captioner.tflite`, LiteRT's builtin ops only, so `ai-edge-litert` runs it without TensorFlow)
returns the same four, in the order of `LITERT_OUTPUTS`. The SavedModel also returns `words` (B, K, T) as strings ("" past the end) and has a second signature,
`caption_encoded`, that takes one encoded JPEG or PNG (a scalar string) and squeezes it to the encoder's size.
`captioner.json` beside the files holds the vocabulary, the grid and the decoding, for runtimes without strings.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from captioner.model.search import beam_search
from captioner.utils import litert
from captioner.utils.atomic import atomic_path, atomic_write_text

FORMATS = ("saved_model", "litert", "both")
LITERT_FILE = "captioner.tflite"
# The LiteRT file's outputs, in its order (the converter sorts the serving function's keys and drops the names).
LITERT_OUTPUTS = ("attention", "lengths", "scores", "word_ids")
METADATA_FILE = "captioner.json"


class ExportedCaptioner(tf.Module):
    """The captioner's encoder and beam search as one graph over its variables."""

    def __init__(self, captioner, beam_size: int = 3):
        super().__init__()
        self.captioner = captioner  # tracked: its variables are saved with the module
        self.beam_size = beam_size
        self.image_size = captioner.encoder.image_size
        self.vocabulary = tf.constant(captioner.vocabulary.words)

    def decode(self, images):
        vocabulary = self.captioner.vocabulary
        features = self.captioner.encoder(tf.cast(images, tf.float32))
        word_ids, attention, scores = beam_search(
            self.captioner.decoder, features, vocabulary.start_id, vocabulary.end_id, self.captioner.max_length,
            self.beam_size, length_penalty=self.captioner.length_penalty, all_beams=True,
            no_repeat_ngram=self.captioner.no_repeat_ngram)
        is_end = tf.equal(word_ids, vocabulary.end_id)
        lengths = tf.argmax(tf.cast(is_end, tf.int32), axis=-1, output_type=tf.int32)  # the first <end>
        after = tf.range(tf.shape(word_ids)[-1])[None, None, :] > lengths[..., None]
        word_ids = tf.where(after, 0, word_ids)
        return {"word_ids": word_ids, "lengths": lengths, "scores": scores, "attention": attention}

    def with_words(self, outputs):
        words = tf.gather(self.vocabulary, outputs["word_ids"])
        spoken = tf.range(tf.shape(words)[-1])[None, None, :] < outputs["lengths"][..., None]
        return {**outputs, "words": tf.where(spoken, words, "")}

    def metadata(self) -> dict:
        captioner = self.captioner
        return {"vocabulary": captioner.vocabulary.words, "grid": list(captioner.grid), "image_size": self.image_size,
                "beam_size": self.beam_size, "max_length": captioner.max_length,
                "length_penalty": captioner.length_penalty, "no_repeat_ngram": captioner.no_repeat_ngram,
                "end_id": captioner.vocabulary.end_id,
                "hard_attention": bool(getattr(captioner.decoder, "hard_attention", False))}


def export(captioner, out_dir, format: str = "both", beam_size: int = 3, litert_weights: str = "float32") -> list[Path]:
    """Write the SavedModel (OUT_DIR/saved_model) and/or the LiteRT file (OUT_DIR/captioner.tflite, its weights
    stored as `litert_weights`), with OUT_DIR/captioner.json; returns the paths written."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
    if litert_weights not in litert.WEIGHT_STORAGE:
        raise ValueError(f"unknown LiteRT weights {litert_weights!r}; use one of {', '.join(litert.WEIGHT_STORAGE)}")
    if not 1 <= beam_size <= 10:
        raise ValueError(f"beam size must be from 1 to 10, not {beam_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = ExportedCaptioner(captioner, beam_size)
    size = module.image_size
    written = []
    saved_model = out_dir / "saved_model"
    if format in ("saved_model", "both"):
        module.caption = tf.function(lambda images: module.with_words(module.decode(images)), autograph=False,
                                     input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])

        def from_encoded(image_bytes):
            image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
            image = tf.image.resize(image, [size, size], method="bilinear")
            images = tf.cast(tf.round(image), tf.uint8)[None]
            # A batch of one whose size the graph does not fix: the search's loop needs the batch unknown.
            images = tf.compat.v1.placeholder_with_default(images, [None, size, size, 3])
            return module.with_words(module.decode(images))

        module.caption_encoded = tf.function(from_encoded, autograph=False,
                                             input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")])
        tf.saved_model.save(module, str(saved_model), signatures={
            "serving_default": module.caption, "caption_encoded": module.caption_encoded})
        written.append(saved_model)
    if format in ("litert", "both"):
        pixels = tf.function(lambda images: module.decode(images), autograph=False,
                             input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
        with atomic_path(out_dir / LITERT_FILE) as temporary:
            Path(temporary).write_bytes(litert.convert(pixels.get_concrete_function(), litert_weights))
        written.append(out_dir / LITERT_FILE)
    metadata = {**module.metadata(), "litert_outputs": LITERT_OUTPUTS}
    if format in ("litert", "both"):
        metadata["litert_weights"] = litert_weights
    atomic_write_text(out_dir / METADATA_FILE, json.dumps(metadata))
    written.append(out_dir / METADATA_FILE)
    return written
