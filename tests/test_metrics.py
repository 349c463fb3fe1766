import numpy as np

from captioner.data import synthetic
from captioner.evaluation import metrics
from captioner.model.captioner import Caption


def test_attention_mass_inside_spreads_each_cell_over_its_pixels():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # exactly the top-left cell of a 2x2 grid
    assert metrics.attention_mass_inside(np.array([[1.0, 0], [0, 0]]), mask) == 1.0
    assert metrics.attention_mass_inside(np.array([[0, 1.0], [0, 0]]), mask) == 0.0
    np.testing.assert_allclose(metrics.attention_mass_inside(np.full((2, 2), 0.25), mask), 0.25)
    mask[:1, :2] = False  # half the cell
    np.testing.assert_allclose(metrics.attention_mass_inside(np.array([[1.0, 0], [0, 0]]), mask), 0.5)


def test_exact_match_and_bleu():
    references = [["a red circle", "there is a red circle"], ["a blue square"]]
    assert metrics.exact_match([["there", "is", "a", "red", "circle"], ["a", "blue", "circle"]], references) == 0.5
    perfect = metrics.bleu_scores([["a", "red", "circle"], ["a", "blue", "square"]], references)
    assert perfect["bleu1"] == 1.0 and perfect["bleu3"] == 1.0
    worse = metrics.bleu_scores([["a", "red", "square"], ["a", "blue", "circle"]], references)
    assert worse["bleu1"] < 1.0


def _looking_at(scene, caption_words, grid, on_object: bool):
    """Attention maps that put all weight on the named object's centre cell (or the opposite corner)."""
    rows, columns = grid
    height, width = scene.image.shape[:2]
    maps = []
    for word in caption_words:
        attention = np.zeros(grid)
        owner = [o for o in scene.objects if word in (o.colour, o.shape)]
        if owner and on_object:
            x, y = owner[0].centre
            attention[int(y * rows / height), int(x * columns / width)] = 1.0
        else:
            attention[-1, -1] = 1.0
        maps.append(attention)
    return np.array(maps)


def test_grounding_is_high_when_attention_sits_on_the_object_and_low_otherwise():
    scenes = [s for s in synthetic.make_scenes(20, seed=7, image_size=112) if len(s.objects) == 1]
    for on_object, check in ((True, lambda r: r > 3), (False, lambda r: r < 1)):
        captions = []
        for scene in scenes:
            words = scene.captions[0].split()
            captions.append(Caption(words, _looking_at(scene, words, (7, 7), on_object)))
        result = metrics.attention_grounding(captions, scenes)
        assert result["grounded_words"] == 2 * len(scenes)
        assert check(result["grounding_ratio"]), result
