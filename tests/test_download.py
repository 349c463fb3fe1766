"""The download script's unpacking, fed from a local file:// URL so the test stays offline."""

import importlib.util
import shutil
import zipfile
from pathlib import Path

import pytest

from captioner.data.readers import read_dataset

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("download", ROOT / "data" / "download.py")
download = importlib.util.module_from_spec(spec)
spec.loader.exec_module(download)


def test_download_unpacks_a_dataset_that_the_reader_accepts(tmp_path):
    cache = tmp_path / "keras"
    archive = Path(shutil.make_archive(str(tmp_path / "flickr8k"), "zip", ROOT / "data" / "fixtures" / "flickr8k"))
    archives = {"flickr8k": [("flickr8k_fixture.zip", archive.as_uri())]}
    destination = download.download("flickr8k", tmp_path / "data", archives, cache_dir=cache)
    assert (cache / "datasets" / "flickr8k_fixture.zip").is_file()
    assert len(read_dataset("flickr8k", destination)) == 3
    archive.unlink()  # the cached copy is used from now on
    download.download("flickr8k", tmp_path / "again", archives, cache_dir=cache)
    assert (tmp_path / "again" / "Flickr8k.token.txt").is_file()


def test_download_unpacks_flickr30k_entities_in_the_layout_its_reader_reads(tmp_path):
    from captioner.data.entities import read_annotation

    # the release's annotations.zip holds Annotations/ and Sentences/ at its top level, as this fixture does
    fixture = ROOT / "data" / "fixtures" / "flickr30k_entities"
    archive = Path(shutil.make_archive(str(tmp_path / "entities"), "zip", fixture))
    archives = {"flickr30k-entities": [("entities_fixture.zip", archive.as_uri())]}
    destination = download.download("flickr30k-entities", tmp_path / "entities", archives, cache_dir=tmp_path / "keras")
    assert read_annotation(destination, "red") is not None
    assert "flickr30k-entities" in download.ARCHIVES


def test_unpack_refuses_paths_outside_the_destination(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../escaped.txt", "no")
    with pytest.raises(ValueError, match="outside"):
        download.unpack(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
