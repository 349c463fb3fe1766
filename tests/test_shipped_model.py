"""The model shipped in captioner/pretrained/: small enough, self-contained, and used when no --model is given."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from captioner.model.saving import SHIPPED_MODEL

ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 40 * 2**20

pytestmark = pytest.mark.skipif(not SHIPPED_MODEL.exists(), reason="no shipped model in models/")


def test_one_model_file_under_40_mb_with_its_card():
    assert SHIPPED_MODEL.stat().st_size <= MAX_BYTES
    assert sorted(p.name for p in SHIPPED_MODEL.parent.glob("*.keras")) == [SHIPPED_MODEL.name]
    card = (SHIPPED_MODEL.parent / "MODEL_CARD.md").read_text()
    for needed in ("Flickr8k", "BLEU-4", "CIDEr-D", "METEOR", "python train.py"):
        assert needed in card


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
