"""Small random-weight models that build in seconds and never download anything."""

import keras

from captioner.data.vocabulary import Vocabulary
from captioner.model.captioner import Captioner

SMALL_IMAGE = 96  # MobileNetV2 gives a 3x3 grid at this size
# train.py flags for a run of a few seconds: a random encoder on small synthetic scenes, a tiny decoder.
# No XLA: compiling costs more than it saves in runs this short (10.9 s instead of 17.4 s each); the
# trainer tests that build `Config()` themselves keep XLA, the default, covered.
TINY_RUN = [
    "--weights", "none", "--image-size", str(SMALL_IMAGE), "--train-scenes", "24", "--val-scenes", "6",
    "--test-scenes", "6", "--batch-size", "8", "--units", "32", "--embedding-dim", "16",
    "--attention-units", "16", "--feature-units", "32", "--max-length", "12", "--no-xla",
]
CAPTIONS = ["a small red circle", "a large blue square above a small red circle", "there is a green triangle"]


def make_captioner(attention="additive", feature_units=32, units=32, location_embedding=True, seed=0,
                   hard_attention=False, hard_state="sampled", encoder_layer=None) -> Captioner:
    keras.utils.set_random_seed(seed)
    vocabulary = Vocabulary.build(CAPTIONS)
    encoder = dict(backbone="mobilenet_v2", weights=None, image_size=SMALL_IMAGE, layer=encoder_layer)
    decoder = dict(embedding_dim=16, units=units, attention=attention, attention_units=16,
                   feature_units=feature_units, location_embedding=location_embedding, dropout=0.0,
                   hard_attention=hard_attention, hard_state=hard_state, seed=seed)
    captioner = Captioner(vocabulary.words, encoder, decoder, max_length=8)
    captioner.build()
    return captioner


def imagenet_weights_available() -> bool:
    """Whether MobileNetV2's ImageNet weights (224 px, the size the demo and the shipped model use) load offline."""
    from captioner.model.encoder import Encoder, WeightsUnavailableError

    try:
        Encoder("mobilenet_v2", weights="imagenet", image_size=224)
    except WeightsUnavailableError:
        return False
    return True


def interrupt_after_first_epoch(monkeypatch) -> None:
    """Make training raise KeyboardInterrupt (Ctrl-C) right after it writes its first last-checkpoint;
    `monkeypatch.undo()` (or the test's end) puts the real save back."""
    from captioner.training import callbacks

    real_save = callbacks.save_checkpoint

    def save_then_interrupt(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        if str(path).endswith(callbacks.LAST_CHECKPOINT):
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks, "save_checkpoint", save_then_interrupt)


def assert_same_checkpoints(first, second) -> None:
    """The weights and optimizer state of two checkpoint files agree (to float rounding)."""
    import numpy as np

    a, b = np.load(first), np.load(second)
    keys = [k for k in a.files if k.startswith(("model/", "optimizer/"))]
    assert keys
    for key in keys:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
