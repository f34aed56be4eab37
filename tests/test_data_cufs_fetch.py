"""sketch-photo fetched on first use, end to end, against a real HTTP server on 127.0.0.1.

The server (started and stopped by each test) serves the real CUFS student files of
../shared/datasets/cufs-student at the paths raw.githubusercontent.com gives them
(`/chaofengc/Face-Sketch/<commit>/Data/...`); `I2IBENCH_CUFS_URL` points the catalog at it. It
honours `Range: bytes=N-` and can close a response cleanly after K body bytes while its
Content-Length promised them all (a dropped connection, as Python's HTTP client sees it).
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import re
import threading

import numpy as np
import pytest
from PIL import Image

from i2ibench.data import catalog
from i2ibench.data.cufs import fetch_pinned_files, read_manifest
from i2ibench.data.folders import detect_layout
from i2ibench.data.images import DataError
from i2ibench.errors import UserError

from conftest import SHARED_DATASETS

RAW = SHARED_DATASETS / "cufs-student"
pytestmark = pytest.mark.skipif(not RAW.is_dir(), reason="../shared/datasets/cufs-student not present")
TIMEOUT = 5  # seconds per socket operation: a hung test fails instead of waiting
SPEC = catalog.entries()["sketch-photo"].options["fetch"]
PREFIX = f"/{SPEC['repository']}/{SPEC['commit']}"


class RawFileHandler(http.server.BaseHTTPRequestHandler):
    timeout = TIMEOUT

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        with owner.lock:
            owner.requests.append((self.path, self.headers.get("Range")))
            cuts = owner.cuts.get(self.path)
            cut = cuts.pop(0) if cuts else None
        data = owner.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if (requested := self.headers.get("Range")) is not None:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut])  # HTTP/1.0: the connection closes after this


class RawFileServer:
    """The shared CUFS files by their repository path, with per-path overrides and cuts."""

    def __init__(self) -> None:
        self.files = {f"{PREFIX}/Data/{path.relative_to(RAW).as_posix()}": path.read_bytes()
                      for path in RAW.rglob("*.png")}
        self.cuts: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RawFileHandler)
        self.httpd.owner = self
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}{PREFIX}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A running server, and a fresh cache whose sketch-photo comes from it (no $I2IBENCH_CUFS_DIR)."""
    running = RawFileServer()
    running.thread.start()
    monkeypatch.setenv("I2IBENCH_HOME", str(tmp_path))
    monkeypatch.delenv("I2IBENCH_CUFS_DIR", raising=False)
    monkeypatch.setenv(SPEC["url_env"], running.base)
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()
    running.thread.join(TIMEOUT)


def repo_path(relative: str) -> str:
    return f"{PREFIX}/Data/{relative}"


def test_the_manifest_lists_exactly_the_shared_student_files():
    """The shared copy came from the pinned commit's `Data/` (checked blob by blob when pinning)."""
    manifest = read_manifest(catalog.entries()["sketch-photo"].config.parent / SPEC["manifest"])
    shared = {f"Data/{p.relative_to(RAW).as_posix()}": hashlib.sha256(p.read_bytes()).hexdigest()
              for p in RAW.rglob("*") if p.is_file()}
    assert manifest == shared and len(manifest) == 2 * (88 + 100)


def test_first_use_downloads_checks_and_prepares_the_set(server, caplog):
    with caplog.at_level(logging.WARNING):
        folder = catalog.resolve("sketch-photo")
    assert detect_layout(folder).kind == "two-domain"
    counts = {name: len(list((folder / name).iterdir())) for name in ("trainA", "trainB", "testA", "testB")}
    assert counts == {"trainA": 88, "trainB": 88, "testA": 100, "testB": 100}
    for split, raw_split in (("train", "CUHK_student_train"), ("test", "CUHK_student_test")):
        for domain, kind in (("A", "sketches"), ("B", "photos")):
            for raw in sorted((RAW / raw_split / kind).iterdir()):
                prepared = np.asarray(Image.open(folder / f"{split}{domain}" / f"{raw.stem}.png"))
                np.testing.assert_array_equal(prepared, np.asarray(Image.open(raw).convert("RGB")), err_msg=str(raw))
    assert len(server.requests) == 376 and all(rng is None for _, rng in server.requests)
    said = caplog.text
    assert "github.com/chaofengc/Face-Sketch" in said and SPEC["commit"] in said and "research use" in said
    assert catalog.resolve("sketch-photo") == folder and len(server.requests) == 376  # once only


