import numpy as np

from captioner.data import synthetic


def test_same_seed_same_scenes_and_different_seed_different_scenes():
    first, again, other = (synthetic.make_scenes(5, seed=s, image_size=64) for s in (3, 3, 4))
    assert all(np.array_equal(a.image, b.image) and a.captions == b.captions for a, b in zip(first, again))
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(first, other))


def test_objects_are_inside_the_image_and_do_not_overlap():
    for scene in synthetic.make_scenes(50, seed=0, image_size=128):
        assert 1 <= len(scene.objects) <= 3
        total = np.zeros(scene.image.shape[:2], dtype=int)
        for obj in scene.objects:
            assert obj.mask.any()
            total += obj.mask
        assert total.max() == 1


def test_object_pixels_have_the_object_colour():
    scene = synthetic.make_scenes(1, seed=1, image_size=128)[0]
    for obj in scene.objects:
        mean = scene.image[obj.mask].mean(axis=0)
        assert np.abs(mean - np.array(synthetic.COLOURS[obj.colour])).max() < 30


def test_captions_name_every_object_and_words_point_at_them():
    for scene in synthetic.make_scenes(50, seed=2, image_size=128):
        assert len(scene.captions) >= 2
        for caption, word_objects in zip(scene.captions, scene.word_objects):
            words = caption.split()
            assert len(words) == len(word_objects)
            named = {index for index in word_objects if index >= 0}
            assert named == set(range(len(scene.objects)))
            for word, index in zip(words, word_objects):
                if index >= 0:
                    assert word in scene.objects[index].phrase


def test_relations_match_positions():
    checked = 0
    for scene in synthetic.make_scenes(100, seed=3, image_size=128):
        if len(scene.objects) != 2:
            continue
        words, owners = scene.captions[0].split(), scene.word_objects[0]
        first, second = owners[1], owners[-1]
        (x1, y1), (x2, y2) = scene.objects[first].centre, scene.objects[second].centre
        if "above" in words:
            assert y1 < y2
        elif "left" in words:
            assert x1 < x2
        else:
            raise AssertionError(f"unexpected first template: {scene.captions[0]}")
        checked += 1
    assert checked > 10


def test_three_objects_are_listed_left_to_right():
    for scene in synthetic.make_scenes(60, seed=4, image_size=128):
        if len(scene.objects) == 3:
            order = list(dict.fromkeys(i for i in scene.word_objects[0] if i >= 0))
            xs = [scene.objects[i].centre[0] for i in order]
            assert xs == sorted(xs)


def test_phrases_in_caption():
    words = "a small red circle above a large blue square".split()
    assert synthetic.phrases_in_caption(words) == [(3, "red", "circle"), (8, "blue", "square")]


def test_background_is_grey_with_a_fine_grain_of_the_stated_spread():
    scene = synthetic.make_scenes(1, seed=5, image_size=128)[0]
    outside = ~np.any([obj.mask for obj in scene.objects], axis=0)
    red, green, blue = (scene.image[..., channel][outside] for channel in range(3))
    assert np.array_equal(red, green) and np.array_equal(green, blue)
    # Neighbouring pixels share the smooth part; their difference is the grain's alone (std * sqrt(2)).
    grey = scene.image[..., 0].astype(float)
    both = outside[:, 1:] & outside[:, :-1]
    grain = np.diff(grey, axis=1)[both].std() / np.sqrt(2)
    assert 4.5 < grain < 7.5
