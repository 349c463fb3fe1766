"""Grounding: the scores of a map against boxes (known answers), the maps a model is scored on, and the command."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_captioner

from captioner.data.entities import box_coverage, normalised_boxes
from captioner.evaluation import grounding
from captioner.evaluation.grounding_scores import (
    OVERALL,
    Tally,
    centre_cell,
    chance,
    drawn_maps,
    format_table,
    mass,
    norm_map,
    overlap,
    pair_scores,
    pointing,
    score_phrase,
)

ROOT = Path(__file__).resolve().parent.parent
FLICKR8K = ROOT / "data" / "fixtures" / "flickr8k"
ENTITIES = ROOT / "data" / "fixtures" / "flickr30k_entities"
GRID = (7, 7)
SHIRT = [(51, 76, 200, 225)]  # in a 500x375 photo: x 0.1-0.4, y 0.2-0.6 of the square; cell (2, 1) lies inside


def shirt():
    return box_coverage(SHIRT, 500, 375, *GRID), normalised_boxes(SHIRT, 500, 375)


def one_hot(cell, cells=49):
    return np.eye(cells)[cell]


# ---- scores of one map --------------------------------------------------------------------------------------

def test_all_weight_in_one_cell_inside_the_box_scores_mass_1_and_pointing_1():
    coverage, corners = shirt()
    inside = 2 * 7 + 1
    assert coverage[inside] == 1.0
    assert mass(one_hot(inside), coverage) == 1.0 and pointing(one_hot(inside), corners, GRID)
    outside = 6 * 7 + 6
    assert mass(one_hot(outside), coverage) == 0.0 and not pointing(one_hot(outside), corners, GRID)


def test_a_uniform_map_scores_exactly_the_covered_share_of_the_image():
    rng = np.random.default_rng(0)
    for _ in range(20):
        xmin, ymin = rng.integers(1, 300), rng.integers(1, 200)
        boxes = [(xmin, ymin, rng.integers(xmin, 501), rng.integers(ymin, 376))]
        coverage = box_coverage(boxes, 500, 375, *GRID)
        assert mass(np.full(49, 1 / 49), coverage) == pytest.approx(chance(coverage), abs=1e-12)
    np.testing.assert_allclose(chance(shirt()[0]), 0.3 * 0.4)  # the box's share of the photo


def test_pointing_counts_the_top_cells_centre_only():
    coverage, corners = shirt()
    edge = 1 * 7 + 0  # row 1 (y 0.14-0.29), column 0 (x 0-0.14): partly covered, centre (0.07, 0.21) outside
    assert 0 < coverage[edge] < 1 and not pointing(one_hot(edge), corners, GRID)


def test_a_tie_for_the_top_scores_the_share_of_the_tied_cells_inside():
    coverage, corners = shirt()
    inside = [cell for cell in range(49) if pointing(one_hot(cell), corners, GRID)]
    assert 0 < len(inside) < 49
    assert pointing(np.full(49, 1 / 49), corners, GRID) == pytest.approx(len(inside) / 49)  # a flat map
    two = np.zeros(49)
    two[[inside[0], next(c for c in range(49) if c not in inside)]] = 0.5
    assert pointing(two, corners, GRID) == 0.5


def test_the_centre_cell_and_its_choice_on_an_even_grid():
    assert centre_cell((7, 7)) == 24
    assert centre_cell((2, 2)) == 3  # row 1, column 1: just below and right of the middle
    assert centre_cell((4, 6)) == 2 * 6 + 3


def test_the_feature_norm_map_is_proportional_to_the_norms_and_uniform_when_all_are_zero():
    features = np.zeros((2, 4, 3))
    features[0, :, 0] = [3, 0, 1, 0]
    features[0, 1, 1:] = [0, 4]
    np.testing.assert_allclose(norm_map(features), [[3 / 8, 4 / 8, 1 / 8, 0], [0.25] * 4])


def test_phrase_scores_use_the_mean_map_of_its_words_and_the_map_of_its_last():
    coverage, corners = shirt()
    maps = np.stack([one_hot(48), one_hot(15), one_hot(48), one_hot(48)])  # words 1..2: inside, then outside
    scores = score_phrase(maps, 1, 2, coverage, corners, GRID, np.full(49, 1 / 49), hard=True)
    assert scores["mass_words"] == 0.5 and scores["mass_head"] == 0.0
    assert scores["pointing_words"] == 0.5  # the mean map's top: a tie of a cell inside and one outside
    assert scores["mass_norm"] == pytest.approx(scores["chance"])
    assert scores["mass_words_drawn"] == 0.5  # one-hot maps are their own drawn maps
    np.testing.assert_array_equal(drawn_maps(np.array([[0.1, 0.7, 0.2]])), [[0, 1, 0]])
    assert "mass_words_drawn" not in score_phrase(maps, 1, 2, coverage, corners, GRID, np.full(49, 1 / 49))


def test_word_specificity_compares_each_phrases_own_map_with_the_other_phrases_map_in_its_boxes():
    shirt_coverage, _ = shirt()
    dog_coverage = box_coverage([(350, 200, 480, 360)], 500, 375, *GRID)  # bottom right, away from the shirt
    inside_shirt, inside_dog = 2 * 7 + 1, 5 * 7 + 5
    assert dog_coverage[inside_dog] == 1.0 and overlap(shirt_coverage, dog_coverage) == 0.0
    looks_at_its_own = [(("clothing",), one_hot(inside_shirt), shirt_coverage),
                        (("animals",), one_hot(inside_dog), dog_coverage)]
    assert [(types, s["specificity"], s["specificity_margin"]) for types, s in pair_scores(looks_at_its_own)] == [
        (("clothing",), 1.0, 1.0), (("animals",), 1.0, 1.0)]
    swapped = [(types, one_hot(inside_dog if types == ("clothing",) else inside_shirt), coverage)
               for types, _, coverage in looks_at_its_own]
    assert [s["specificity"] for _, s in pair_scores(swapped)] == [0.0, 0.0]
    rng = np.random.default_rng(0)
    agnostic = rng.dirichlet(np.ones(49))  # one map whatever the word: a tie in every pair
    scores = pair_scores([(t, agnostic, c) for t, _, c in looks_at_its_own])
    assert [(s["specificity"], s["specificity_margin"]) for _, s in scores] == [(0.5, 0.0), (0.5, 0.0)]
    # the same thing named twice ("a man ... the man") is not a pair: nothing to tell apart
    assert pair_scores([looks_at_its_own[0], (("people",), one_hot(inside_dog), shirt_coverage)]) == []
    assert overlap(shirt_coverage, shirt_coverage) == 1.0


def test_tally_counts_a_phrase_under_each_of_its_types_and_once_overall():
    tally = Tally()
    tally.add(("animals", "people"), {"mass_words": 1.0})
    tally.add(("people",), {"mass_words": 0.0})
    tally.add(("unusual",), {"mass_words": 0.5})
    summary = tally.summary()
    assert list(summary) == ["people", "animals", "unusual", OVERALL]
    assert summary["people"] == {"phrases": 2, "mass_words": 0.5}
    assert summary[OVERALL] == {"phrases": 3, "mass_words": 0.5}
    table = format_table(summary, "title")
    assert table.splitlines()[0] == "title" and table.splitlines()[-1].split()[:2] == [OVERALL, "3"]


# ---- the maps a model is scored on --------------------------------------------------------------------------

def caption_inputs(captioner, count=3, length=6, seed=0):
    rng = np.random.default_rng(seed)
    locations, size = captioner.feature_shape
    features = rng.normal(size=(count, locations, size)).astype(np.float32)
    inputs = rng.integers(4, len(captioner.vocabulary), size=(count, length)).astype(np.int32)
    inputs[:, 0] = captioner.vocabulary.start_id
    return features, inputs


def test_soft_maps_are_the_decoders_teacher_forcing_maps(small_captioner):
    features, inputs = caption_inputs(small_captioner)
    decoder = small_captioner.decoder
    images = np.array([2, 0, 2])  # captions of images 2, 0 and 2 of the prepared ones
    maps = grounding.teacher_forced_maps(decoder, decoder.prepare(features), inputs, images)
    np.testing.assert_allclose(maps, np.asarray(decoder(features[images], inputs)[1]), atol=1e-6)


def test_an_ensemble_is_scored_on_its_members_mean_map():
    from captioner.model.captioner import make_ensemble

    ensemble = make_ensemble([make_captioner(seed=0), make_captioner(seed=0)])
    ensemble.decoder.members[1].set_weights(make_captioner(seed=1).decoder.get_weights())  # two different members
    features, inputs = caption_inputs(ensemble)
    members = [np.asarray(member(features, inputs)[1]) for member in ensemble.decoder.members]
    assert np.abs(members[0] - members[1]).max() > 1e-4
    mean = np.mean(members, axis=0)
    np.testing.assert_allclose(np.asarray(ensemble.decoder(features, inputs)[1]), mean, atol=1e-6)
    maps = grounding.teacher_forced_maps(ensemble.decoder, ensemble.decoder.prepare(features), inputs, np.arange(3))
    np.testing.assert_allclose(maps, mean, atol=1e-6)


def test_a_hard_attention_model_is_scored_on_the_maps_it_draws_when_it_captions():
    captioner = make_captioner(hard_attention=True)
    features, _ = caption_inputs(captioner, count=4)  # random features: a random encoder's are all about 0
    decoder = captioner.decoder
    for image, caption in enumerate(captioner.decode_features(features)):  # greedy, with the argmax cell's feature
        ids = grounding.encode_words(caption.words, captioner.vocabulary, captioner.max_length)
        inputs = np.array([ids[:-1]], dtype=np.int32)
        prepared = decoder.prepare(features[image : image + 1])
        maps = grounding.teacher_forced_maps(decoder, prepared, inputs, np.array([0]))
        drawn = caption.attention.reshape(len(caption.attention), -1)
        steps = min(maps.shape[1], len(drawn))
        np.testing.assert_allclose(maps[0, :steps], drawn[:steps], atol=1e-5)  # the call's maps differ by ~1e-2


# ---- the command --------------------------------------------------------------------------------------------

def run_grounding(tmp_path, model, split="val", entities=ENTITIES):
    from captioner.model.saving import save_model

    path = tmp_path / f"{model.decoder.attention.score}.keras"
    save_model(model, path)
    out = tmp_path / f"out-{path.stem}-{split}"
    code = grounding.main(["--model", str(path), "--dataset", "flickr8k", "--data-dir", str(FLICKR8K), "--split", split,
                           "--entities", str(entities), "--feature-cache", str(tmp_path / "cache"), "--out", str(out)])
    report = json.loads((out / "grounding.json").read_text()) if (out / "grounding.json").exists() else None
    return code, report


def test_the_command_scores_the_fixture_and_writes_its_report(tmp_path, capsys):
    code, report = run_grounding(tmp_path, make_captioner())
    assert code == 0
    # green: "A green square" and "a green picture" name the middle box (a quarter of the image); "green" is the scene
    assert report["images_scored"] == 1 and report["sentences"] == 3 and report["phrases_scored"] == 2
    assert report["phrases_skipped"] == {"no_box": 1, "too_large": 0, "past_max_length": 0}
    assert report["types"]["other"]["chance"] == 0.25 and report["types"][OVERALL]["phrases"] == 2
    assert "overall" in capsys.readouterr().out


def test_a_model_without_attention_scores_exactly_chance(tmp_path):
    code, report = run_grounding(tmp_path, make_captioner(attention="none"), split="train")  # red: several types
    assert code == 0 and report["phrases_scored"] >= 4
    for scores in report["types"].values():
        assert scores["mass_words"] == pytest.approx(scores["chance"], abs=1e-7)
        assert scores["mass_head"] == pytest.approx(scores["chance"], abs=1e-7)
    # the same (uniform) map for every word: no pair of phrases is told apart
    assert report["word_specificity"][OVERALL]["pairs"] >= 1
    for scores in report["word_specificity"].values():
        assert scores["specificity"] == 0.5 and scores["specificity_margin"] == pytest.approx(0.0, abs=1e-7)


def test_a_split_without_annotations_or_a_wrong_folder_fails_with_one_line(tmp_path, capsys):
    model = make_captioner()
    code, report = run_grounding(tmp_path, model, split="test")  # blue.jpg has no annotation files
    assert code == 1 and report is None
    assert "none of the 1 images of the test split" in capsys.readouterr().err
    code, _ = run_grounding(tmp_path, model, entities=tmp_path)
    assert code == 2 and "no Sentences/ and Annotations/ folders" in capsys.readouterr().err


def test_grounding_is_a_captioner_command():
    from captioner.cli import COMMANDS

    assert COMMANDS["grounding"][0] == "captioner.evaluation.grounding"


def test_synthetic_scenes_become_annotations_whose_boxes_hold_each_shape():
    from captioner.data import synthetic
    from captioner.data.entity_matching import scene_annotations

    scenes = synthetic.make_scenes(6, seed=3, image_size=96)
    for scene, annotation in zip(scenes, scene_annotations(scenes)):
        assert (annotation.width, annotation.height) == (96, 96)
        for chain, shape in enumerate(scene.objects, start=1):
            (x0, y0, x1, y1), = annotation.boxes[chain]
            ys, xs = np.nonzero(shape.mask)  # 0-based pixels; the box is 1-based and inclusive
            assert x0 <= xs.min() + 1 and xs.max() + 1 <= x1 and y0 <= ys.min() + 1 and ys.max() + 1 <= y1
            assert x1 - x0 <= 2 * shape.radius + 2 and y1 - y0 <= 2 * shape.radius + 2  # and it is tight
        for sentence in annotation.sentences:
            named = {phrase.chain for phrase in sentence.phrases}
            assert named == set(range(1, len(scene.objects) + 1))  # every caption names every shape
            for phrase in sentence.phrases:
                shape = scene.objects[phrase.chain - 1]
                assert phrase.types == (shape.shape,)
                assert sentence.words[phrase.first : phrase.last + 1] == tuple(shape.phrase)
                assert sentence.words[phrase.last] == shape.shape  # the head noun


def test_the_command_scores_synthetic_scenes_by_the_same_code(tmp_path):
    model = make_captioner(attention="none")  # no attention: every score must equal chance, as for photos
    model.save(tmp_path / "model.keras")
    out = tmp_path / "out"
    code = grounding.main(["--model", str(tmp_path / "model.keras"), "--dataset", "synthetic", "--split", "test",
                           "--limit", "8", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "grounding.json").read_text())
    assert report["images_scored"] == 8 and report["phrases_scored"] >= 8
    assert set(report["types"]) - {OVERALL} <= set(synthetic_shapes())
    for scores in report["types"].values():
        assert scores["mass_head"] == pytest.approx(scores["chance"], abs=1e-7)
        assert 0 < scores["chance"] < 0.5


def synthetic_shapes():
    from captioner.data.synthetic import SHAPES

    return SHAPES
