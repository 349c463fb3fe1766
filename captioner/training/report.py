"""After training: the best checkpoint on the test split, once; its report, captions and a few overlays."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

from captioner.data.datasets import Split
from captioner.evaluation.evaluate import evaluate_captions, format_table
from captioner.model.captioner import Captioner, caption_features
from captioner.training.callbacks import BEST_MODEL
from captioner.training.validation import synthetic_scores
from captioner.utils.atomic import atomic_path, atomic_write_text
from captioner.visualize.overlay import draw_overlay

OVERLAY_EXAMPLES = 5
EXAMPLE_SCENES = 8


def report_on_test(captioner: Captioner, features, test: Split, run_dir: Path) -> None:
    """Greedy captions of the test split scored with the COCO metrics (as `captioner evaluate`), written to
    test_metrics.json and test_captions.json; overlays of the first few; example scenes to try predict.py on.

    `captioner` must hold the best checkpoint's weights.
    """
    if not len(test):
        print("No test split: skipping the test evaluation.")
        return
    test_captions = caption_features(captioner, features, beam_size=1, length_penalty=0.0, no_repeat_ngram=0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # The overlays are drawn while the COCO metrics wait on their Java scorers (a few seconds each).
        overlays = pool.submit(draw_examples, test_captions, test, captioner.encoder.image_size, run_dir / "overlays")
        test_scores, results = evaluate_captions(test_captions, test)  # the COCO metrics, as captioner.evaluation.evaluate
    synthetic = synthetic_scores(test_captions, test)
    test_scores.update(synthetic)
    report = {"split": "test", "images": len(test), "decoding": "greedy", "checkpoint": "best", **test_scores}
    atomic_write_text(run_dir / "test_metrics.json", json.dumps(report, indent=2))
    atomic_write_text(run_dir / "test_captions.json", json.dumps(results, indent=1))
    print(format_table(test_scores, f"Test split ({len(test)} images), greedy, best checkpoint"))
    if synthetic:
        print("  ".join(f"{k} {v:.4f}" for k, v in synthetic.items() if isinstance(v, float)))
    print("\n".join(overlays.result()))
    if test.scenes is not None:
        write_example_scenes(test, run_dir / "test_scenes")
    print(f"Model: {run_dir / BEST_MODEL}   overlays: {run_dir / 'overlays'}")


def draw_examples(captions: list, split: Split, size: int, directory: Path, count: int = OVERLAY_EXAMPLES) -> list[str]:
    """Overlays of the first `count` captions of a split (images at `size` pixels); a line naming each image and
    its caption."""
    lines = []
    for index in range(min(count, len(split))):
        caption = captions[index]
        lines.append(f"  {split.paths[index] if split.paths else f'test scene {index}'}: {caption.text}")
        draw_overlay(split.image(index, size), caption.words, caption.attention, directory / f"test_{index:03d}.png",
                     chosen_cells=caption.chosen_cells)
    return lines


def write_example_scenes(split: Split, directory: Path, count: int = EXAMPLE_SCENES) -> None:
    """A few held-out scenes as PNG files, with their reference captions, to try predict.py on."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    references = {}
    for index in range(min(count, len(split))):
        name = f"scene_{index:03d}.png"
        with atomic_path(directory / name) as temporary:
            Image.fromarray(split.images[index]).save(temporary, format="PNG")
        references[name] = split.captions[index]
    atomic_write_text(directory.parent / "test_scenes.json", json.dumps(references, indent=2))
