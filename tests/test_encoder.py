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


def test_fused_layers_join_each_cell_with_the_coarser_cell_that_covers_it(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    fused = Encoder("mobilenet_v2", weights=None, image_size=96, layer="block_13_expand_relu+out_relu")
    assert fused.grid == (6, 6) and fused.feature_size == 576 + 1280
    images = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    features = keras.ops.convert_to_numpy(fused(images)).reshape(2, 6, 6, -1)
    preprocessed = fused.preprocess(images)
    fine = keras.ops.convert_to_numpy(keras.Model(fused.backbone.input,
                                                  fused.backbone.get_layer("block_13_expand_relu").output)(preprocessed))
    coarse = keras.ops.convert_to_numpy(keras.Model(fused.backbone.input,
                                                    fused.backbone.get_layer("out_relu").output)(preprocessed))
    np.testing.assert_allclose(features[..., :576], fine, rtol=1e-5, atol=1e-5)
    # Cell (r, c) of the 6x6 grid carries the 3x3 grid's cell (r // 2, c // 2).
    np.testing.assert_allclose(features[:, 4, 1, 576:], coarse[:, 2, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features[..., 576:], coarse.repeat(2, axis=1).repeat(2, axis=2), rtol=1e-5, atol=1e-5)

    with pytest.raises(ValueError, match="cannot fuse"):
        Encoder("mobilenet_v2", weights=None, image_size=75, layer="block_6_expand_relu+out_relu")  # 10x10 and 3x3
    with pytest.raises(ValueError, match="no layer 'nope'"):
        Encoder("mobilenet_v2", weights=None, image_size=96, layer="block_13_expand_relu+nope")
