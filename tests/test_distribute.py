"""tf.distribute: N replicas with a global batch B train the same model as one device with batch B.

Each run is a process of its own (logical devices and TF_CONFIG must be set before TensorFlow
starts): one device, MirroredStrategy over two logical CPUs, and two MultiWorkerMirroredStrategy
workers on loopback addresses. Dropout is off, so the runs must agree to float rounding.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL_IMAGE, TINY_RUN
from PIL import Image

from captioner.data import pipeline, synthetic
from captioner.training.distribute import local_tf_configs

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "distributed_train.py"
# A batch of 7 over 2 replicas splits 4 + 3, and the last batch of each epoch is smaller still.
# A constant learning rate: a run stopped after epoch 1 and resumed then matches an uninterrupted one.
# TINY_RUN has no XLA: the distributed step is not compiled with it, and XLA fuses (so rounds) differently.
RUN = [*TINY_RUN, "--dropout", "0", "--batch-size", "7", "--epochs", "2", "--patience", "0", "--lr-patience", "0",
       "--lr-schedule", "constant"]
assert "--no-xla" in RUN
WEIGHTS_TOLERANCE = 1e-5


def _train(run_dir, flags=(), replicas=1, env=None, wait=True):
    command = [sys.executable, str(RUNNER), "--cpu-replicas", str(replicas), "--", *RUN, "--run-dir", str(run_dir), *flags]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return _finish(process) if wait else process


def _finish(process) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def _history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _assert_same_training(run_dir, reference_dir):
    """Same loss curve and same final weights and optimizer state as the single-device run."""
    history, reference = _history(run_dir), _history(reference_dir)
    assert [row["epoch"] for row in history] == [row["epoch"] for row in reference] == [1, 2]
    for row, expected in zip(history, reference):
        assert row["captions"] == expected["captions"]
        for key in ("train_loss", "train_cross_entropy", "val_loss", "gradient_norm"):
            assert row[key] == pytest.approx(expected[key], rel=1e-5), key
    with np.load(Path(run_dir) / "checkpoints/last.npz") as saved, np.load(Path(reference_dir) / "checkpoints/last.npz") as expected:
        names = [name for name in expected.files if name.startswith(("model/", "optimizer/"))]
        assert sorted(names) == sorted(name for name in saved.files if name.startswith(("model/", "optimizer/")))
        # Softmax ignores the additive score's bias, so its gradient is float noise, which Adam turns into
        # full-size steps in a random direction: it cannot agree, and it changes no output.
        inert = {f"model/{index:04d}" for index, path in enumerate(expected["model_names"]) if "score_vector/bias" in str(path)}
        assert len(inert) == 1
        for name in sorted(set(names) - inert):
            np.testing.assert_allclose(saved[name], expected[name], atol=WEIGHTS_TOLERANCE, err_msg=name)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single")
    _train(run_dir)
    return run_dir


def _workers(run_dir, flags=(), count=2):
    """`count` MultiWorkerMirroredStrategy processes on loopback addresses; returns their outputs."""
    processes = [_train(run_dir, ["--strategy", "multiworker", *flags], wait=False, env={"TF_CONFIG": tf_config})
                 for tf_config in local_tf_configs(count)]
    return [_finish(process) for process in processes]


def test_replica_slices_cover_each_global_batch_once():
    token_ids = np.zeros((23, 9), np.int32)
    lengths = np.random.default_rng(0).integers(1, 9, 23)
    for row, length in enumerate(lengths):
        token_ids[row, :length] = 5
    features = np.arange(23, dtype=np.float16)[:, None, None] * np.ones((1, 4, 3), np.float16)
    batches = pipeline.epoch_batches(token_ids, 7, seed=0, epoch=0)
    whole = list(pipeline.make_dataset(features, np.arange(23), token_ids, batches))
    for replicas in (2, 3):
        halves = [list(pipeline.make_replica_dataset(features, np.arange(23), token_ids, batches, replicas, [r]))
                  for r in range(replicas)]
        for step, (batch_features, batch_ids) in enumerate(whole):
            parts = [halves[r][step] for r in range(replicas)]
            assert all(ids[0].shape[1] == batch_ids.shape[1] for _, ids in parts)  # one length for every replica
            real = [(f[0], ids[0]) for f, ids in parts if np.any(ids[0])]  # a batch of 2 leaves a third replica none
            np.testing.assert_array_equal(np.concatenate([f for f, _ in real]), batch_features)
            np.testing.assert_array_equal(np.concatenate([ids for _, ids in real]), batch_ids)
            sizes = [len(ids) for _, ids in real]
            assert max(sizes) - min(sizes) <= 1 and len(real) == min(replicas, len(batch_ids))


def test_a_replica_without_rows_gets_one_padding_row():
    token_ids = np.array([[1, 5, 2], [1, 6, 2]], np.int32)
    features = np.ones((2, 4, 3), np.float16)
    (feature_parts, id_parts), = pipeline.make_replica_dataset(features, np.arange(2), token_ids, [np.array([0])], 2, [0, 1])
    assert id_parts[0].numpy().tolist() == [[1, 5, 2]]
    assert id_parts[1].numpy().tolist() == [[0, 0, 0]] and feature_parts[1].shape == (1, 4, 3)


def test_mirrored_strategy_on_two_devices_trains_and_resumes_like_one_device(single_device, tmp_path):
    # Stopped after epoch 1 and resumed: the loss of both epochs and the final weights must match one device's.
    output = _train(tmp_path, ["--strategy", "mirrored", "--epochs", "1"], replicas=2)
    assert "MirroredStrategy, 2 replicas, global batch 7" in output
    assert [row["epoch"] for row in _history(tmp_path)] == [1]
    _train(tmp_path, ["--strategy", "mirrored", "--resume", "--epochs", "2"], replicas=2)
    _assert_same_training(tmp_path, single_device)


def test_a_single_device_checkpoint_resumes_on_two_workers_and_only_the_chief_writes(single_device, tmp_path):
    # Two workers from scratch are checked on photos below (test_workers_share_out_feature_extraction_...).
    _train(tmp_path, ["--epochs", "1"])
    (tmp_path / "test_metrics.json").unlink()  # the chief writes it again at the end; the worker must not
    chief, worker = _workers(tmp_path, ["--resume", "--epochs", "2"])
    assert "MultiWorkerMirroredStrategy, 2 replicas" in chief
    assert "writes nothing" in worker and "writes nothing" not in chief
    _assert_same_training(tmp_path, single_device)
    assert (tmp_path / "test_metrics.json").exists()


def _photo_dataset(root: Path) -> Path:
    """Synthetic scenes saved as PNG files with a captions CSV: photos read through the disk cache."""
    rows = ["image,caption,split"]
    for index, scene in enumerate(synthetic.make_scenes(16, seed=5, image_size=SMALL_IMAGE)):
        name = f"scene_{index:02d}.png"
        Image.fromarray(scene.image).save(root / name)
        split = "train" if index < 10 else "val" if index < 13 else "test"
        rows += [f"{name},{caption},{split}" for caption in scene.captions]
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root / "captions.csv"


def test_workers_share_out_feature_extraction_and_train_like_one_device(tmp_path):
    data = _photo_dataset(tmp_path)
    flags = ["--dataset", "csv", "--data-dir", str(data), "--min-word-count", "1"]
    _train(tmp_path / "single", [*flags, "--feature-cache", str(tmp_path / "cache-single")])
    outputs = _workers(tmp_path / "workers", [*flags, "--feature-cache", str(tmp_path / "cache-shared")])
    encoded = [int(line.split()[1]) for output in outputs for line in output.splitlines()
               if line.startswith("Encoding ") and "train images" in line]
    assert sorted(encoded) == [5, 5]  # the 10 training photos, half each
    _assert_same_training(tmp_path / "workers", tmp_path / "single")
