"""Seeing a map against the human boxes: `captioner caption --entities DIR` draws, for each word, the annotated
boxes of the phrases it heads, on the overlays and in the HTML report."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import make_captioner
from PIL import Image

from captioner.cli import caption as predict
from captioner.data.entities import read_annotation
from captioner.data.entity_matching import boxes_of_words
from captioner.visualize.overlay import draw_overlay

ROOT = Path(__file__).resolve().parent.parent
ENTITIES = ROOT / "data" / "fixtures" / "flickr30k_entities"
IMAGES = ROOT / "data" / "fixtures" / "flickr8k" / "Flicker8k_Dataset"


def test_a_word_gets_the_boxes_of_the_phrases_it_heads():
    annotation = read_annotation(ENTITIES, "green")  # "[/EN#1/other A green square]", "[/EN#2/scene green] ..."
    a, green, square, picture = boxes_of_words(annotation, ["a", "green", "square", "picture"])
    assert a.shape == (0, 4)  # heads nothing
    assert green.shape == (0, 4)  # heads the scene phrase, which has no box
    assert square.shape == (1, 4) and np.array_equal(square, picture)  # both head chain 1's phrases
    x0, y0, x1, y1 = square[0]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


def green_pixels_mask(path) -> np.ndarray:
    """Where the overlay is the boxes' green (#69f0ae, give or take antialiasing)."""
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return (pixels[..., 1] > 200) & (pixels[..., 0] < 150) & (pixels[..., 2] > 120) & (pixels[..., 2] < 210)


def test_overlays_draw_the_boxes_on_the_panel_of_their_word(tmp_path):
    image = np.zeros((60, 80, 3), np.uint8)
    attention = np.full((3, 2, 2), 0.25)
    boxes = [np.zeros((0, 4)), np.array([[0.25, 0.25, 0.75, 0.75]]), np.zeros((0, 4))]
    plain = draw_overlay(image, ["a", "dog", "runs"], attention, tmp_path / "plain.png")
    boxed = draw_overlay(image, ["a", "dog", "runs"], attention, tmp_path / "boxed.png", boxes=boxes)
    assert not green_pixels_mask(plain).any() and green_pixels_mask(boxed).sum() > 20
    # the outline is in the second word's panel (the third of four: input, a, dog, runs)
    columns = np.flatnonzero(green_pixels_mask(boxed).any(axis=0))
    width = Image.open(boxed).width
    assert width / 2 <= columns.min() and columns.max() < 3 * width / 4


def test_attach_boxes_matches_the_written_caption_and_skips_images_without_annotations():
    from captioner.model.captioner import Caption

    written = predict.Result(str(IMAGES / "green.jpg"), Caption(["a", "green", "square"], np.zeros((4, 2, 2))))
    assert predict.attach_boxes(written, ENTITIES)
    assert [len(boxes) for boxes in written.boxes] == [0, 0, 1]
    unannotated = predict.Result(str(IMAGES / "blue.jpg"), Caption(["a", "square"], np.zeros((3, 2, 2))))
    assert not predict.attach_boxes(unannotated, ENTITIES) and unannotated.boxes is None


def test_the_command_puts_the_boxes_into_the_report_and_says_for_how_many_images(tmp_path, capsys):
    model = make_captioner()
    model.save(tmp_path / "model.keras")
    page = tmp_path / "report.html"
    status = predict.main([str(IMAGES / "green.jpg"), str(IMAGES / "blue.jpg"), "--model", str(tmp_path / "model.keras"),
                           "--html", str(page), "--entities", str(ENTITIES)])
    assert status == 0
    assert "annotated boxes drawn for 1 of 2 images" in capsys.readouterr().err
    data = json.loads(re.search(r'<script id="report-data" type="application/json">(.*?)</script>',
                                page.read_text(), re.S).group(1).replace("<\\/", "</"))
    green, blue = data
    assert len(green["boxes"]) == len(green["words"]) and blue["boxes"] is None


@pytest.mark.parametrize("flags, message", [
    (["--html", "x.html", "--entities", "nowhere"], "no Sentences/ and Annotations/ folders"),
])
def test_a_wrong_annotation_folder_is_one_line(flags, message, tmp_path, capsys):
    assert predict.main([str(IMAGES / "green.jpg"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_entities_without_a_drawing_is_refused(capsys):
    with pytest.raises(SystemExit) as exit:
        predict.main([str(IMAGES / "green.jpg"), "--entities", str(ENTITIES)])
    assert exit.value.code == 2 and "--overlay-dir or --html" in capsys.readouterr().err
