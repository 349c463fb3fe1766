"""Fine-tuning the encoder's last blocks (`--fine-tune-encoder N`): only those blocks train, BatchNorm
stays put, the cache holds what lies below them, and a fine-tuned model saves, loads and resumes exactly."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL_IMAGE, TINY_RUN, assert_same_checkpoints, interrupt_after_first_epoch

from captioner.cli import train
from captioner.data.features import FeatureStore
from captioner.data.images import load_image
from captioner.model.encoder import Encoder
from captioner.model.saving import load_captioner

FIXTURE_IMAGES = Path(__file__).resolve().parent.parent / "data" / "fixtures" / "flickr8k" / "Flicker8k_Dataset"
BLOCKS = 2  # the synthetic preset cuts at block_13_expand_relu: block 12 (a residual block) and block 13's expansion


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory):
    """The common recipe's first half: a decoder trained on a frozen encoder."""
    run_dir = tmp_path_factory.mktemp("decoder")
    assert train.main(TINY_RUN + ["--epochs", "1", "--run-dir", str(run_dir)]) == 0
    return run_dir


def fine_tune(decoder_run, run_dir, epochs=2, extra=()):
    return train.main(TINY_RUN + ["--init", str(decoder_run / "best.keras"), "--fine-tune-encoder", str(BLOCKS),
                                  "--encoder-lr", "1e-2", "--epochs", str(epochs), "--run-dir", str(run_dir), *extra])


