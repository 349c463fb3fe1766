"""The NumPy model (`captioner.numpy_model`) must caption exactly as the Keras model it was read from.

Same words, scores, runners-up and attention maps for every decoder kind the shipped models use
(every score function, with and without projected features and the location embedding, hard
attention, ensembles), greedy and beam search, on random-weight models and on the shipped model;
MobileNetV2's activations equal Keras's at the cuts our models use. And the command line: a few
photos never start TensorFlow, many photos or `--engine keras` use the Keras model, and a model the
NumPy version cannot run says so.
"""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import SMALL_IMAGE, make_captioner

from captioner.cli import caption as caption_cli
from captioner.data.images import load_images
from captioner.model.captioner import Captioner, make_ensemble
from captioner.model.saving import SHIPPED_MODEL, save_model
from captioner.numpy_model import NumpyCaptioner, UnsupportedModel, load_numpy_captioner
from captioner.numpy_model.captioner import Encoder as NumpyEncoder
from captioner.numpy_model.mobilenet_v2 import MobileNetV2
from captioner.numpy_model.weights import KerasFile

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "data" / "examples").glob("*.jpg"))


def _images(count: int, size: int = SMALL_IMAGE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def _assert_same_captions(keras_model, numpy_model, images, beam_size: int, length_penalty: float = 0.0):
    expected = keras_model.caption(images, beam_size=beam_size, length_penalty=length_penalty)
    found = numpy_model.caption(images, beam_size=beam_size, length_penalty=length_penalty)
    assert len(found) == len(expected)
    for mine, theirs in zip(found, expected):
        assert mine.words == theirs.words
        assert [text for text, _ in mine.alternatives] == [text for text, _ in theirs.alternatives]
        np.testing.assert_allclose([s for _, s in mine.alternatives], [s for _, s in theirs.alternatives], atol=1e-3)
        if theirs.score is None:
            assert mine.score is None
        else:
            assert mine.score == pytest.approx(theirs.score, abs=1e-3)
        np.testing.assert_allclose(mine.attention, theirs.attention, atol=1e-4)
        assert mine.chosen_cells == theirs.chosen_cells


def _both(model, tmp_path) -> tuple[Captioner, NumpyCaptioner]:
    path = tmp_path / "model.keras"
    save_model(model, path)
    return model, load_numpy_captioner(path)


def _randomise_batch_norms(backbone):
    """Statistics as a trained network has them: a new layer's BatchNorm is nearly the identity."""
    rng = np.random.default_rng(0)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2.0, gamma.shape), rng.normal(0, 0.5, beta.shape),
                               rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2.0, variance.shape)])


@pytest.mark.parametrize("cut, size", [("out_relu", SMALL_IMAGE), ("block_13_expand_relu", SMALL_IMAGE),
                                       ("out_relu", 75), ("block_6_expand_relu", 75),
                                       ("block_13_expand_relu+out_relu", SMALL_IMAGE),
                                       ("block_5_project_BN", SMALL_IMAGE), ("block_2_expand", SMALL_IMAGE),
                                       ("block_13_expand+out_relu", SMALL_IMAGE),
                                       ("block_13_expand_BN+out_relu", SMALL_IMAGE)])
