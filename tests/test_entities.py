"""The Flickr30k Entities reader, box coverage on the encoder's grid, and the attention targets built from them."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captioner.data.datasets import Split
from captioner.data.entities import (
    attention_targets,
    box_coverage,
    image_id,
    parse_sentence,
    read_annotation,
    read_boxes,
    read_sentences,
)
from captioner.data.readers import ReaderError
from captioner.data.vocabulary import Vocabulary, tokenize

ROOT = Path(__file__).resolve().parent.parent
ENTITIES = ROOT / "data" / "fixtures" / "flickr30k_entities"
SHARED_ENTITIES = ROOT.parent / "shared" / "data" / "flickr30k_entities"
LEFT_HALF = (1, 1, 250, 375)  # chains 1 and 6 of the red fixture, a 500x375 photo


def phrases_of(sentence):
    return {(p.chain, p.types, " ".join(sentence.words[p.first : p.last + 1])) for p in sentence.phrases}


# ---- Sentences ----------------------------------------------------------------------------------------------

def test_sentence_words_are_the_tokenizers_and_punctuation_takes_no_position():
    sentence = parse_sentence(
        "[/EN#1/people A man] in [/EN#2/clothing a red , striped shirt] throws [/EN#3/other a ball] .")
    assert sentence.text == "A man in a red , striped shirt throws a ball ."
    assert list(sentence.words) == tokenize(sentence.text)
    assert [(p.chain, p.first, p.last) for p in sentence.phrases] == [(1, 0, 1), (2, 3, 6), (3, 8, 9)]


def test_each_case_of_the_fixture_reads_as_annotated():
    first, second, third, fourth = read_sentences(ENTITIES / "Sentences" / "red.txt")
    assert phrases_of(second) == {(1, ("people",), "the dog owner"), (0, ("notvisual",), "someone"),
                                  (5, ("scene",), "the park")}  # punctuation before a phrase shifts nothing
    assert phrases_of(third) == {(4, ("animals", "people"), "two dogs"), (6, ("people",), "their trainer"),
                                 (7, ("bodyparts",), "the man s hand")}
    assert [(p.first, p.last) for p in fourth.phrases] == [(0, 1), (3, 5)]
    annotation = read_annotation(ENTITIES, "red")
    assert (annotation.width, annotation.height) == (500, 375)
    by_chain = {p.chain: annotation.boxes_of(p) for s in annotation.sentences for p in s.phrases}
    assert by_chain[1] == by_chain[6] == (LEFT_HALF,)  # one object, two <name>s
    assert len(by_chain[4]) == 2  # several boxes per chain
    assert by_chain[3] == by_chain[5] == by_chain[8] == by_chain[0] == ()  # nobndbox, scene, no object, notvisual
    assert annotation.scene == {5} and annotation.no_box == {3}
    assert len(first.phrases) == 4


def test_phrase_of_punctuation_only_is_dropped_and_a_word_glued_to_a_bracket_stays_one_word():
    assert parse_sentence("a dog [/EN#1/other , ] runs").phrases == ()
    sentence = parse_sentence("[/EN#1/people the man]'s dog")
    assert sentence.words == ("the", "man's", "dog") and (sentence.phrases[0].first, sentence.phrases[0].last) == (0, 1)


@pytest.mark.parametrize("line, problem", [
    ("[/EN#1/people A man in the park .", "never closed"),
    ("A man ] in the park", "closes no phrase"),
    ("[/EN#x/people A man] runs", r"must read \[/EN#"),
    ("[/EN#1 A man] runs", r"must read \[/EN#"),
    ("[/EN#1/people A [/EN#2/other big] man] runs", "no nesting"),
])
def test_malformed_markup_names_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "Sentences" / "1.txt"
    path.parent.mkdir()
    path.write_text(f"[/EN#1/people A dog] runs .\n{line}\n")
    with pytest.raises(ReaderError, match=problem) as error:
        read_sentences(path)
    message = str(error.value)
    assert message.startswith(f"{path}:2: column ") and "\n" not in message


# ---- Annotations --------------------------------------------------------------------------------------------

def write_xml(tmp_path, objects: str, size="<size><width>10</width><height>10</height></size>") -> Path:
    path = tmp_path / "1.xml"
    path.write_text(f"<annotation>\n{size}\n{objects}\n</annotation>\n")
    return path


@pytest.mark.parametrize("objects, line, problem", [
    ("<object><name>1</name>\n<bndbox><xmin>1</xmin></bndbox>", 5, "malformed XML"),  # <object> never closed
    ("<object><name>1</name><bndbox>\n<xmin>ten</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>",
     4, "whole number"),
    ("<object>\n<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>", 3, "no <name>"),
    ("<object><name>1</name>\n<bndbox><xmin>5</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>",
     4, "xmin > xmax"),
    ("<object><name>1</name>\n<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax></bndbox></object>", 4, "no <ymax>"),
    ("\n<object><name>a</name><scene>1</scene></object>", 4, "chain id"),
    ("\n<object><name>1</name></object>", 4, "neither <bndbox>"),
])
def test_malformed_xml_names_the_file_and_line(tmp_path, objects, line, problem):
    path = write_xml(tmp_path, objects)
    with pytest.raises(ReaderError, match=problem) as error:
        read_boxes(path)
    assert str(error.value).startswith(f"{path}:{line}: ") and "\n" not in str(error.value)


def test_xml_without_a_size_is_refused(tmp_path):
    with pytest.raises(ReaderError, match="has no <size>"):
        read_boxes(write_xml(tmp_path, "", size=""))


def test_images_without_annotation_files_read_as_none():
    assert read_annotation(ENTITIES, "blue") is None
    assert image_id("/data/1000268201_693b08cb0e.jpg") == "1000268201" and image_id("red.jpg") == "red"


# ---- box coverage -------------------------------------------------------------------------------------------

def rasterised_coverage(boxes, width, height, rows, cols):
    """An independent answer: paint the boxes' pixels, stretch the photo `rows` x `cols` times so every cell is
    exactly height x width painted pixels, and average each cell."""
    mask = np.zeros((height, width), dtype=bool)
    for xmin, ymin, xmax, ymax in boxes:
        mask[ymin - 1 : ymax, xmin - 1 : xmax] = True  # 1-based, inclusive
    stretched = np.repeat(np.repeat(mask, rows, axis=0), cols, axis=1)  # (height * rows, width * cols)
    return stretched.reshape(rows, height, cols, width).mean(axis=(1, 3)).ravel()


def test_a_box_of_a_500x375_photo_lands_where_it_should_on_the_224x224_grid():
    # the shirt, x 51-200 and y 76-225: 0.1-0.4 of the squeezed width and 0.2-0.6 of its height; 7x7 cells of 1/7
    coverage = box_coverage([(51, 76, 200, 225)], 500, 375, 7, 7).reshape(7, 7)
    down = [0, (2 / 7 - 0.2) * 7, 1, 1, (0.6 - 4 / 7) * 7, 0, 0]  # share of each row's height inside the box
    across = [(1 / 7 - 0.1) * 7, 1, (0.4 - 2 / 7) * 7, 0, 0, 0, 0]  # of each column's width
    np.testing.assert_allclose(coverage, np.outer(down, across), atol=1e-12)


def test_coverage_counts_the_union_of_overlapping_boxes_once_and_is_row_major():
    dogs = [(251, 188, 400, 375), (351, 188, 500, 375)]  # the red fixture's chain 4: x 0.5-0.8 and 0.7-1.0
    coverage = box_coverage(dogs, 500, 375, 2, 2)
    assert coverage[3] == pytest.approx(1.0, abs=1e-9)  # bottom right (row 1, column 1)
    assert coverage[2] == coverage[0] == 0  # left column
    # top right: half a pixel row of the 187.5 in a cell, across the union's whole width (a sum would say 1.2x)
    assert coverage[1] == pytest.approx(0.5 / 187.5, abs=1e-9)
    np.testing.assert_allclose(box_coverage([LEFT_HALF], 500, 375, 2, 2), [1, 0, 1, 0])
    assert not box_coverage([], 500, 375, 3, 3).any()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_coverage_matches_painted_pixels(data):
    width, height = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    rows, cols = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))

    def box():
        xmin, ymin = data.draw(st.integers(1, width)), data.draw(st.integers(1, height))
        return xmin, ymin, data.draw(st.integers(xmin, width)), data.draw(st.integers(ymin, height))

    boxes = [box() for _ in range(data.draw(st.integers(1, 4)))]
    np.testing.assert_allclose(box_coverage(boxes, width, height, rows, cols),
                               rasterised_coverage(boxes, width, height, rows, cols), atol=1e-9)


# ---- attention targets --------------------------------------------------------------------------------------

RED_CAPTIONS = [
    "A man in a red, striped shirt throws a ball to two dogs.",  # sentence 1; "red," glued as Flickr8k might
    "A caption that the annotations never saw",
    "the dog-owner, smiling, waves at someone in the park",  # sentence 2
    "Two dogs and their trainer play; the man 's hand is up",  # sentence 3
    "The sky above the whole picture",  # sentence 4: no box, then boxes over the whole photo
]


def red_split():
    return Split("train", [RED_CAPTIONS, ["a blue square"]], paths=[Path("x/red_0f1e.jpg"), Path("x/blue.jpg")])


def expected_map(boxes, grid=(3, 3)):
    coverage = box_coverage(boxes, 500, 375, *grid)
    return coverage / coverage.sum()


def supervised_rows(targets) -> list[int]:
    return list(np.flatnonzero(targets.astype(np.float32).sum(-1)))


def test_attention_targets_put_each_phrase_map_on_the_rows_of_its_words():
    split = red_split()
    vocabulary = Vocabulary.build(RED_CAPTIONS)
    targets, summary = attention_targets(split, ENTITIES, vocabulary, 20, (3, 3))
    assert targets.shape == (6, 21, 9) and targets.dtype == np.float16
    # a(0) man(1) in a(3) red striped shirt(6) throws a ball to two(11) dogs(12): the ball has no box
    assert supervised_rows(targets[0]) == [0, 1, 3, 4, 5, 6, 11, 12]
    np.testing.assert_allclose(targets[0, 1], expected_map([LEFT_HALF]), atol=1e-3)
    np.testing.assert_allclose(targets[0, 5], expected_map([(51, 76, 200, 225)]), atol=1e-3)
    np.testing.assert_allclose(targets[0, 12], expected_map([(251, 188, 400, 375), (351, 188, 500, 375)]), atol=1e-3)
    # the dog owner(0-2) after no punctuation shift; someone (notvisual) and the park (scene) stay zero
    assert supervised_rows(targets[2]) == [0, 1, 2]
    # two dogs(0, 1) and their trainer(3, 4) play the(6) man s hand(9): the trainer shares the man's box
    assert supervised_rows(targets[3]) == [0, 1, 3, 4, 6, 7, 8, 9]
    np.testing.assert_allclose(targets[3, 4], expected_map([LEFT_HALF]), atol=1e-3)
    for unmatched_or_unboxed in (1, 4, 5):
        assert not targets[unmatched_or_unboxed].any()
    np.testing.assert_allclose(targets.astype(np.float32).sum(-1)[targets.astype(np.float32).sum(-1) > 0], 1, atol=2e-3)
    assert summary == {"images": 2, "images_annotated": 1, "images_missing": 1, "captions": 6,
                       "captions_matched": 4, "phrases_supervised": 7, "words_supervised": 19, "phrases_too_large": 1}


def test_attention_targets_follow_the_captions_encoding_when_it_cuts_them():
    vocabulary = Vocabulary.build(RED_CAPTIONS)
    targets, _ = attention_targets(red_split(), ENTITIES, vocabulary, 4, (3, 3))
    assert targets.shape == (6, 5, 9)
    assert targets.shape[1] == vocabulary.encode_batch(RED_CAPTIONS, 4).shape[1] - 1  # one row per decoder step
    assert supervised_rows(targets[0]) == [0, 1, 3]  # "a man in a" kept: the shirt's first word only


def test_attention_targets_refuse_a_folder_without_the_release_layout(tmp_path):
    with pytest.raises(ReaderError, match="no Sentences/ and Annotations/"):
        attention_targets(red_split(), tmp_path, Vocabulary.build(RED_CAPTIONS), 20, (3, 3))


@pytest.mark.skipif(not SHARED_ENTITIES.is_dir(), reason="../shared/data/flickr30k_entities not present")
def test_the_real_release_reads_and_its_phrases_fit_their_sentences():
    files = sorted((SHARED_ENTITIES / "Sentences").glob("*.txt"))[:300]
    for path in files:
        annotation = read_annotation(SHARED_ENTITIES, path.stem)
        for sentence in annotation.sentences:
            assert sentence.words == tuple(tokenize(sentence.text))
            assert all(0 <= p.first <= p.last < len(sentence.words) for p in sentence.phrases)
