"""The cold path: what makes `python predict.py photo.jpg` start fast must not change what it prints.

* The compiled searches loop with `tf.while_loop` (one decoder step in the graph, cheap to trace);
  run eagerly, the same searches go word by word in Python, as the old unrolled graphs did.
  Both must give the same captions, scores and attention, on a tiny model, a tiny ensemble and
  the shipped model.
* Loading skips drawing random initial values that the file overwrites: every weight must still
  come from the file, a file missing one must be refused, and models built afterwards must draw
  their initial values as usual.
* A plain captioning run never imports matplotlib; overlays still draw; the process ends without
  collecting its garbage (a second at exit); a closed pipe ends quietly.
"""

import io
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import make_captioner
from PIL import Image

from captioner.data.images import load_images
from captioner.model.captioner import make_ensemble
from captioner.model.saving import SHIPPED_MODEL, load_captioner, save_model
from captioner.model.search import beam_search, greedy_search
from captioner.utils.graph import compile_function

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "data" / "examples").glob("*.jpg"))


def _step_by_step(captioner, images, beam_size: int):
    """Word ids (B, K, T), attention (B, K, T, L) and scores (B, K) of the search run eagerly, one word at a time,
    with the model's own decoding settings (its length penalty is for beam search)."""
    vocabulary, features = captioner.vocabulary, captioner.encoder(images)
    if beam_size == 1 and not captioner.no_repeat_ngram:
        words, weights = greedy_search(captioner.decoder, features, vocabulary.start_id, vocabulary.end_id,
                                       captioner.max_length)
        return words.numpy()[:, None], weights.numpy()[:, None], None
    words, weights, scores = beam_search(captioner.decoder, features, vocabulary.start_id, vocabulary.end_id,
                                         captioner.max_length, beam_size, all_beams=True,
                                         length_penalty=captioner.length_penalty if beam_size > 1 else 0.0,
                                         no_repeat_ngram=captioner.no_repeat_ngram)
    return words.numpy(), weights.numpy(), scores.numpy()


def _assert_compiled_equals_step_by_step(captioner, images, beam_size: int, atol: float):
    compiled = captioner.caption(images, beam_size=beam_size)
    words, weights, scores = _step_by_step(captioner, images, beam_size)
    rows, columns = captioner.grid
    for caption, image_words, image_weights, image_scores in zip(
            compiled, words, weights, scores if scores is not None else [None] * len(compiled)):
        assert caption.words == captioner.vocabulary.decode(image_words[0])
        steps = len(caption.attention)
        np.testing.assert_allclose(caption.attention, image_weights[0, :steps].reshape(steps, rows, columns), atol=atol)
        if image_scores is not None:
            np.testing.assert_allclose(caption.score, image_scores[0], rtol=1e-5)
            assert [text for text, _ in caption.alternatives] == [
                " ".join(captioner.vocabulary.decode(ids)) for ids in image_words[1:]]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_compiled_search_captions_like_the_step_by_step_search(random_images, beam_size):
    _assert_compiled_equals_step_by_step(make_captioner(seed=11), random_images, beam_size, atol=1e-6)


def test_compiled_ensemble_search_captions_like_the_step_by_step_search(random_images):
    members = [make_captioner(seed=seed) for seed in (12, 13)]
    members[1].encoder.set_weights(members[0].encoder.get_weights())
    _assert_compiled_equals_step_by_step(make_ensemble(members), random_images, beam_size=3, atol=1e-6)


@pytest.mark.skipif(not SHIPPED_MODEL.exists() or not EXAMPLES, reason="no shipped model or example photos")
def test_shipped_model_compiled_and_step_by_step_agree_on_the_example_photos():
    captioner = load_captioner(SHIPPED_MODEL)
    images = np.stack([load_images(path, captioner.encoder.image_size)[0] for path in EXAMPLES[:3]])
    _assert_compiled_equals_step_by_step(captioner, images, beam_size=3, atol=1e-5)


