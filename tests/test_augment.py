"""Augmentation that cannot change what a caption says (`--augment N`): colour jitter only, cached per copy."""

import json
from pathlib import Path

import numpy as np
from helpers import SMALL_IMAGE, TINY_RUN

from captioner.cli import train
from captioner.data.features import FeatureStore, augmented
from captioner.data.images import jitter_colours, load_image
from captioner.model.encoder import Encoder

FIXTURE_IMAGES = Path(__file__).resolve().parent.parent / "data" / "fixtures" / "flickr8k" / "Flicker8k_Dataset"


def test_jitter_changes_colours_a_little_and_never_where_things_are_or_which_hue_they_have():
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16] = (200, 40, 40)  # a red left half ...
    image[:, 16:] = (40, 60, 190)  # ... and a blue right half
    copies = [jitter_colours(image, np.random.default_rng(seed)) for seed in range(20)]
    assert any(not np.array_equal(copy, image) for copy in copies)
    for copy in copies:
        assert copy.shape == image.shape and copy.dtype == np.uint8
        assert np.all(copy[:, :16].argmax(axis=-1) == 0) and np.all(copy[:, 16:].argmax(axis=-1) == 2)  # red stays left
        assert np.abs(copy.astype(int) - image).max() <= 0.5 * 255  # a little, not a different photo
    # the same generator state gives the same copy
    np.testing.assert_array_equal(jitter_colours(image, np.random.default_rng(5)), copies[5])


def test_augmented_copies_are_cached_beside_the_originals_and_are_what_the_encoder_makes_of_them(tmp_path):
    # a random encoder's last block gives zeros for every image; a middle one still sees colour
    encoder = Encoder(weights=None, image_size=SMALL_IMAGE, layer="block_3_expand_relu")
    paths = sorted(FIXTURE_IMAGES.glob("*.jpg"))
    store = FeatureStore(tmp_path, encoder)
    store.extract_missing(paths)
    store.extract_missing(paths, view=1, seed=7)
    original, copy = store.view(paths)[:], store.view(paths, view=1, seed=7)[:]
    assert np.abs(original).max() > 0 and not np.allclose(original, copy)
    images = np.stack([augmented(load_image(p, SMALL_IMAGE), p, 1, 7) for p in paths]).astype(np.float32)
    np.testing.assert_allclose(copy, np.asarray(encoder.encode_below(images)), rtol=1e-3, atol=1e-3)
    # a second run finds every copy in the cache; another seed is another copy
    assert store.has(paths[0], 1, 7) and not store.has(paths[0], 1, 8) and not store.has(paths[0], 2, 7)


def test_epochs_take_the_copies_in_turn(tmp_path):
    def losses(run_dir, extra=()):
        assert train.main(TINY_RUN + ["--epochs", "2", "--run-dir", str(run_dir), *extra]) == 0
        return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    plain, jittered = losses(tmp_path / "plain"), losses(tmp_path / "augmented", ["--augment", "1"])
    assert plain[0] == jittered[0]  # epoch 1 reads the originals ...
    assert plain[1] != jittered[1]  # ... epoch 2 the jittered copies
