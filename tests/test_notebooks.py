"""The notebooks run top to bottom, offline, as stored (their outputs are committed; here they are re-run)."""

from pathlib import Path

import pytest
from helpers import imagenet_weights_available

from captioner.model.saving import default_model_path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"




def _run(name: str, replace: dict[str, str] | None = None):
    """Execute a notebook; `replace`: text to swap in its code first (each must be found), e.g. a shorter run."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    for old, new in (replace or {}).items():
        cells = [cell for cell in notebook.cells if cell.cell_type == "code" and old in cell.source]
        assert cells, f"{name} no longer has {old!r}: update the test"
        for cell in cells:
            cell.source = cell.source.replace(old, new)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError, with the cell and the traceback, if any cell fails
    return notebook


def _text(notebook) -> str:
    """Everything the notebook printed to stdout (stderr notices can land between two prints)."""
    return "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
                   if output.get("name") == "stdout")


def test_attention_from_scratch():
    text = _text(_run("01_attention_from_scratch.ipynb"))
    assert text.count("gives the same weights and context") == 4


@pytest.mark.skipif(not default_model_path().exists(), reason="no shipped model in models/")
def test_caption_and_look():
    text = _text(_run("02_caption_and_look.ipynb"))
    assert "cat.jpg" in text and "beam 3:" in text


@pytest.mark.skipif(not imagenet_weights_available(), reason="MobileNetV2 ImageNet weights not available offline")
def test_train_your_own(monkeypatch):
    # The notebook's last section trains an epoch on the Flickr8k it finds (FLICKR8K_DIR first): pointed at the
    # three-photo fixture it runs the same code in seconds, where the whole of ../shared took about ten minutes
    # (encoding 8,091 photos, then the epoch) and most of CI's time.
    monkeypatch.setenv("FLICKR8K_DIR", str(Path(__file__).resolve().parent.parent / "data" / "fixtures" / "flickr8k"))
    # The synthetic section trains as tests/test_attention_maps.py does (minutes), which checks what the model
    # learns; here one short epoch on fewer scenes runs the same cells, without XLA (its compiling costs more than
    # it saves in runs this short).
    quick = {"synthetic_train_scenes=2000, epochs=5": "synthetic_train_scenes=200, epochs=1, synthetic_val_scenes=40, "
                                                      "synthetic_test_scenes=40, jit_compile=False",
             "data_dir=str(flickr8k), epochs=1,": "data_dir=str(flickr8k), epochs=1, jit_compile=False,"}
    text = _text(_run("03_train_your_own.ipynb", quick))
    assert "exact match:" in text and "attention peaks:" in text
    assert "test scores:" in text  # the photo section ran