def test_compiled_search_holds_one_step_whatever_the_caption_length():
    """The cold-start fix itself: the graph to trace and optimise does not grow with the caption length."""
    captioner = make_captioner(seed=14)
    vocabulary, (locations, size) = captioner.vocabulary, captioner.feature_shape
    spec = [tf.TensorSpec([None, locations, size], tf.float32)]

    def operations(search, max_length):
        function = compile_function(
            lambda features: search(captioner.decoder, features, vocabulary.start_id, vocabulary.end_id, max_length),
            spec)
        graph = function.get_concrete_function(*spec).graph.as_graph_def()
        return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)

    for search in (greedy_search, beam_search):
        assert operations(search, 3) == operations(search, 15)


def _without_one_weight(source: Path, target: Path) -> None:
    """A copy of a .keras file whose weights lack one array (the first the file lists)."""
    with zipfile.ZipFile(source) as archive:
        entries = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    weights = io.BytesIO(entries["model.weights.h5"])
    with h5py.File(weights, "r+") as file:
        datasets = []
        file.visititems(lambda name, item: datasets.append(name) if isinstance(item, h5py.Dataset) else None)
        del file[datasets[0]]
    entries["model.weights.h5"] = weights.getvalue()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def test_loading_takes_every_weight_from_the_file_and_refuses_one_missing(tmp_path):
    original = make_captioner(seed=15)
    path = tmp_path / "model.keras"
    save_model(original, path)
    loaded = load_captioner(path)
    assert len(loaded.weights) == len(original.weights)
    for saved, restored in zip(original.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored), keras.ops.convert_to_numpy(saved))

    _without_one_weight(path, tmp_path / "short.keras")
    with pytest.raises(ValueError, match="short.keras"):
        load_captioner(tmp_path / "short.keras")


def test_models_built_after_loading_draw_their_initial_values(tmp_path):
    path = tmp_path / "model.keras"
    save_model(make_captioner(seed=16), path)
    load_captioner(path)
    layer = keras.layers.Dense(8)
    layer.build((None, 8))
    assert np.abs(keras.ops.convert_to_numpy(layer.kernel)).sum() > 0  # random, not the zeros loading starts from


def _run_python(code: str, **options) -> subprocess.CompletedProcess:
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=environment, text=True,
                          timeout=600, check=False, **options)


@pytest.fixture(scope="module")
def tiny_model_and_photo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model, photo = folder / "model.keras", folder / "photo.png"
    save_model(make_captioner(seed=17), model)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(photo)
    return model, photo


def test_plain_run_skips_matplotlib_overlays_still_draw_and_exit_skips_collecting(tiny_model_and_photo, tmp_path):
    model, photo = tiny_model_and_photo
    completed = _run_python(f"""
        import sys
        from captioner.cli.caption import main
        assert main([{str(photo)!r}, "--model", {str(model)!r}]) == 0
        print("matplotlib imported:", "matplotlib" in sys.modules)
        assert main([{str(photo)!r}, "--model", {str(model)!r}, "--overlay-dir", {str(tmp_path / "overlays")!r},
                     "--overlay-style", "heatmap", "--colormap", "viridis"]) == 0

        class Probe:  # garbage in a cycle: only the collection at exit would find it
            def __del__(self):
                print("collected at exit")

        probe = Probe()
        probe.cycle = probe
        del probe
    """, capture_output=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count(f"{photo}: ") == 2
    assert "matplotlib imported: False" in completed.stdout
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 1
    assert "collected at exit" not in completed.stdout  # the command froze the heap for a fast exit


@pytest.mark.parametrize("arguments", [["-m", "captioner", "--help"], ["predict.py", "PHOTO", "--model", "MODEL"]])
def test_a_reader_that_stops_reading_gets_no_traceback(arguments, tiny_model_and_photo):
    model, photo = tiny_model_and_photo
    arguments = [{"PHOTO": str(photo), "MODEL": str(model)}.get(argument, argument) for argument in arguments]
    reader, writer = os.pipe()
    os.close(reader)  # every write to the pipe now fails, as in `captioner --help | head -0`
    try:
        completed = subprocess.run([sys.executable, *arguments], cwd=ROOT, stdout=writer, stderr=subprocess.PIPE,
                                   text=True, timeout=600, check=False)
    finally:
        os.close(writer)
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr and "BrokenPipeError" not in completed.stderr