def test_mobilenet_v2_activations_equal_keras(tmp_path, cut, size):
    # 75 px: odd sizes on the way down, where keras.applications pads before and after a stride-2 layer.
    # A fused cut ("+"): the NumPy encoder repeats the coarser map and joins them as Keras does.
    # A BatchNorm or a convolution as the cut, or kept beside it: NumPy folds each BatchNorm into the
    # convolution before it, except where that convolution's own map is read.
    keras.utils.set_random_seed(1)
    reference = make_captioner()  # its vocabulary and decoder settings, over the encoder under test
    decoder = {key: value for key, value in reference.decoder.get_config().items()
               if key not in ("name", "vocabulary_size")}
    model = Captioner(reference.vocabulary.words, dict(backbone="mobilenet_v2", weights=None, image_size=size,
                                                       layer=cut), decoder, max_length=8)
    model.build()
    _randomise_batch_norms(model.encoder.backbone)
    save_model(model, tmp_path / "model.keras")
    keras_file = KerasFile(tmp_path / "model.keras")
    numpy_encoder = NumpyEncoder(keras_file.config["encoder"], keras_file)

    images = _images(2, size)
    expected = keras.ops.convert_to_numpy(model.encoder(images))
    assert numpy_encoder.grid == tuple(model.encoder.grid)
    if "+" not in cut:
        assert numpy_encoder.grid == MobileNetV2.grid(size, cut)
    np.testing.assert_allclose(numpy_encoder(images), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("settings", [
    dict(attention="additive"),
    dict(attention="general", location_embedding=False),
    dict(attention="dot"),
    dict(attention="scaled_dot", seed=2),
    dict(attention="none"),
    dict(attention="additive", feature_units=0),
    dict(hard_attention=True),
    dict(hard_attention=True, hard_state="expected"),
])
def test_numpy_captions_equal_keras_captions(tmp_path, settings):
    model, numpy_model = _both(make_captioner(**settings), tmp_path)
    assert numpy_model.grid == model.grid
    images = _images(3)
    _assert_same_captions(model, numpy_model, images, beam_size=1)
    _assert_same_captions(model, numpy_model, images, beam_size=3)
    _assert_same_captions(model, numpy_model, images, beam_size=2, length_penalty=0.7)


def test_fused_features_are_projected_once_per_coarse_cell_with_the_same_numbers(tmp_path):
    """A fused grid's repeated coarse part is multiplied once per coarse cell (as Keras does); the result must be
    the projection of the full repeated features. (Random-weight encoders give a near-zero coarse map, so this
    is checked on features drawn here.)"""
    model, numpy_model = _both(make_captioner(encoder_layer="block_13_expand_relu+out_relu"), tmp_path)
    decoder = numpy_model.decoder
    (rows, columns, fine_channels), (coarse_rows, _, coarse_channels) = decoder.fused_layout
    factor = rows // coarse_rows
    rng = np.random.default_rng(0)
    fine = rng.normal(size=(2, rows, columns, fine_channels)).astype(np.float32)
    coarse = rng.normal(size=(2, coarse_rows, coarse_rows, coarse_channels)).astype(np.float32)
    repeated = coarse.repeat(factor, axis=1).repeat(factor, axis=2)
    features = np.concatenate([fine, repeated], axis=-1).reshape(2, rows * columns, -1)
    np.testing.assert_allclose(decoder._project(features), decoder.feature_projection(features), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(decoder._project(features),
                               keras.ops.convert_to_numpy(model.decoder._project(features)), rtol=1e-5, atol=1e-5)


def test_hard_attention_expected_context_and_ensembles_match(tmp_path):
    model, numpy_model = _both(make_captioner(hard_attention=True, seed=3), tmp_path)
    model.decoder.hard_inference = numpy_model.decoder.hard_inference = "expected"
    _assert_same_captions(model, numpy_model, _images(3), beam_size=3)

    members = [make_captioner(seed=seed) for seed in (4, 5)]
    members[1].encoder.set_weights(members[0].encoder.get_weights())  # an ensemble shares one encoder
    ensemble = make_ensemble(members)
    ensemble_path = tmp_path / "ensemble.keras"
    save_model(ensemble, ensemble_path, weights_dtype="float16")  # the shipped storage
    from captioner.model.saving import load_captioner

    _assert_same_captions(load_captioner(ensemble_path), load_numpy_captioner(ensemble_path), _images(3), beam_size=3)


def test_hard_ensembles_read_the_same_shared_cell_in_numpy(tmp_path):
    from captioner.model.saving import load_captioner

    members = [make_captioner(seed=seed, hard_attention=True, hard_state="expected") for seed in (7, 8)]
    members[1].encoder.set_weights(members[0].encoder.get_weights())
    path = tmp_path / "hard-ensemble.keras"
    save_model(make_ensemble(members), path)
    model, numpy_model = load_captioner(path), load_numpy_captioner(path)
    assert numpy_model.decoder.hard_attention
    _assert_same_captions(model, numpy_model, _images(3), beam_size=1)
    _assert_same_captions(model, numpy_model, _images(3), beam_size=3)
    model.decoder.hard_inference = numpy_model.decoder.hard_inference = "expected"
    _assert_same_captions(model, numpy_model, _images(3), beam_size=3)


@pytest.mark.parametrize("cut, blocks", [("out_relu", 2), ("block_13_expand_relu+out_relu", 1)])
def test_ensembles_whose_members_have_their_own_fine_tuned_blocks_match(tmp_path, cut, blocks):
    keras.utils.set_random_seed(6)
    reference = make_captioner()
    decoder = {key: value for key, value in reference.decoder.get_config().items()
               if key not in ("name", "vocabulary_size")}
    encoder = dict(backbone="mobilenet_v2", weights=None, image_size=SMALL_IMAGE, layer=cut,
                   fine_tune_blocks=blocks, members=2)
    model = Captioner(reference.vocabulary.words, encoder, [decoder, {**decoder, "seed": 9}], max_length=8)
    model.build()
    # The second member's blocks differ from the first's (in every layer, BatchNorm's statistics too).
    model.encoder.member_blocks[0].set_weights([weight * 0.9 + 0.01 for weight in model.encoder.above.get_weights()])
    model, numpy_model = _both(model, tmp_path)
    # The frozen layers run once for both members: their own blocks begin right above Keras's split.
    order = numpy_model.encoder.networks[0].layer_order
    assert order.index(numpy_model.encoder.first_own) == order.index(model.encoder.split_layer) + 1
    images = _images(2)
    features = numpy_model.encoder(images)
    assert features.shape[-1] == model.encoder.feature_size
    np.testing.assert_allclose(features, keras.ops.convert_to_numpy(model.encoder(images)), rtol=1e-4, atol=1e-4)
    _assert_same_captions(model, numpy_model, images, beam_size=3)


def test_the_shipped_model_captions_the_same_in_numpy():
    from captioner.model.saving import load_captioner

    images = np.stack([load_images(path, 224)[0] for path in EXAMPLES])
    _assert_same_captions(load_captioner(SHIPPED_MODEL), load_numpy_captioner(SHIPPED_MODEL), images, beam_size=3)


def test_models_it_cannot_run_or_read_are_refused_with_the_file_named(tmp_path):
    path = tmp_path / "model.keras"
    save_model(make_captioner(), path)
    other = tmp_path / "efficientnet.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(other, "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "config.json":
                config = json.loads(data)
                config["config"]["encoder"]["backbone"] = "efficientnet_b0"
                data = json.dumps(config)
            target.writestr(info, data)
    with pytest.raises(UnsupportedModel, match="efficientnet_b0"):
        load_numpy_captioner(other)
    with pytest.raises(ValueError, match="no such model file"):
        KerasFile(tmp_path / "missing.keras")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.keras: not a .keras model file"):
        KerasFile(tmp_path / "broken.keras")

    photo = str(EXAMPLES[0])
    completed = subprocess.run([sys.executable, "predict.py", photo, "--model", str(other), "--engine", "numpy"],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert "efficientnet_b0" in completed.stderr and "--engine keras" in completed.stderr


def test_a_few_photos_never_start_tensorflow_and_many_use_keras(tmp_path, monkeypatch):
    script = ("import sys; from captioner.cli import caption; status = caption.main(sys.argv[1:]); "
              "print('loaded:', ','.join(m for m in ('tensorflow', 'keras') if m in sys.modules)); sys.exit(status)")
    photos = [str(path) for path in EXAMPLES]
    completed = subprocess.run([sys.executable, "-c", script, *photos, "--beam", "3", "--json"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    assert lines[-1] == "loaded: "
    keras_run = subprocess.run([sys.executable, "predict.py", *photos, "--beam", "3", "--json", "--engine", "keras"],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert keras_run.returncode == 0, keras_run.stderr[-2000:]
    for fast, compiled in zip(lines[:-1], keras_run.stdout.splitlines(), strict=True):
        fast, compiled = json.loads(fast), json.loads(compiled)
        assert fast["caption"] == compiled["caption"]
        np.testing.assert_allclose(fast["attention"], compiled["attention"], atol=2e-4)

    assert isinstance(caption_cli.load_model(SHIPPED_MODEL, "auto", caption_cli.NUMPY_MAX_PHOTOS), NumpyCaptioner)
    assert isinstance(caption_cli.load_model(SHIPPED_MODEL, "auto", caption_cli.NUMPY_MAX_PHOTOS + 1), Captioner)
    assert isinstance(caption_cli.load_model(SHIPPED_MODEL, "numpy", 1000), NumpyCaptioner)


def test_top_k_is_a_stable_sort_cut_to_k_ties_included():
    """Beam search's top k finds the k-th value first and sorts only what reaches it; it must pick exactly what a
    stable full sort picks, ties at the cut (lower index first) and the impossible candidates included."""
    from captioner.numpy_model.search import NEVER, _top_k

    rng = np.random.default_rng(0)
    for _ in range(300):
        columns, k = int(rng.integers(1, 80)), int(rng.integers(1, 8))
        values = rng.integers(-3, 3, size=(int(rng.integers(1, 4)), columns)).astype(np.float32)  # many ties
        values[:, rng.integers(0, columns, size=columns // 3)] = NEVER
        k = min(k, columns)
        np.testing.assert_array_equal(_top_k(values, k), np.argsort(-values, axis=-1, kind="stable")[:, :k])


def test_packed_weights_are_decoded_once_and_again_when_the_file_changes(tmp_path, monkeypatch):
    """Decoding a packed file's scale-offset filter is most of a cold start: the decoded weights are kept in the
    cache, used while the file is the same, decoded again when it changes; other storages are read directly."""
    import h5py

    monkeypatch.setenv("CAPTIONER_CACHE", str(tmp_path / "cache"))
    entries = tmp_path / "cache" / "weights"
    path = tmp_path / "model.keras"
    save_model(make_captioner(seed=1), path, weights_dtype="packed")
    decoded = KerasFile(path)
    assert len(list(entries.glob("*.npz"))) == 1

    with monkeypatch.context() as patched:  # the second read must not touch the HDF5 file
        patched.setattr(h5py, "File", lambda *args, **kwargs: pytest.fail("decoded the weights again"))
        cached = KerasFile(path)
    assert cached._arrays.keys() == decoded._arrays.keys()
    for name, array in decoded._arrays.items():
        np.testing.assert_array_equal(cached._arrays[name], array)

    save_model(make_captioner(seed=2), path, weights_dtype="packed")  # another model at the same path
    changed = KerasFile(path)
    assert not np.array_equal(changed.variables("decoder/lstm_cell")[0], decoded.variables("decoder/lstm_cell")[0])
    assert len(list(entries.glob("*.npz"))) == 1  # one entry per model path, replaced

    float16 = tmp_path / "float16.keras"
    save_model(make_captioner(seed=1), float16, weights_dtype="float16")
    KerasFile(float16)
    assert len(list(entries.glob("*.npz"))) == 1

    (tmp_path / "not-a-folder").write_text("")  # a cache that cannot be written: the model still loads
    monkeypatch.setenv("CAPTIONER_CACHE", str(tmp_path / "not-a-folder"))
    np.testing.assert_array_equal(KerasFile(path).variables("decoder/lstm_cell")[0],
                                  changed.variables("decoder/lstm_cell")[0])