@pytest.fixture(scope="module")
def fine_tuned_run(decoder_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fine_tuned")
    assert fine_tune(decoder_run, run_dir) == 0
    return run_dir


def encoder_weights(model) -> dict[str, np.ndarray]:
    return {weight.path: np.asarray(weight) for weight in model.encoder.weights}


def test_only_the_chosen_blocks_train_and_batchnorm_does_not_move(decoder_run, fine_tuned_run):
    before = load_captioner(decoder_run / "best.keras")
    after = load_captioner(fine_tuned_run / "best.keras")
    assert before.encoder.fine_tune_blocks == 0 and after.encoder.fine_tune_blocks == BLOCKS
    trained = {weight.path for weight in after.encoder.fine_tuned_variables}
    # block 12's expansion, depthwise and projection kernels, block 13's expansion kernel
    assert {path.split("/")[-2] for path in trained} == {"block_12_expand", "block_12_depthwise", "block_12_project",
                                                         "block_13_expand"}
    old, new = encoder_weights(before), encoder_weights(after)
    assert old.keys() == new.keys()
    changed = {path for path in old if not np.array_equal(old[path], new[path])}
    assert changed == trained  # everything else, BatchNorm's statistics, scales and offsets included, is untouched
    assert any("BN/moving_mean" in path for path in old)  # (the check above did look at BatchNorm)


def test_a_fine_tuned_model_loads_with_its_encoder_and_captions_alike(fine_tuned_run, tmp_path):
    model = load_captioner(fine_tuned_run / "best.keras")
    model.save(tmp_path / "again.keras")
    again = load_captioner(tmp_path / "again.keras")
    images = np.stack([load_image(path, SMALL_IMAGE) for path in sorted(FIXTURE_IMAGES.glob("*.jpg"))])
    np.testing.assert_array_equal(np.asarray(model.encoder(images)), np.asarray(again.encoder(images)))
    assert [c.words for c in model.caption(images, beam_size=2)] == [c.words for c in again.caption(images, beam_size=2)]


def test_an_interrupted_fine_tuning_run_resumes_to_the_same_weights(decoder_run, fine_tuned_run, tmp_path, monkeypatch):
    interrupted = tmp_path / "interrupted"
    interrupt_after_first_epoch(monkeypatch)
    assert fine_tune(decoder_run, interrupted) == 130
    monkeypatch.undo()
    assert train.main(["--resume", "--run-dir", str(interrupted)]) == 0
    rows = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    # the encoder's blocks and their optimizer's moments are in the checkpoint too
    names = [str(name) for name in np.load(fine_tuned_run / "checkpoints/last.npz")["model_names"]]
    assert any("block_13_expand" in name for name in names)
    assert_same_checkpoints(fine_tuned_run / "checkpoints/last.npz", interrupted / "checkpoints/last.npz")


def test_the_cache_holds_the_activations_below_the_fine_tuned_blocks(tmp_path):
    encoder = Encoder(weights=None, image_size=SMALL_IMAGE, layer="block_13_expand_relu", fine_tune_blocks=BLOCKS)
    assert encoder.split_layer == "block_11_add"
    paths = sorted(FIXTURE_IMAGES.glob("*.jpg"))
    store = FeatureStore(tmp_path, encoder)
    assert not store.extract_missing(paths)
    assert "block_11_add" in store.directory.name
    cached = store.view(paths)[:]  # (N, L', D'), float16
    images = np.stack([load_image(path, SMALL_IMAGE) for path in paths]).astype(np.float32)
    fresh = np.asarray(encoder.encode_below(images))
    assert cached.shape == fresh.shape == (len(paths), *encoder.cached_shape)
    features = np.asarray(encoder(images))
    assert np.abs(fresh).max() > 0 and np.abs(features).max() > 0  # (a random encoder's top can be all zeros)
    np.testing.assert_allclose(cached, fresh, rtol=1e-3, atol=1e-3)  # float16 on disk
    # and the blocks above turn the cache into the features the whole encoder gives
    np.testing.assert_allclose(np.asarray(encoder.encode_above(cached)), features, rtol=0.02, atol=0.02)


def test_a_cache_of_another_shape_is_refused_naming_the_file(tmp_path):
    frozen = Encoder(weights=None, image_size=SMALL_IMAGE, layer="block_13_expand_relu")
    tuned = Encoder(weights=None, image_size=SMALL_IMAGE, layer="block_13_expand_relu", fine_tune_blocks=BLOCKS)
    store = FeatureStore(tmp_path, frozen)
    store.extract_missing(sorted(FIXTURE_IMAGES.glob("*.jpg")))
    # another cut point stores elsewhere, so it never reads the frozen encoder's features ...
    assert FeatureStore(tmp_path, tuned).directory != store.directory
    # ... and a directory holding features of the wrong shape (copied or renamed by hand) is refused
    fake = FeatureStore(tmp_path / "other", tuned).directory
    shutil.copytree(store.directory, fake)
    with pytest.raises(ValueError, match=r"shard-\w+\.npy: features of shape"):
        FeatureStore(tmp_path / "other", tuned)


@pytest.mark.parametrize("flags, message", [
    (["--fine-tune-encoder", "99"], "cannot fine-tune 99 blocks"),
    (["--fine-tune-encoder", "-1"], "--fine-tune-encoder must not be negative"),
    (["--encoder-lr", "1e-4"], "--encoder-lr needs --fine-tune-encoder"),
    (["--fine-tune-encoder", "1", "--scst", "--init", "x.keras"], "self-critical"),
])
def test_bad_fine_tuning_flags_get_one_clear_line(flags, message, tmp_path, capsys):
    try:
        status = train.main(TINY_RUN + ["--epochs", "1", "--run-dir", str(tmp_path / "run"), *flags])
    except SystemExit as exit:  # argparse's errors
        status = exit.code
    assert status == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert message in errors[-1]


def test_fine_tuning_an_ensemble_is_refused(decoder_run, tmp_path, capsys):
    from captioner.model.captioner import make_ensemble

    member = load_captioner(decoder_run / "best.keras")
    make_ensemble([member, member]).save(tmp_path / "ensemble.keras")
    status = train.main(TINY_RUN + ["--init", str(tmp_path / "ensemble.keras"), "--fine-tune-encoder", "1",
                                    "--epochs", "1", "--run-dir", str(tmp_path / "run")])
    assert status == 2
    assert "ensemble.keras: an ensemble is not trained further" in capsys.readouterr().err


def test_an_ensemble_of_fine_tuned_models_keeps_each_members_blocks(decoder_run, fine_tuned_run, tmp_path):
    from captioner.cli.caption import load_model
    from captioner.model.captioner import Captioner, caption_features, ensemble_members, make_ensemble
    from captioner.model.saving import save_model

    first = load_captioner(fine_tuned_run / "best.keras")
    second = load_captioner(fine_tuned_run / "best.keras")  # the same run, fine-tuned "differently":
    second.encoder.above.set_weights([w * 1.05 for w in second.encoder.above.get_weights()])
    second.decoder.set_weights([w * 0.9 for w in second.decoder.get_weights()])
    images = np.stack([load_image(path, SMALL_IMAGE) for path in sorted(FIXTURE_IMAGES.glob("*.jpg"))])

    ensemble = make_ensemble([first, second])
    assert ensemble.encoder.members == 2
    features = np.asarray(ensemble.encoder(images))
    size = first.encoder.feature_size
    np.testing.assert_allclose(features[..., :size], np.asarray(first.encoder(images)), atol=1e-5)
    np.testing.assert_allclose(features[..., size:], np.asarray(second.encoder(images)), atol=1e-5)
    # The cache path (frozen part once, then each member's blocks) gives the same captions as the images.
    from_cache = caption_features(ensemble, np.asarray(ensemble.encoder.encode_below(images)), beam_size=3)
    from_images = ensemble.caption(images, beam_size=3)
    assert [c.words for c in from_cache] == [c.words for c in from_images]

    save_model(ensemble, tmp_path / "ensemble.keras", weights_dtype="float16")
    loaded = load_captioner(tmp_path / "ensemble.keras")
    assert loaded.encoder.members == 2
    assert [c.words for c in loaded.caption(images, beam_size=3)] == [c.words for c in from_images]
    numpy_model = load_model(tmp_path / "ensemble.keras", "auto", 1)  # a few photos: the NumPy model runs it
    assert not isinstance(numpy_model, Captioner)
    assert [c.words for c in numpy_model.caption(images, beam_size=3)] == [c.words for c in from_images]

    unpacked = ensemble_members(ensemble)
    for member, original in zip(unpacked, [first, second]):
        assert member.encoder.members == 1
        for mine, theirs in zip(member.encoder.backbone.get_weights(), original.encoder.backbone.get_weights()):
            np.testing.assert_array_equal(mine, theirs)

    # Only the fine-tuned blocks may differ: members with another frozen part are refused.
    third = load_captioner(fine_tuned_run / "best.keras")
    third.encoder.below.set_weights([w + 0.01 for w in third.encoder.below.get_weights()])
    with pytest.raises(ValueError, match="below the fine-tuned blocks"):
        make_ensemble([first, third])


def test_a_frozen_encoders_model_joins_fine_tuned_ones_with_the_untuned_blocks(decoder_run, fine_tuned_run):
    from captioner.model.captioner import ensemble_members, make_ensemble

    tuned = load_captioner(fine_tuned_run / "best.keras")
    frozen = load_captioner(decoder_run / "best.keras")
    images = np.stack([load_image(path, SMALL_IMAGE) for path in sorted(FIXTURE_IMAGES.glob("*.jpg"))])

    ensemble = make_ensemble([tuned, frozen])
    assert ensemble.encoder.members == 2 and ensemble.encoder.fine_tune_blocks == BLOCKS
    features = np.asarray(ensemble.encoder(images))
    size = tuned.encoder.feature_size
    np.testing.assert_allclose(features[..., :size], np.asarray(tuned.encoder(images)), atol=1e-5)
    np.testing.assert_allclose(features[..., size:], np.asarray(frozen.encoder(images)), atol=1e-5)
    # Taken out again, the frozen member captions as it did before it joined.
    rejoined = ensemble_members(ensemble)[1]
    expected = [caption.words for caption in frozen.caption(images, beam_size=3)]
    assert [caption.words for caption in rejoined.caption(images, beam_size=3)] == expected
