"""Bad input and interruptions, driven through the real entry points (train.main, predict.main, subprocesses).

Each case checks what the user sees: one `error:` line naming the file and the problem, the
right exit status, no traceback, and nothing lost (other images captioned, checkpoints intact).
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_RUN
from PIL import Image

from captioner.cli import caption as predict
from captioner.cli import train
from captioner.data import images as images_module

ROOT = Path(__file__).resolve().parent.parent
@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    assert train.main(TINY_RUN + ["--epochs", "1", "--run-dir", str(run_dir)]) == 0
    return run_dir / "best.keras"


def _rgb(width=40, height=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _good_images(folder: Path) -> list[Path]:
    """Every kind of image Pillow opens that a user may point us at."""
    folder.mkdir()
    rgb = Image.fromarray(_rgb())
    made = {
        "photo.jpg": lambda p: rgb.save(p, "JPEG"),
        "photo.png": lambda p: rgb.save(p, "PNG"),
        "anim.gif": lambda p: rgb.convert("P").save(p, "GIF"),
        "photo.webp": lambda p: rgb.save(p, "WEBP"),
        "photo.bmp": lambda p: rgb.save(p, "BMP"),
        "photo.tiff": lambda p: rgb.save(p, "TIFF"),
        "grey.png": lambda p: rgb.convert("L").save(p),
        "palette.png": lambda p: rgb.convert("P").save(p),
        "alpha.png": lambda p: rgb.convert("RGBA").save(p),
        "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p, "JPEG"),
        "sixteen bit.png": lambda p: Image.fromarray((_rgb()[..., 0].astype(np.uint16) * 257)).save(p),
        "one pixel.png": lambda p: Image.new("RGB", (1, 1), (200, 10, 10)).save(p),
        "very wide.png": lambda p: Image.new("RGB", (4000, 10), (10, 200, 10)).save(p),
        "jpeg named.png": lambda p: rgb.save(p, "JPEG"),
        "café ü 写真.jpg": lambda p: rgb.save(p, "JPEG"),
    }
    paths = []
    for name, make in made.items():
        make(folder / name)
        paths.append(folder / name)
    return paths


def _bad_images(folder: Path) -> dict[Path, str]:
    """Files that must be refused, each with the words its error line must contain."""
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("this is a text file")
    Image.fromarray(_rgb(200, 200)).save(folder / "whole.jpg", "JPEG")
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "whole.jpg").unlink()
    Image.new("1", (3000, 3000)).save(folder / "bomb.png")  # 9 Mpx, refused under the test's pixel limit
    (folder / "a folder.jpg").mkdir()
    return {
        folder / "empty.jpg": "empty file",
        folder / "notes.png": "not an image",
        folder / "truncated.jpg": "unreadable image",
        folder / "bomb.png": "decompression bomb",
        folder / "a folder.jpg": "directory holds no images",  # a folder argument is searched for images
        folder / "missing.jpg": "no such file",
    }


def test_every_image_kind_is_captioned_and_every_bad_file_reported_once(model_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 4_000_000)
    good = _good_images(tmp_path / "good")
    bad = _bad_images(tmp_path / "bad")
    inputs = [str(p) for p in good[:7]] + [str(p) for p in bad] + [str(p) for p in good[7:]]
    status = predict.main(inputs + ["--model", str(model_path), "--json", "--overlay-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert status == 1
    assert "Traceback" not in err
    captioned = [json.loads(line)["path"] for line in out.splitlines()]
    assert captioned == [str(p) for p in good]  # all of them, in input order
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad)
    for path, reason in bad.items():
        matching = [line for line in errors if str(path) in line]
        assert len(matching) == 1 and reason in matching[0], (path, matching)
    assert len(list((tmp_path / "out").glob("*.png"))) == len(good)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red, right half blue
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 3  # "rotate 180 degrees to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    loaded = images_module.load_image(tmp_path / "rotated.jpg", 32)
    assert loaded[16, 2, 2] > 200 and loaded[16, 2, 0] < 60  # the left edge now shows blue


def test_a_directory_without_images_and_a_pattern_matching_nothing(model_path, tmp_path, capsys):
    (tmp_path / "empty dir").mkdir()
    status = predict.main([str(tmp_path / "empty dir"), str(tmp_path / "*.jpg"), "--model", str(model_path)])
    err = capsys.readouterr().err
    assert status == 1
    assert "directory holds no images" in err and "pattern matched no files" in err


def test_truncated_or_foreign_model_files_are_refused_clearly(tmp_path, model_path, capsys):
    data = model_path.read_bytes()
    (tmp_path / "truncated.keras").write_bytes(data[: len(data) // 2])
    (tmp_path / "image.keras").write_bytes((ROOT / "data/fixtures/flickr8k/Flicker8k_Dataset/red.jpg").read_bytes())
    for name in ("truncated.keras", "image.keras", "absent.keras"):
        status = predict.main([str(model_path), "--model", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert status == 2 and err.count("error:") == 1 and name in err and "Traceback" not in err


def test_a_model_with_code_in_it_is_not_run(tmp_path, capsys):
    import keras

    inputs = keras.Input((2,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    status = predict.main([str(tmp_path / "x.png"), "--model", str(tmp_path / "lambda.keras")])
    err = capsys.readouterr().err
    assert status == 2 and "lambda.keras" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["--backbone", "alexnet"], "unknown backbone"),
    (["--beam-size", "3"], "unrecognized arguments"),
    (["--dataset", "flickr8k", "--data-dir", "/nonexistent/flickr8k"], "no such file or directory"),
    (["--dataset", "csv"], "--data-dir is needed"),
])
def test_bad_training_flags(argv, words, capsys, tmp_path):
    try:
        status = train.main(argv + ["--run-dir", str(tmp_path / "run")])
    except SystemExit as exit_info:
        status = exit_info.code
    err = capsys.readouterr().err
    assert status == 2 and words in err and "Traceback" not in err


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    from captioner.training import objectives

    run_dir = tmp_path / "run"
    assert train.main(TINY_RUN + ["--epochs", "1", "--run-dir", str(run_dir)]) == 0
    before = (run_dir / "checkpoints/last.npz").read_bytes()
    real_loss = objectives.caption_loss

    def nan_loss(*args, **kwargs):
        loss, cross_entropy, penalty = real_loss(*args, **kwargs)
        return loss * float("nan"), cross_entropy, penalty

    monkeypatch.setattr(objectives, "caption_loss", nan_loss)
    capsys.readouterr()
    assert train.main(["--resume", "--epochs", "2", "--run-dir", str(run_dir)]) == 3
    err = capsys.readouterr().err
    assert "loss became nan" in err and "last good checkpoint" in err and err.count("error:") == 1
    assert (run_dir / "checkpoints/last.npz").read_bytes() == before


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    from captioner.training import checkpoint

    run_dir = tmp_path / "run"
    assert train.main(TINY_RUN + ["--epochs", "1", "--run-dir", str(run_dir)]) == 0
    before = (run_dir / "checkpoints/last.npz").read_bytes()

    def disk_full(file, **arrays):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(file.name))

    monkeypatch.setattr(checkpoint.np, "savez", disk_full)
    capsys.readouterr()
    assert train.main(["--resume", "--epochs", "2", "--run-dir", str(run_dir)]) == 4
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("error:") == 1
    assert (run_dir / "checkpoints/last.npz").read_bytes() == before
    assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp" in p.name]
    monkeypatch.undo()
    assert train.main(["--resume", "--epochs", "2", "--run-dir", str(run_dir)]) == 0


def _train_command(run_dir: Path, epochs: int) -> list[str]:
    return [sys.executable, str(ROOT / "train.py")] + TINY_RUN + ["--epochs", str(epochs), "--run-dir", str(run_dir)]


def test_kill_9_then_resume_ends_with_the_same_weights(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_train_command(straight, 3), check=True, env=env, capture_output=True, cwd=ROOT)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(killed, 3), env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints/last.npz").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere inside the next epoch
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    resumed = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", "--run-dir", str(killed)],
                             env=env, capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resumed from" in resumed.stdout
    a, b = np.load(straight / "checkpoints/last.npz"), np.load(killed / "checkpoints/last.npz")
    keys = [k for k in a.files if k.startswith(("model/", "optimizer/"))]
    for key in keys:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    rows = [json.loads(line)["epoch"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3]
