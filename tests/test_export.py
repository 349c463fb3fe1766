"""`captioner export`: a SavedModel that a fresh process loads with TensorFlow alone, and a LiteRT file that one
runs with ai-edge-litert and NumPy alone, both captioning as the Keras model does (the same words and beams,
attention within 1e-4)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import SMALL_IMAGE, make_captioner

from captioner.model.captioner import make_ensemble
from captioner.model.export import export
from captioner.model.saving import save_model

LOAD_AND_CAPTION = """
import json, sys
import numpy as np
import tensorflow as tf
exported = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
outputs = exported.signatures["serving_default"](images=tf.constant(images))
print(json.dumps({key: value.numpy().tolist() if value.dtype != tf.string else
                  [[[w.decode() for w in beam] for beam in image] for image in value.numpy()]
                  for key, value in outputs.items()}))
assert "captioner" not in sys.modules
"""

RUN_LITERT = """
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
metadata = json.load(open(sys.argv[2]))
images = np.load(sys.argv[3])
interpreter = Interpreter(model_path=sys.argv[1])
interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], images.shape)
interpreter.allocate_tensors()
interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
interpreter.invoke()
outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
print(json.dumps({name: value.tolist() for name, value in zip(metadata["litert_outputs"], outputs)}))
assert "tensorflow" not in sys.modules and "captioner" not in sys.modules
"""


def test_the_saved_model_loads_without_the_project_and_captions_like_keras(tmp_path):
    hard_members = [make_captioner(hard_attention=True, hard_state="expected", seed=seed) for seed in (5, 6)]
    hard_members[1].encoder.set_weights(hard_members[0].encoder.get_weights())
    models = {"soft": make_captioner(seed=4), "hard": make_captioner(hard_attention=True, hard_state="expected", seed=4),
              "hard ensemble": make_ensemble(hard_members)}
    for kind, model in models.items():
        model.length_penalty, model.no_repeat_ngram = 1.0, 2
        written = export(model, tmp_path / f"exported-{kind}", "saved_model", beam_size=3)
        metadata = json.loads(written[-1].read_text())
        assert metadata["vocabulary"] == model.vocabulary.words and metadata["beam_size"] == 3
        images = np.random.default_rng(0).integers(0, 255, size=(2, SMALL_IMAGE, SMALL_IMAGE, 3)).astype(np.uint8)
        np.save(tmp_path / "images.npy", images)
        finished = subprocess.run([sys.executable, "-I", "-c", LOAD_AND_CAPTION, str(written[0]),
                                   str(tmp_path / "images.npy")], capture_output=True, text=True, timeout=300,
                                  cwd=tmp_path)
        assert finished.returncode == 0, finished.stderr[-2000:]
        outputs = json.loads(finished.stdout.strip().splitlines()[-1])
        expected = model.caption(images.astype(np.float32), beam_size=3)
        for index, caption in enumerate(expected):
            length = outputs["lengths"][index][0]
            assert outputs["words"][index][0][:length] == caption.words
            np.testing.assert_allclose(np.asarray(outputs["attention"][index][0])[:length].reshape(caption.attention[:length].shape),
                                       caption.attention[:length], atol=1e-4)
            assert [" ".join(w for w in beam if w) for beam in outputs["words"][index][1:]] == \
                [text for text, _ in caption.alternatives]


def test_the_litert_file_runs_without_tensorflow_and_captions_like_keras(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    model = make_captioner(hard_attention=True, hard_state="expected", seed=6)
    model.length_penalty, model.no_repeat_ngram = 1.0, 2
    litert, metadata = export(model, tmp_path / "exported", "litert", beam_size=2)
    images = np.random.default_rng(1).integers(0, 255, size=(2, SMALL_IMAGE, SMALL_IMAGE, 3)).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    finished = subprocess.run([sys.executable, "-I", "-c", RUN_LITERT, str(litert), str(metadata),
                               str(tmp_path / "images.npy")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    outputs = json.loads(finished.stdout.strip().splitlines()[-1])
    for index, caption in enumerate(model.caption(images.astype(np.float32), beam_size=2)):
        length = outputs["lengths"][index][0]
        assert [model.vocabulary.words[i] for i in outputs["word_ids"][index][0][:length]] == caption.words
        np.testing.assert_allclose(np.asarray(outputs["attention"][index][0])[:length].reshape(caption.attention[:length].shape),
                                   caption.attention[:length], atol=1e-4)
        np.testing.assert_allclose(outputs["scores"][index][0], caption.score, atol=1e-4)


def test_the_litert_file_stores_smaller_weights_on_request_and_still_captions(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    model = make_captioner(seed=7)
    images = np.random.default_rng(2).integers(0, 255, size=(1, SMALL_IMAGE, SMALL_IMAGE, 3)).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    sizes = {}
    for weights in ("float32", "float16", "int8"):
        litert, metadata = export(model, tmp_path / weights, "litert", beam_size=2, litert_weights=weights)
        assert json.loads(metadata.read_text())["litert_weights"] == weights
        sizes[weights] = litert.stat().st_size
        finished = subprocess.run([sys.executable, "-I", "-c", RUN_LITERT, str(litert), str(metadata),
                                   str(tmp_path / "images.npy")], capture_output=True, text=True, timeout=300,
                                  cwd=tmp_path)
        assert finished.returncode == 0, finished.stderr[-2000:]
        outputs = json.loads(finished.stdout.strip().splitlines()[-1])
        attention = np.asarray(outputs["attention"][0][0])[: outputs["lengths"][0][0] + 1]
        np.testing.assert_allclose(attention.sum(axis=-1), 1.0, atol=1e-3)  # still a distribution over the grid
    # MobileNetV2's weights dominate the file: half of them as float16, about a quarter as int8.
    assert sizes["float16"] < 0.6 * sizes["float32"] and sizes["int8"] < 0.4 * sizes["float32"]
    with pytest.raises(ValueError, match="LiteRT weights"):
        export(model, tmp_path / "bad", "litert", litert_weights="int4")


def test_captioner_export_refuses_a_missing_model_in_one_line(tmp_path, capsys):
    from captioner.cli import export as export_cli

    assert export_cli.main(["no/such.keras", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == "error: no/such.keras: no such model file"
    path = tmp_path / "model.keras"
    save_model(make_captioner(), path)
    assert export_cli.main([str(path), str(tmp_path / "out"), "--beam", "2", "--format", "saved_model"]) == 0
    assert (tmp_path / "out" / "saved_model" / "saved_model.pb").exists()


def test_the_deploy_page_snippets_run_on_the_exported_hard_model(tmp_path):
    import re
    import shutil
    from pathlib import Path

    from captioner.cli import export as export_cli
    from captioner.model.shipped import SHIPPED_MODELS

    if not SHIPPED_MODELS["hard"].exists():
        pytest.skip("no shipped hard-attention model")
    root = Path(__file__).resolve().parent.parent
    section = root.joinpath("docs", "deploy.md").read_text()
    command = re.search(r"```bash\n(captioner export [^\n#]+)", section).group(1).split()
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(snippets) == 2  # TensorFlow's SavedModel, then LiteRT
    assert export_cli.main([command[2], str(tmp_path / command[3]), *command[4:]]) == 0  # MODEL OUT_DIR --beam N
    shutil.copytree(root / "data" / "examples", tmp_path / "data" / "examples")
    captions = []
    for snippet in snippets:
        if "ai_edge_litert" in snippet:
            pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
        finished = subprocess.run([sys.executable, "-I", "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                                  timeout=300)
        assert finished.returncode == 0, finished.stderr[-2000:]
        captions.append(finished.stdout.strip().splitlines()[-1])
    assert len(captions[0].split()) >= 3 and captions[0] == captions[1]  # both runtimes, the same caption
