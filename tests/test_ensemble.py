import io
import zipfile

import numpy as np
import pytest
from helpers import make_captioner
from keras import ops

from captioner.cli.ensemble import main
from captioner.data.vocabulary import Vocabulary
from captioner.model.captioner import make_ensemble
from captioner.model.saving import load_captioner, save_model


def _members(*settings):
    """Captioners with different decoders over one encoder (as runs that share a frozen backbone)."""
    models = [make_captioner(seed=seed, **options) for seed, options in settings]
    for model in models[1:]:
        model.encoder.set_weights(models[0].encoder.get_weights())
    return models


def test_one_step_averages_the_members_probabilities_and_attention(random_images):
    first, second = _members((1, {}), (2, {"attention": "general", "feature_units": 0}))
    ensemble = make_ensemble([first, second])
    features = first.encoder(random_images)
    words = ops.full([len(random_images)], first.vocabulary.start_id, dtype="int32")

    member_probs, member_weights = [], []
    for model in (first, second):
        prepared, keys, state = model.decoder.prepare(features)
        logits, _, weights = model.decoder.step(words, state, prepared, keys)
        member_probs.append(ops.convert_to_numpy(ops.softmax(logits)))
        member_weights.append(ops.convert_to_numpy(weights))
    prepared, keys, state = ensemble.decoder.prepare(features)
    log_probs, new_state, weights = ensemble.decoder.step(words, state, prepared, keys)

    np.testing.assert_allclose(np.exp(ops.convert_to_numpy(log_probs)), np.mean(member_probs, axis=0), atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(weights), np.mean(member_weights, axis=0), atol=1e-6)
    assert len(new_state) == 4  # h and c of each member


def test_an_ensemble_of_one_model_twice_captions_like_the_model(random_images):
    model = make_captioner(seed=5)
    ensemble = make_ensemble([model, model])
    for beam in (1, 3):
        alone, doubled = model.caption(random_images, beam_size=beam), ensemble.caption(random_images, beam_size=beam)
        assert [c.words for c in alone] == [c.words for c in doubled]
        for a, b in zip(alone, doubled):
            np.testing.assert_allclose(a.attention, b.attention, atol=1e-5)


@pytest.mark.parametrize("weights_dtype", ["float32", "float16"])
def test_saved_ensemble_loads_and_captions_the_same(tmp_path, random_images, weights_dtype):
    ensemble = make_ensemble(_members((1, {}), (2, {}), (3, {"attention": "dot"})))
    path = tmp_path / "ensemble.keras"
    save_model(ensemble, path, weights_dtype=weights_dtype)
    loaded = load_captioner(path)

    assert loaded.is_ensemble and len(loaded.decoder.members) == 3
    tolerance = 1e-7 if weights_dtype == "float32" else 1e-3  # float16 keeps about 3 significant digits
    for saved, restored in zip(ensemble.weights, loaded.weights):
        assert restored.dtype == "float32"  # stored small, computed in float32
        np.testing.assert_allclose(ops.convert_to_numpy(restored), ops.convert_to_numpy(saved),
                                   rtol=tolerance, atol=tolerance)
    if weights_dtype == "float32":
        original, again = ensemble.caption(random_images, beam_size=3), loaded.caption(random_images, beam_size=3)
        assert [c.words for c in original] == [c.words for c in again]


def test_float16_storage_halves_the_file(tmp_path):
    model = make_captioner(seed=6)
    save_model(model, tmp_path / "full.keras")
    save_model(model, tmp_path / "half.keras", weights_dtype="float16")
    full, half = (tmp_path / "full.keras").stat().st_size, (tmp_path / "half.keras").stat().st_size
    assert half < 0.6 * full


