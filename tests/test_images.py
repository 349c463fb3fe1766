import numpy as np
import pytest
from PIL import Image

from captioner.data.images import ImageError, expand_inputs, load_image


def test_loads_and_resizes_common_modes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((30, 50), 128, np.uint8)])).save(tmp_path / "alpha.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.gif")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    for name in ("photo.png", "grey.png", "alpha.png", "palette.gif", "cmyk.jpg"):
        image = load_image(tmp_path / name, 64)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello"), "not an image"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_bad_files_get_one_clear_reason(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageError, match=reason) as error:
        load_image(path, 32)
    assert str(path) in str(error.value)


def test_truncated_image_is_refused(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.png"):
        load_image(tmp_path / "cut.png", 32)


def test_expand_inputs_reads_directories_and_globs(tmp_path):
    for name in ("b.jpg", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    paths, errors = expand_inputs([str(tmp_path), str(tmp_path / "*.jpg"), str(tmp_path / "*.webp")])
    assert paths == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), str(tmp_path / "b.jpg")]
    assert len(errors) == 1 and "matched no files" in errors[0]
