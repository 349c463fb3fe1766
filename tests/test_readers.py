"""Every reader on its fixture (data/fixtures), then malformed and partial variants of it."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from captioner.data.readers import ReaderError, read_dataset

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "fixtures"


def _copy(name, tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def _by_image(examples):
    return {e.image.name: e for e in examples}


@pytest.mark.parametrize("dataset, folder", [
    ("flickr8k", "flickr8k"), ("karpathy", "karpathy"), ("flickr30k", "karpathy"), ("csv", "csv"),
])
def test_reader_returns_images_captions_and_official_splits(dataset, folder):
    examples = _by_image(read_dataset(dataset, FIXTURES / folder))
    assert len(examples) == 3  # the listed-but-missing image is skipped
    red, green, blue = (next(e for n, e in examples.items() if n.startswith(c)) for c in ("red", "green", "blue"))
    assert (red.split, green.split, blue.split) == ("train", "val", "test")
    assert len(red.captions) == 3 and red.captions[0] == "A red square."
    assert all(e.image.is_file() for e in examples.values())


def test_missing_images_are_summarised_in_one_line(caplog):
    with caplog.at_level(logging.WARNING, logger="captioner"):
        read_dataset("flickr8k", FIXTURES / "flickr8k")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "1 of 4" in lines[0] and "missing.jpg" in lines[0]


def test_kaggle_variant_keeps_commas_and_splits_without_split_files():
    examples = _by_image(read_dataset("flickr8k", FIXTURES / "flickr8k_kaggle"))
    assert set(examples) == {"red.jpg", "green.jpg", "blue.jpg"}
    assert "Something red, all over" in examples["red.jpg"].captions
    assert {e.split for e in examples.values()} <= {"train", "val", "test"}


def test_kaggle_variant_uses_official_split_files_beside_it(tmp_path):
    root = _copy("flickr8k_kaggle", tmp_path)
    for name in ("trainImages", "devImages", "testImages"):
        shutil.copy(FIXTURES / "flickr8k" / f"Flickr_8k.{name}.txt", root)
    splits = {n: e.split for n, e in _by_image(read_dataset("flickr8k", root)).items()}
    assert splits == {"red.jpg": "train", "green.jpg": "val", "blue.jpg": "test"}


def test_coco_reader_splits_val2014_into_val_and_test():
    examples = _by_image(read_dataset("coco", FIXTURES / "coco"))
    assert {n: e.split for n, e in examples.items()} == {
        "COCO_train2014_000000000001.jpg": "train",
        "COCO_val2014_000000000002.jpg": "val",
        "COCO_val2014_000000000005.jpg": "test",
    }


@pytest.mark.parametrize("line, problem", [
    ("red.jpg#0 no tab here", "expected 'name.jpg#N<TAB>caption'"),
    ("red.jpg\tno index", "expected 'name.jpg#N<TAB>caption'"),
    ("red.jpg#3\t   ", "empty caption"),
])
def test_malformed_token_line_names_file_and_line(tmp_path, line, problem):
    root = _copy("flickr8k", tmp_path)
    token_file = root / "Flickr8k.token.txt"
    lines = token_file.read_text().splitlines()
    lines.insert(2, line)
    token_file.write_text("\n".join(lines))
    with pytest.raises(ReaderError, match=problem) as error:
        read_dataset("flickr8k", root)
    assert "Flickr8k.token.txt:3:" in str(error.value)


def test_token_file_in_a_wrong_encoding_is_reported(tmp_path):
    root = _copy("flickr8k", tmp_path)
    (root / "Flickr8k.token.txt").write_bytes("red.jpg#0\tun café rouge\n".encode("latin-1"))
    with pytest.raises(ReaderError, match="not UTF-8"):
        read_dataset("flickr8k", root)


def test_image_in_two_splits_is_refused(tmp_path):
    root = _copy("flickr8k", tmp_path)
    with open(root / "Flickr_8k.testImages.txt", "a") as file:
        file.write("red.jpg\n")
    with pytest.raises(ReaderError, match="also in the train split"):
        read_dataset("flickr8k", root)


def test_empty_folder_and_missing_folder(tmp_path):
    with pytest.raises(ReaderError, match="neither"):
        read_dataset("flickr8k", tmp_path)
    with pytest.raises(ReaderError, match="no such file"):
        read_dataset("flickr8k", tmp_path / "nowhere")


def test_all_images_missing_is_an_error(tmp_path):
    root = _copy("flickr8k", tmp_path)
    for image in (root / "Flicker8k_Dataset").iterdir():
        image.unlink()
    with pytest.raises(ReaderError, match="no usable images"):
        read_dataset("flickr8k", root)


@pytest.mark.parametrize("row, problem", [
    ("photos/red photo.jpg,,train", "empty caption"),
    ("photos/red photo.jpg,a caption", "expected 3 fields"),
    ("photos/red photo.jpg,a caption,holdout", "unknown split"),
    ("photos/red photo.jpg,a caption,test", "in split test here but train before"),
])
def test_malformed_csv_rows(tmp_path, row, problem):
    root = _copy("csv", tmp_path)
    with open(root / "captions.csv", "a") as file:
        file.write(row + "\n")
    with pytest.raises(ReaderError, match=problem) as error:
        read_dataset("csv", root / "captions.csv")
    lines = (root / "captions.csv").read_text().splitlines()
    assert f"captions.csv:{len(lines)}:" in str(error.value)


def test_csv_without_split_column_splits_by_image(tmp_path):
    path = tmp_path / "captions.csv"
    rows = ["image,caption"] + [f"img{i}.jpg,caption {i} {j}" for i in range(60) for j in range(2)]
    path.write_text("\n".join(rows))
    for i in range(60):
        (tmp_path / f"img{i}.jpg").write_bytes(b"x")
    examples = read_dataset("csv", path)
    assert len(examples) == 60 and all(len(e.captions) == 2 for e in examples)
    assert {e.split for e in examples} == {"train", "val", "test"}
    again = {e.image: e.split for e in read_dataset("csv", path)}
    assert again == {e.image: e.split for e in examples}


def test_csv_with_a_wrong_header(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text("file,text\na.jpg,a caption\n")
    with pytest.raises(ReaderError, match="captions.csv:1: expected the header"):
        read_dataset("csv", path)


def test_broken_karpathy_json(tmp_path):
    root = _copy("karpathy", tmp_path)
    (root / "dataset_flickr8k.json").write_text('{"images": [\n{"filename": "red.jpg",\n')
    with pytest.raises(ReaderError, match=r"dataset_flickr8k.json:\d+: invalid JSON"):
        read_dataset("karpathy", root)
    (root / "dataset_flickr8k.json").write_text(json.dumps({"images": [{"filename": "red.jpg"}]}))
    with pytest.raises(ReaderError, match=r"images\[0\] needs"):
        read_dataset("karpathy", root)


def test_coco_annotation_without_caption(tmp_path):
    root = _copy("coco", tmp_path)
    path = root / "annotations" / "captions_train2014.json"
    data = json.loads(path.read_text())
    data["annotations"].append({"image_id": 1})
    path.write_text(json.dumps(data))
    with pytest.raises(ReaderError, match=r"captions_train2014.json: annotations\[\d+\] needs"):
        read_dataset("coco", root)