def test_packed_storage_rounds_each_big_matrix_to_a_step_of_its_spread_and_reads_back_everywhere(
        tmp_path, monkeypatch, random_images):
    import h5py

    from captioner.model import saving
    from captioner.numpy_model import load_numpy_captioner

    monkeypatch.setattr(saving, "PACKED_MIN_VALUES", 4096)  # the test model's matrices are small
    model = make_captioner(seed=6)
    save_model(model, tmp_path / "half.keras", weights_dtype="float16")
    save_model(model, tmp_path / "packed.keras", weights_dtype="packed")
    half, packed = (tmp_path / "half.keras").stat().st_size, (tmp_path / "packed.keras").stat().st_size
    assert packed < 0.8 * half

    with zipfile.ZipFile(tmp_path / "packed.keras") as archive, \
            h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as store:
        filtered = []
        store.visititems(lambda name, item: filtered.append(name)
                         if isinstance(item, h5py.Dataset) and item.scaleoffset is not None else None)
    assert filtered, "no matrix was packed"
    loaded = load_captioner(tmp_path / "packed.keras")
    assert len(filtered) == sum(np.prod(weight.shape) >= 4096 for weight in model.weights)
    for saved, restored in zip(model.weights, loaded.weights):
        saved, restored = ops.convert_to_numpy(saved), ops.convert_to_numpy(restored)
        if saved.size >= 4096:  # a step of at most std / 32 (HDF5 rounds the offset too: off by up to one step)
            assert np.abs(restored - saved).max() <= np.std(saved) / 32 + 1e-7
            assert abs(float(np.mean(restored - saved))) < np.std(saved) / 1000  # rounded, not truncated
            assert not np.array_equal(restored, saved.astype(np.float16).astype(np.float32))  # really packed
        else:  # float16
            np.testing.assert_allclose(restored, saved, rtol=1e-3, atol=1e-3)
    # HDF5 undoes the filter for every reader: the NumPy model decodes the file as Keras does
    numpy_model = load_numpy_captioner(tmp_path / "packed.keras")
    for keras_caption, numpy_caption in zip(loaded.caption(random_images, beam_size=3),
                                            numpy_model.caption(random_images, beam_size=3)):
        assert keras_caption.words == numpy_caption.words


@pytest.mark.parametrize("storage", ["float16", "packed"])
def test_a_member_read_back_from_a_rounded_file_joins_one_trained_on_the_unrounded_encoder(
        storage, tmp_path, monkeypatch, random_images):
    # e.g. a new decoder beside the members unpacked from the shipped (packed) model: the same network
    from captioner.model import saving

    monkeypatch.setattr(saving, "PACKED_MIN_VALUES", 4096)  # the test model's matrices are small
    first, second = _members((1, {}), (2, {}))
    save_model(first, tmp_path / "stored.keras", weights_dtype=storage)
    stored = load_captioner(tmp_path / "stored.keras")
    assert not _all_equal(stored.encoder.get_weights(), second.encoder.get_weights())  # really rounded
    ensemble = make_ensemble([stored, second])
    assert _all_equal(ensemble.encoder.get_weights(), stored.encoder.get_weights())  # model 0's encoder runs
    assert len(ensemble.caption(random_images, beam_size=2)) == len(random_images)
    # a rounding a hundred times coarser than any storage's is another encoder
    coarse = make_captioner(seed=3)
    coarse.set_weights(second.get_weights())
    coarse.encoder.set_weights([np.round(weight, 1) for weight in second.encoder.get_weights()])
    with pytest.raises(ValueError, match="encoder weights differ"):
        make_ensemble([second, coarse])


def _all_equal(first, second):
    return all(np.array_equal(a, b) for a, b in zip(first, second))


def test_members_must_share_vocabulary_and_encoder():
    first, second = _members((1, {}), (2, {}))
    stranger = make_captioner(seed=7)  # its own random encoder
    with pytest.raises(ValueError, match="encoder weights differ"):
        make_ensemble([first, stranger])
    other_words = Vocabulary.build(["a cat on a mat", "a dog"]).words
    relabelled = make_captioner(seed=2)
    relabelled.vocabulary = Vocabulary(other_words)
    with pytest.raises(ValueError, match="another vocabulary"):
        make_ensemble([first, relabelled])
    hard = make_captioner(seed=8, hard_attention=True)
    hard.encoder.set_weights(first.encoder.get_weights())
    for order in ([first, hard], [hard, first]):  # soft and hard members do not mix, whichever comes first
        with pytest.raises(ValueError, match="all be soft or all be hard"):
            make_ensemble(order)


