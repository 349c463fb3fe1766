"""The models shipped in captioner/pretrained/: small enough, self-contained, the soft one used when no --model is
given and the hard one by name (`--model hard`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from captioner.model.saving import SHIPPED_MODEL
from captioner.model.shipped import SHIPPED_MODELS

ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 40 * 2**20

pytestmark = pytest.mark.skipif(not SHIPPED_MODEL.exists(), reason="no shipped model in models/")


def test_the_named_model_files_under_40_mb_each_with_their_card():
    shipped = sorted(p.name for p in SHIPPED_MODEL.parent.glob("*.keras"))
    assert shipped == sorted(path.name for path in SHIPPED_MODELS.values() if path.exists())
    assert SHIPPED_MODELS["soft"] == SHIPPED_MODEL
    for path in SHIPPED_MODELS.values():
        assert not path.exists() or path.stat().st_size <= MAX_BYTES
    card = (SHIPPED_MODEL.parent / "MODEL_CARD.md").read_text()
    for needed in ("Flickr8k", "BLEU-4", "CIDEr-D", "METEOR", "python train.py", "--model hard"):
        assert needed in card


@pytest.mark.skipif(not SHIPPED_MODELS["hard"].exists(), reason="no shipped hard-attention model")
def test_predict_model_hard_reads_one_cell_a_word_and_says_which(tmp_path):
    completed = subprocess.run([sys.executable, "predict.py", "data/examples/cat.jpg", "--model", "hard", "--json"],
                               cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    rows, columns = result["grid"]
    assert len(result["chosen_cells"]) == len(result["words"]) >= 3
    for (row, column), attention in zip(result["chosen_cells"], result["attention"]):
        assert 0 <= row < rows and 0 <= column < columns
        flat = [value for line in attention for value in line]
        assert flat.index(max(flat)) == row * columns + column  # the cell it read is alpha's most likely


def test_predict_uses_it_offline_with_an_empty_keras_cache(tmp_path):
    # An empty KERAS_HOME: nothing to load ImageNet weights from, so any download attempt would fail.
    environment = {**os.environ, "KERAS_HOME": str(tmp_path / "empty_keras_home"), "CUDA_VISIBLE_DEVICES": ""}
    environment.pop("CAPTIONER_MODEL", None)
    completed = subprocess.run(
        [sys.executable, "predict.py", "data/examples/cat.jpg", "data/examples/coffee.jpg", "--json", "--beam", "3"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    results = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [Path(r["path"]).name for r in results] == ["cat.jpg", "coffee.jpg"]
    assert all(len(r["words"]) >= 3 for r in results)
    assert not (tmp_path / "empty_keras_home" / "models").exists()  # nothing was downloaded