def test_a_file_with_a_wrong_sha256_is_one_error_naming_it(server, tmp_path):
    bad = "CUHK_student_test/photos/05.png"
    data = bytearray(server.files[repo_path(bad)])
    data[len(data) // 2] ^= 0xFF
    server.files[repo_path(bad)] = bytes(data)
    with pytest.raises(DataError) as caught:
        catalog.resolve("sketch-photo")
    message = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in message
    assert f"Data/{bad}" in message and "checksum mismatch" in message and SPEC["manifest"] in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message
    assert not catalog.entries()["sketch-photo"].folder.exists()  # nothing half-prepared


def test_a_file_the_server_lacks_is_an_error_naming_it(server):
    missing = "CUHK_student_train/sketches/10.png"
    del server.files[repo_path(missing)]
    with pytest.raises(DataError, match=re.escape(f"Data/{missing}")) as caught:
        catalog.resolve("sketch-photo")
    assert "404" in str(caught.value)


def test_a_connection_dropped_mid_file_is_resumed(server):
    """Two files cut mid-body: each is finished by a Range request for the bytes it lacks."""
    cut_files = ["CUHK_student_test/sketches/42.png", "CUHK_student_train/photos/03.png"]
    for relative in cut_files:
        server.cuts[repo_path(relative)] = [len(server.files[repo_path(relative)]) // 2]
    entry = catalog.entries()["sketch-photo"]
    raw = fetch_pinned_files("sketch-photo", SPEC, entry.config.parent, timeout=TIMEOUT)  # the preparer is tested above
    for relative in cut_files:
        half = len(server.files[repo_path(relative)]) // 2
        assert [rng for path, rng in server.requests if path == repo_path(relative)] == [None, f"bytes={half}-"]
        assert (raw / relative).read_bytes() == (RAW / relative).read_bytes()
    assert len(server.requests) == 376 + len(cut_files)


def test_the_raw_folder_variable_wins_over_the_download(server, monkeypatch, tmp_path):
    """$I2IBENCH_CUFS_DIR (the Makefile sets it from ../shared) is prepared; nothing is requested.
    A two-pair copy of the raw layout keeps this quick."""
    small = tmp_path / "cufs-small"
    for split in ("CUHK_student_train", "CUHK_student_test"):
        for kind in ("photos", "sketches"):
            (small / split / kind).mkdir(parents=True)
            for raw in sorted((RAW / split / kind).iterdir())[:2]:
                (small / split / kind / raw.name).write_bytes(raw.read_bytes())
    monkeypatch.setenv("I2IBENCH_CUFS_DIR", str(small))
    folder = catalog.resolve("sketch-photo")
    assert len(list((folder / "testB").iterdir())) == 2 and server.requests == []


def test_a_raw_folder_variable_naming_no_folder_is_an_error_not_a_download(server, monkeypatch, tmp_path):
    monkeypatch.setenv("I2IBENCH_CUFS_DIR", str(tmp_path / "typo"))
    with pytest.raises(DataError, match=r"\$I2IBENCH_CUFS_DIR=.*typo: not a folder"):
        catalog.resolve("sketch-photo")
    assert server.requests == []


@pytest.mark.parametrize("line", ["0123  Data/x.png", "a" * 64 + "  /etc/passwd", "a" * 64 + "  Data/../../x.png"])
def test_a_malformed_or_escaping_manifest_line_is_refused(tmp_path, line):
    manifest = tmp_path / "m.sha256"
    manifest.write_text("b" * 64 + "  Data/ok.png\n" + line + "\n")
    with pytest.raises(DataError, match=r"m\.sha256:2: "):
        read_manifest(manifest)