def test_hard_members_read_one_cell_between_them_the_argmax_of_their_mean_attention(random_images, monkeypatch):
    first, second = _members((1, {"hard_attention": True, "hard_state": "expected"}),
                             (2, {"hard_attention": True, "hard_state": "expected", "attention": "general"}))
    ensemble = make_ensemble([first, second])
    assert ensemble.decoder.hard_attention and ensemble.decoder.hard_inference == "argmax"
    locations, size = first.feature_shape
    # Features that differ a lot from cell to cell, so that reading one cell or another changes the words.
    features = ops.convert_to_tensor(np.random.default_rng(0).normal(0, 3, (len(random_images), locations, size)),
                                     dtype="float32")
    words = ops.full([len(random_images)], first.vocabulary.start_id, dtype="int32")

    # Maps on which the members disagree: each peaks at its own cell, and their mean peaks at a third one.
    def peaked(weights_by_cell):
        row = np.full(locations, (1 - sum(weights_by_cell.values())) / (locations - len(weights_by_cell)))
        row[list(weights_by_cell)] = list(weights_by_cell.values())
        return np.tile(row, (len(random_images), 1)).astype("float32")

    maps = [peaked({1: 0.5, 2: 0.4}), peaked({3: 0.5, 2: 0.45})]
    for member, member_map in zip([*ensemble.decoder.members, first.decoder, second.decoder], maps * 2):
        look = member.look
        monkeypatch.setattr(member, "look", lambda state, f, k, look=look, member_map=member_map:
                            (look(state, f, k)[0], ops.convert_to_tensor(member_map)))

    def member_probs(cell):
        probs = []
        for model in (first, second):
            prepared, keys, state = model.decoder.prepare(features)
            context, _ = model.decoder.look(state, prepared, keys)
            chosen = ops.full([len(random_images)], cell, dtype="int32")
            probs.append(ops.convert_to_numpy(ops.softmax(model.decoder.read_cell(words, state, prepared, context,
                                                                                  chosen)[0])))
        return np.mean(probs, axis=0)

    prepared, keys, state = ensemble.decoder.prepare(features)
    log_probs, _, weights = ensemble.decoder.step(words, state, prepared, keys)
    np.testing.assert_allclose(ops.convert_to_numpy(weights), np.mean(maps, axis=0), atol=1e-6)
    np.testing.assert_allclose(np.exp(ops.convert_to_numpy(log_probs)), member_probs(2), atol=1e-6)
    # Not what a member reading its own peak would give.
    assert not np.allclose(np.exp(ops.convert_to_numpy(log_probs)), member_probs(1), atol=1e-6)


def test_a_hard_ensemble_of_one_model_twice_captions_like_the_model_and_saves(tmp_path, random_images):
    model = make_captioner(seed=6, hard_attention=True, hard_state="expected")
    ensemble = make_ensemble([model, model])
    path = tmp_path / "hard-ensemble.keras"
    save_model(ensemble, path)
    loaded = load_captioner(path)
    assert loaded.decoder.hard_attention
    for beam in (1, 3):
        alone = model.caption(random_images, beam_size=beam)
        for doubled in (ensemble.caption(random_images, beam_size=beam), loaded.caption(random_images, beam_size=beam)):
            assert [c.words for c in alone] == [c.words for c in doubled]
            for a, b in zip(alone, doubled):
                np.testing.assert_allclose(a.attention, b.attention, atol=1e-5)
    loaded.decoder.hard_inference = "expected"  # what `--hard-inference expected` sets: every member follows
    assert [member.hard_inference for member in loaded.decoder.members] == ["expected", "expected"]


