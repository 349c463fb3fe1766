import numpy as np
import pytest

from captioner.model.encoder import BACKBONES, Encoder, WeightsUnavailableError, default_image_size


def test_random_backbone_gives_a_grid_of_features():
    encoder = Encoder("mobilenet_v2", weights=None, image_size=96)
    features = encoder(np.zeros((2, 96, 96, 3), np.float32))
    assert encoder.grid == (3, 3)
    assert features.shape == (2, 9, 1280)
    assert not encoder.backbone.trainable


def test_cut_at_a_middle_layer():
    encoder = Encoder("mobilenet_v2", weights=None, image_size=96, layer="block_13_expand_relu")
    assert encoder.grid == (6, 6) and encoder.feature_size == 576


def test_saved_config_never_asks_for_a_download():
    config = Encoder("mobilenet_v2", weights=None, image_size=96).get_config()
    assert config["weights"] is None and config["layer"] == "out_relu"


def test_unknown_backbone_or_layer_is_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        Encoder("alexnet", weights=None)
    with pytest.raises(ValueError, match="no layer"):
        Encoder("mobilenet_v2", weights=None, image_size=96, layer="nope")


def test_failed_download_says_so_and_names_keras_home(monkeypatch, tmp_path):
    """Keras's real loading path, with its download made to fail as it does offline."""
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/weights.h5: None -- no network")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(WeightsUnavailableError) as error:
        Encoder("mobilenet_v2", weights="imagenet", image_size=96)
    message = str(error.value)
    assert "KERAS_HOME" in message and str(tmp_path) in message and "\n" not in message
    assert "URL fetch failure" in message


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_registered_backbone_cuts_at_a_spatial_grid(name):
    size = 139 if name == "inception_v3" else 96  # Inception shrinks more: 96 px would leave one cell
    encoder = Encoder(name, weights=None, image_size=size)
    features = encoder(np.zeros((1, size, size, 3), np.float32))
    rows, columns = encoder.grid
    assert rows >= 2 and columns >= 2
    assert features.shape == (1, rows * columns, encoder.feature_size)
    assert default_image_size(name) >= 224
