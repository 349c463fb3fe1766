import numpy as np
import pytest
from PIL import Image

from captioner.overlay import MAX_COLUMNS, draw_overlay, spotlight, upsample_attention


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


@pytest.mark.parametrize("words", [1, 4, 12])
def test_one_panel_per_word_wrapping_into_rows(tmp_path, words):
    image = np.zeros((64, 96, 3), np.uint8)
    attention = np.random.default_rng(0).random((words + 1, 3, 3))
    path = tmp_path / "overlay.png"
    draw_overlay(image, [f"w{i}" for i in range(words)], attention, path, style="heatmap")
    width, height = Image.open(path).size
    columns = min(words + 1, MAX_COLUMNS)
    rows = -(-(words + 1) // columns)
    assert width == round(columns * 220) and height == round(rows * 242)


def test_unknown_style_is_refused(tmp_path):
    with pytest.raises(ValueError, match="style"):
        draw_overlay(np.zeros((8, 8, 3), np.uint8), ["a"], np.ones((2, 2, 2)), tmp_path / "x.png", style="neon")