def test_command_line_writes_the_ensemble_or_one_error_line(tmp_path, capsys):
    paths = []
    for index, model in enumerate(_members((1, {}), (2, {}))):
        paths.append(str(tmp_path / f"member{index}.keras"))
        model.save(paths[-1])
    out = tmp_path / "ensemble.keras"
    assert main([str(out), *paths]) == 0
    assert load_captioner(out).is_ensemble

    assert main([str(tmp_path / "other.keras"), paths[0], str(tmp_path / "missing.keras")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "missing.keras" in error
    assert not (tmp_path / "other.keras").exists()


def test_training_refuses_to_start_from_an_ensemble(tmp_path, capsys):
    from helpers import TINY_RUN

    from captioner.cli import train

    path = tmp_path / "ensemble.keras"
    save_model(make_ensemble(_members((1, {}), (2, {}))), path)
    assert train.main(TINY_RUN + ["--scst", "--init", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ensemble.keras" in error and "ensemble" in error


def test_unpacking_an_ensemble_gives_back_its_members(tmp_path, random_images, capsys):
    originals = _members((1, {}), (2, {"attention": "dot"}))
    ensemble_path = tmp_path / "ensemble.keras"
    save_model(make_ensemble(originals), ensemble_path, weights_dtype="float32")

    assert main(["--unpack", str(ensemble_path), str(tmp_path / "members")]) == 0
    unpacked = [load_captioner(tmp_path / "members" / f"member_{i}.keras") for i in range(2)]
    for original, member in zip(originals, unpacked):
        assert not member.is_ensemble and member.decoder.get_config()["attention"] == original.decoder.get_config()["attention"]
        alone, again = original.caption(random_images, beam_size=2), member.caption(random_images, beam_size=2)
        assert [c.words for c in alone] == [c.words for c in again]
        np.testing.assert_allclose(alone[0].attention, again[0].attention, atol=1e-6)

    single = tmp_path / "single.keras"
    save_model(originals[0], single)
    assert main(["--unpack", str(single), str(tmp_path / "none")]) == 1
    assert "not an ensemble" in capsys.readouterr().err


def test_an_ensemble_decodes_with_its_own_length_penalty_and_ngram_blocking_unless_told_otherwise(tmp_path, random_images, capsys):
    from captioner.numpy_model import load_numpy_captioner

    paths = []
    for index, model in enumerate(_members((1, {}), (2, {}))):
        paths.append(str(tmp_path / f"member{index}.keras"))
        model.save(paths[-1])
    out = tmp_path / "ensemble.keras"
    assert main([str(out), *paths, "--length-penalty", "0.7", "--no-repeat-ngram", "3", "--float32"]) == 0
    assert "length penalty 0.7, no repeated 3-grams" in capsys.readouterr().out
    for loaded in (load_captioner(out), load_numpy_captioner(out)):  # both ways of running a model read it
        assert loaded.length_penalty == pytest.approx(0.7) and loaded.no_repeat_ngram == 3
        own = loaded.caption(random_images, beam_size=3)
        told = loaded.caption(random_images, 3, length_penalty=0.7, no_repeat_ngram=3)
        plain = loaded.caption(random_images, 3, length_penalty=0.0, no_repeat_ngram=0)
        assert [(c.words, c.score) for c in own] == [(c.words, c.score) for c in told]
        assert [c.score for c in own] != [c.score for c in plain]  # scores divided by length ** 0.7
    unset = tmp_path / "plain.keras"
    assert main([str(unset), *paths]) == 0  # the default: neither
    assert (load_captioner(unset).length_penalty, load_captioner(unset).no_repeat_ngram) == (0.0, 0)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "bad.keras"), *paths, "--length-penalty", "-1"])
    assert exit_info.value.code == 2 and "--length-penalty must be in [0, 10)" in capsys.readouterr().err
