import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from captioner.data.features import FeatureStore
from captioner.data.images import load_image
from captioner.model.encoder import Encoder

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "fixtures"
SIZE = 64


@pytest.fixture(scope="module")
def encoder():
    return Encoder("mobilenet_v2", weights=None, image_size=SIZE)


@pytest.fixture
def images(tmp_path):
    folder = Path(shutil.copytree(FIXTURES / "flickr8k" / "Flicker8k_Dataset", tmp_path / "images"))
    return sorted(folder.iterdir())


def test_features_match_the_encoder_and_survive_a_new_store(tmp_path, encoder, images):
    store = FeatureStore(tmp_path / "cache", encoder)
    assert store.extract_missing(images) == set()
    view = store.view(images)
    direct = np.asarray(encoder(np.stack([load_image(p, SIZE) for p in images]).astype(np.float32)))
    np.testing.assert_allclose(view[np.arange(len(images))].astype(np.float32), direct, rtol=1e-2, atol=1e-2)
    assert view.shape == (3, *direct.shape[1:]) and view[np.arange(3)].dtype == np.float16

    class MustNotEncode:  # the same encoder, except that encoding anything fails the test
        grid, feature_size, image_size = encoder.grid, encoder.feature_size, encoder.image_size
        backbone_name, layer_name, backbone = encoder.backbone_name, encoder.layer_name, encoder.backbone
        split_layer, below, cached_shape = encoder.split_layer, encoder.below, encoder.cached_shape

        def __call__(self, images):
            raise AssertionError("a cached image was encoded again")

        encode_below = __call__  # what the cache stores

    again = FeatureStore(tmp_path / "cache", encoder)
    again.encoder = MustNotEncode()
    assert again.extract_missing(images) == set()
    np.testing.assert_array_equal(again.view(images)[[2, 0]], view[[2, 0]])


def test_only_missing_or_changed_images_are_encoded(tmp_path, encoder, images, capsys):
    store = FeatureStore(tmp_path / "cache", encoder)
    store.extract_missing(images[:2])
    capsys.readouterr()
    store.extract_missing(images)
    assert "Encoding 1 " in capsys.readouterr().out
    stat = images[0].stat()
    os.utime(images[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the photo was edited
    store.extract_missing(images)
    assert "Encoding 1 " in capsys.readouterr().out
    assert len(list(store.directory.glob("shard-*.npy"))) == 3


def test_unreadable_images_are_reported_and_left_out(tmp_path, encoder, images, capsys):
    broken = images[0].parent / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    store = FeatureStore(tmp_path / "cache", encoder)
    failed = store.extract_missing(images + [broken])
    assert failed == {broken}
    assert "broken.jpg" in capsys.readouterr().err
    assert len(store.view(images)) == 3


def test_a_shard_without_its_index_is_ignored(tmp_path, encoder, images):
    store = FeatureStore(tmp_path / "cache", encoder)
    store.extract_missing(images)
    for index_file in store.directory.glob("shard-*.json"):
        index_file.unlink()  # as if the run died between writing the shard and its index
    fresh = FeatureStore(tmp_path / "cache", encoder)
    assert fresh.location == {}
    fresh.extract_missing(images)
    assert len(fresh.view(images)) == 3


def test_encoders_with_other_weights_do_not_share_features(tmp_path, encoder, images):
    other = Encoder("mobilenet_v2", weights=None, image_size=SIZE)  # same architecture, new random weights
    assert FeatureStore(tmp_path, encoder).directory != FeatureStore(tmp_path, other).directory


def test_many_images_are_encoded_with_litert_to_the_features_tensorflow_computes(encoder):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    from captioner.data.features import LITERT_FROM_IMAGES, compile_encoder, encode_in_memory
    from captioner.utils.litert import LiteRTFunction

    fresh = Encoder("mobilenet_v2", weights=None, image_size=SIZE)
    assert not isinstance(compile_encoder(fresh, LITERT_FROM_IMAGES - 1), LiteRTFunction)  # too few to pay
    converted = compile_encoder(fresh, LITERT_FROM_IMAGES)
    assert isinstance(converted, LiteRTFunction)
    assert compile_encoder(fresh, 1) is converted  # converted once per encoder, then used for any number
    images = np.random.default_rng(0).integers(0, 256, size=(LITERT_FROM_IMAGES + 5, SIZE, SIZE, 3), dtype=np.uint8)
    features = encode_in_memory(encoder, images, "scenes")  # batches of 32 and a last one of 5
    direct = np.asarray(encoder.encode_below(images[-40:].astype(np.float32)))
    assert features.shape == (len(images), *direct.shape[1:]) and features.dtype == np.float16
    np.testing.assert_allclose(features[-40:].astype(np.float32), direct, rtol=1e-2, atol=1e-2)  # float16 storage
