"""The HTML report: self-contained, and in a real headless browser hovering a word shows its map."""

import base64
import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from captioner.visualize.report import ReportEntry, render_report, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's own network calls are refused here; these flags keep it from making them.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _entries():
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, size=(90, 150, 3)).astype(np.uint8)  # wide: the aspect ratio must survive
    left, right = np.zeros((4, 5)), np.zeros((4, 5))
    left[1, 0], right[2, 4] = 1.0, 1.0  # "a dog" looks left, then right
    return [
        ReportEntry("photos/dog.jpg", image, ["a", "dog"], np.stack([left, right, right]), -0.71,
                    [("a brown dog", -0.9), ("the dog </script><b>", -1.2)]),
        ReportEntry("photos/cat.png", image[:, :90], ["cat"], np.stack([right, left]), None, []),
    ]


def _embedded(page: str) -> list[dict]:
    return json.loads(re.search(r'<script id="report-data" type="application/json">(.*?)</script>', page, re.S).group(1))


def test_report_is_self_contained_with_images_grids_and_beams(tmp_path):
    page = render_report(_entries(), notes="greedy")
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    data = _embedded(page)
    assert [d["words"] for d in data] == [["a", "dog"], ["cat"]]
    assert data[0]["grid"] == [4, 5] and len(data[0]["attention"]) == 2 and len(data[0]["attention"][0]) == 20
    assert data[0]["alternatives"][1][0] == "the dog </script><b>"  # survives, and cannot end the script early
    image = Image.open(io.BytesIO(base64.b64decode(data[0]["image"].split(",", 1)[1])))
    assert image.size == (150, 90)
    write_report(_entries(), tmp_path / "report.html")
    assert (tmp_path / "report.html").read_text() == page.replace("greedy", "")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt install chromium)")
def test_hovering_a_word_shows_its_map_in_a_headless_browser(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    path = tmp_path / "report.html"
    write_report(_entries(), path)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(path.as_uri())
        page.wait_for_selector("#entry-0[data-ready='1']")
        canvas = page.locator("#entry-0 canvas")

        def pixels():
            return np.array(canvas.evaluate(
                "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
            ), dtype=np.float32).reshape(90, 150, 4)[..., :3].mean(axis=-1)

        plain = pixels()
        page.hover("#entry-0 .word[data-index='0']")
        assert canvas.get_attribute("data-word") == "0"
        first = pixels()
        page.hover("#entry-0 .word[data-index='1']")
        second = pixels()
        assert page.locator("#entry-0 .word.active").inner_text() == "dog"
        texts = page.locator("#entry-0 .alternatives li").all_inner_texts()
        browser.close()
    # "a" keeps cell (1, 0) bright, "dog" cell (2, 4) (cells are 30 x 22.5 pixels); the plain image is not dimmed.
    left, right = (slice(26, 42), slice(8, 22)), (slice(49, 64), slice(128, 142))
    assert first[left].mean() > 2 * first[right].mean()
    assert second[right].mean() > 2 * second[left].mean()
    assert plain.mean() > 1.5 * max(first.mean(), second.mean())
    assert texts[0].startswith("a brown dog") and texts[1].startswith("the dog </script><b>")
