import numpy as np
import pytest
from PIL import Image

from captioner.visualize.overlay import MAX_COLUMNS, draw_overlay, draw_word_overlays, spotlight, upsample_attention


def test_upsampled_map_peaks_where_the_attention_is():
    attention = np.zeros((7, 7))
    attention[1, 5] = 1.0
    mask = upsample_attention(attention, 224, 224)
    assert mask.shape == (224, 224) and mask.max() == pytest.approx(1.0)
    row, column = np.unravel_index(mask.argmax(), mask.shape)
    assert row // 32 == 1 and column // 32 == 5  # inside the cell that had the weight


def test_spotlight_keeps_what_was_looked_at_bright():
    image = np.full((10, 10, 3), 200, np.uint8)
    mask = np.zeros((10, 10))
    mask[:5] = 1.0
    lit = spotlight(image, mask)
    assert lit[0, 0, 0] == 200 and lit[9, 9, 0] < 100


def _size(path):
    return Image.open(path).size


@pytest.mark.parametrize("words", [1, 4, 12])
def test_one_panel_per_word_wrapping_into_rows(tmp_path, words):
    image = np.zeros((64, 96, 3), np.uint8)
    attention = np.random.default_rng(0).random((words + 1, 3, 3))
    one_row = draw_overlay(image, ["w"], attention, tmp_path / "one_row.png")
    path = draw_overlay(image, [f"w{i}" for i in range(words)], attention, tmp_path / "overlay.png", style="heatmap")
    columns = min(words + 1, MAX_COLUMNS)
    rows = -(-(words + 1) // columns)
    assert _size(path)[0] == round(columns * 220)
    assert _size(path)[1] == pytest.approx(rows * _size(one_row)[1], abs=2)


def test_panels_keep_the_image_aspect_ratio(tmp_path):
    attention = np.random.default_rng(1).random((3, 7, 7))
    wide = draw_overlay(np.zeros((60, 120, 3), np.uint8), ["a", "b"], attention, tmp_path / "wide.png")
    tall = draw_overlay(np.zeros((120, 60, 3), np.uint8), ["a", "b"], attention, tmp_path / "tall.png")
    assert _size(tall)[1] > 1.8 * _size(wide)[1] and _size(tall)[0] == _size(wide)[0]


def test_one_file_per_word_named_by_position_and_word(tmp_path):
    attention = np.random.default_rng(2).random((4, 5, 5))
    paths = draw_word_overlays(np.zeros((50, 50, 3), np.uint8), ["a", "dog", "a/b"], attention, tmp_path, "img")
    assert [p.name for p in paths] == ["img_00_a.png", "img_01_dog.png", "img_02_a_b.png"]
    assert all(p.exists() for p in paths)


def test_colormap_and_alpha_change_the_heatmap(tmp_path):
    image = np.full((40, 40, 3), 128, np.uint8)
    attention = np.random.default_rng(3).random((2, 4, 4))
    pixels = [np.asarray(Image.open(draw_overlay(image, ["a"], attention, tmp_path / f"{i}.png", style="heatmap",
                                                 colormap=cmap, alpha=alpha)))
              for i, (cmap, alpha) in enumerate([("inferno", 0.5), ("viridis", 0.5), ("inferno", 0.9)])]
    assert not np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[0], pixels[2])


def test_hard_attention_outlines_the_chosen_cell(tmp_path):
    image = np.full((70, 70, 3), 128, np.uint8)
    attention = np.full((2, 7, 7), 1 / 49)
    plain = np.asarray(Image.open(draw_overlay(image, ["a"], attention, tmp_path / "plain.png")))[..., :3]
    marked = np.asarray(Image.open(draw_overlay(image, ["a"], attention, tmp_path / "marked.png",
                                                chosen_cells=[(2, 3)])))[..., :3]
    cyan = (marked[..., 0] < 80) & (marked[..., 1] > 180) & (marked[..., 2] > 200)
    assert cyan.sum() > 20 and not ((plain[..., 0] < 80) & (plain[..., 2] > 200)).any()


def test_too_few_maps_is_refused(tmp_path):
    with pytest.raises(ValueError, match="attention maps"):
        draw_overlay(np.zeros((8, 8, 3), np.uint8), ["a", "b", "c"], np.ones((2, 2, 2)), tmp_path / "x.png")


def test_unknown_style_is_refused(tmp_path):
    with pytest.raises(ValueError, match="style"):
        draw_overlay(np.zeros((8, 8, 3), np.uint8), ["a"], np.ones((2, 2, 2)), tmp_path / "x.png", style="neon")


def test_comparison_has_a_row_per_model_and_a_column_per_word_of_the_longest_caption(tmp_path):
    from captioner.visualize.overlay import PANEL_INCHES, draw_comparison

    image = np.full((40, 40, 3), 200, np.uint8)
    attention = np.random.default_rng(0).random((5, 3, 3))
    path = draw_comparison(image, [("soft", ["a", "dog"], attention, None),
                                   ("hard", ["a", "dog", "runs"], attention, [(0, 0), (1, 2), (2, 2)])],
                           tmp_path / "compare.png")
    width, height = Image.open(path).size
    assert width == round(4 * PANEL_INCHES * 100)  # the image, then three words
    assert height > 2 * PANEL_INCHES * 100 * 0.9  # two rows
    with pytest.raises(ValueError, match="attention maps"):
        draw_comparison(image, [("soft", ["a"] * 6, attention, None)], tmp_path / "bad.png")
