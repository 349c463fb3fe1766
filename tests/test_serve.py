"""`captioner serve` in a subprocess on a free loopback port: good, bad and oversized uploads, concurrent requests,
the 503 path, and the page in a real headless Chromium (upload a photo, hover a word, the map changes)."""

import concurrent.futures
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.model.shipped import SHIPPED_MODEL

pytestmark = pytest.mark.skipif(not SHIPPED_MODEL.exists(), reason="no shipped model")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
START_SECONDS = 120
REQUEST_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`captioner serve` in its own process group, its output in a file (its workers must not hold a pipe open)."""

    def __init__(self, *flags, log_dir: Path | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", dir=log_dir, delete=False)
        self.process = subprocess.Popen([sys.executable, "-m", "captioner", "serve", "--port", str(self.port), *flags],
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + START_SECONDS
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server stopped: {self.output()}")
            try:
                self.health = json.loads(urllib.request.urlopen(self.url + "/api/health", timeout=5).read())
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("the server did not start in time")

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; the exit status (the whole group is killed if it does not stop in time)."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"the server did not stop on Ctrl-C: {self.output()}") from None
        finally:
            self.log.close()
            os.unlink(self.log.name)

    def post(self, fields: dict, files: dict | None = None, headers: dict | None = None):
        """A multipart POST to /api/caption -> (status, JSON body, headers)."""
        boundary = uuid.uuid4().hex
        body = io.BytesIO()
        for name, value in fields.items():
            body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, (filename, data) in (files or {}).items():
            body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                       f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        body.write(f"--{boundary}--\r\n".encode())
        request = urllib.request.Request(self.url + "/api/caption", data=body.getvalue(), method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                  **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}"), dict(error.headers)


def _photo(seed: int = 0, size=(160, 120)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(size[1], size[0], 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server():
    running = Server("--model", "soft", "--workers", "2", "--queue", "16")
    yield running
    assert running.stop() == 0  # stops cleanly on Ctrl-C


def test_a_photo_is_captioned_like_predict_json(server):
    status, result, _ = server.post({"beam": "3"}, {"image": ("photo.jpg", _photo())})
    assert status == 200
    assert result["name"] == "photo.jpg" and result["model"] == "soft"
    assert result["caption"] == " ".join(result["words"]) and result["words"]
    rows, columns = result["grid"]
    assert np.asarray(result["attention"]).shape == (len(result["words"]), rows, columns)
    assert np.allclose(np.asarray(result["attention"]).sum(axis=(1, 2)), 1.0, atol=0.01)
    assert len(result["alternatives"]) == 2 and all("score" in a for a in result["alternatives"])


@pytest.mark.parametrize("fields, files, status, message", [
    ({}, {"image": ("notes.txt", b"not a photo at all")}, 422, "not an image"),
    ({}, {"image": ("empty.jpg", b"")}, 422, "empty file"),
    ({}, {"image": ("cut.jpg", _photo()[:400])}, 422, "unreadable image"),
    ({}, {"other": ("photo.jpg", _photo())}, 400, "field 'image'"),
    ({"beam": "0"}, {"image": ("photo.jpg", _photo())}, 400, "beam"),
    ({"beam": "three"}, {"image": ("photo.jpg", _photo())}, 400, "beam"),
    ({"model": "../../etc/passwd"}, {"image": ("photo.jpg", _photo())}, 400, "unknown model"),
])
def test_bad_uploads_get_a_4xx_with_one_clear_message_and_the_server_goes_on(server, fields, files, status, message):
    got, result, _ = server.post(fields, files)
    assert got == status and message in result["error"]
    assert server.post({}, {"image": ("photo.jpg", _photo(1))})[0] == 200


def test_oversized_uploads_and_decompression_bombs_are_refused(server):
    # The answer comes from the headers alone, before a byte of the body is read (and so before any is sent).
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_SECONDS)
    connection.putrequest("POST", "/api/caption")
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(server.health["max_upload_bytes"] + 10))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "limit" in json.loads(response.read())["error"]
    connection.close()
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, format="PNG")  # 64 megapixels in a few kilobytes
    status, result, _ = server.post({}, {"image": ("bomb.png", bomb.getvalue())})
    assert status == 413 and "pixels" in result["error"]


def test_concurrent_requests_are_all_captioned(server):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda seed: server.post({"beam": "2"}, {"image": (f"{seed}.jpg", _photo(seed))}),
                                range(12)))
    assert [status for status, _, _ in results] == [200] * 12
    assert all(result["name"] == f"{seed}.jpg" for seed, (_, result, _) in enumerate(results))


def test_past_the_queue_requests_get_503_with_retry_after():
    server = Server("--model", "soft", "--workers", "1", "--queue", "0")
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda seed: server.post({"beam": "10"}, {"image": ("p.jpg", _photo(seed, (640, 480)))}),
                                    range(6)))
        statuses = [status for status, _, _ in results]
        assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}
        busy = next(headers for status, _, headers in results if status == 503)
        assert int(busy["retry-after"]) > 0
        health = json.loads(urllib.request.urlopen(server.url + "/api/health", timeout=5).read())
        assert health["refused_busy"] == statuses.count(503) and health["in_flight"] == 0
    finally:
        server.stop()


def test_the_page_serves_its_own_scripts_and_nothing_from_the_network(server):
    page = urllib.request.urlopen(server.url + "/", timeout=5).read().decode()
    assert "http://" not in page and "https://" not in page
    for asset in ("/static/viewer/attention_view.js", "/static/viewer/attention_view.css"):
        assert urllib.request.urlopen(server.url + asset, timeout=5).status == 200
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server.url + "/static/../../pretrained/MODEL_CARD.md", timeout=5)
    assert missing.value.code == 404


def test_serve_refuses_a_missing_model_in_one_line():
    finished = subprocess.run([sys.executable, "-m", "captioner", "serve", "--model", "no/such.keras"],
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2
    assert finished.stderr.strip() == "error: no/such.keras: no such model file"


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium")
def test_upload_a_photo_in_the_page_and_hovering_a_word_changes_the_map(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(_photo(3, (200, 150)))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("#beam option", state="attached")
        started = time.time()
        page.set_input_files("#files", str(photo))
        page.wait_for_selector("#entry-0[data-ready='1'] .word", timeout=REQUEST_SECONDS * 1000)
        seconds = time.time() - started
        canvas = page.locator("#entry-0 canvas")

        def pixels():
            return np.array(canvas.evaluate("c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"))

        plain = pixels()
        page.hover("#entry-0 .word[data-index='1']")
        assert canvas.get_attribute("data-word") == "1"
        first = pixels()
        page.focus("#entry-0 .word[data-index='0']")  # the keyboard reaches the words too
        assert canvas.get_attribute("data-word") == "0"
        second = pixels()
        downloads = page.locator("#entry-0 .downloads a").all_inner_texts()
        browser.close()
    assert not np.array_equal(plain, first) and not np.array_equal(first, second)
    assert any("JSON" in text for text in downloads) and any("PNG" in text for text in downloads)
    print(f"caption on the page {seconds:.2f} s after the upload")


def test_an_upload_that_takes_too_long_ends_with_504():
    server = Server("--model", "soft", "--workers", "1", "--timeout", "0.001")
    try:
        status, result, _ = server.post({"beam": "10"}, {"image": ("photo.jpg", _photo(5, (640, 480)))})
        assert status == 504 and "longer than" in result["error"]
        assert json.loads(urllib.request.urlopen(server.url + "/api/health", timeout=5).read())["status"] == "ok"
    finally:
        assert server.stop() == 0
