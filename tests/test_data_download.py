"""Resumable, checksummed downloads against a real HTTP server on 127.0.0.1.

The server (started and stopped by each test) serves a zip of real images from ../shared/datasets,
honours `Range: bytes=N-` (206, or 416 past the end) and can close the connection cleanly after K
bytes of a response while its Content-Length promised the whole file: the failure that Python's
HTTP client reports as a normal end of data, and that used to end as a "checksum mismatch".
"""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from i2ibench.data import catalog
from i2ibench.data.download import download
from i2ibench.data.folders import detect_layout
from i2ibench.data.images import DataError
from i2ibench.errors import UserError

from conftest import SHARED_DATASETS, needs_shared_data

pytestmark = needs_shared_data
TIMEOUT = 5  # seconds per socket operation: a hung test fails instead of waiting


class ArchiveHandler(http.server.BaseHTTPRequestHandler):
    """Serves the owner's byte strings by path; `cuts[path]` lists, per coming response, how many
    body bytes to send before closing the connection cleanly (the headers promise them all)."""

    timeout = TIMEOUT

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        owner.requests.append((self.path, self.headers.get("Range")))
        data = owner.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if (requested := self.headers.get("Range")) is not None:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cuts = owner.cuts.get(self.path)
        self.wfile.write(body[:cuts.pop(0)] if cuts else body)  # HTTP/1.0: the connection closes after this


class ArchiveServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cuts: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
        self.httpd.owner = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def serve(self, path: str, data: bytes, cuts: list[int] | None = None) -> str:
        self.files[path] = data
        self.cuts[path] = list(cuts or [])
        return self.url + path


@pytest.fixture
def server():
    running = ArchiveServer()
    running.thread.start()
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()
    running.thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def archive() -> bytes:
    """A stored zip of real images (the AFHQ samples, in a CycleGAN-archive layout), about 0.3 MB."""
    images = sorted((SHARED_DATASETS / "afhq-samples").rglob("*.jpg"))[:8]
    assert len(images) == 8, "../shared/datasets/afhq-samples should hold at least 8 images"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        for n, image in enumerate(images):
            split, domain = ("train", "test")[n % 2], "AB"[n // 2 % 2]
            bundle.writestr(zipfile.ZipInfo(f"toy/{split}{domain}/{image.name}"), image.read_bytes())
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def part_of(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def test_a_good_download_is_verified_and_moved_into_place(server, archive, tmp_path):
    url = server.serve("/toy.zip", archive)
    target = tmp_path / "dl" / "toy.zip"
    assert download([url], target, sha256(archive), size=len(archive), timeout=TIMEOUT) == target
    assert target.read_bytes() == archive and not part_of(target).exists()
    assert server.requests == [("/toy.zip", None)]
    download([url], target, sha256(archive), timeout=TIMEOUT)  # already there and valid: nothing fetched
    assert len(server.requests) == 1


@pytest.mark.parametrize("catalog_size", [True, False], ids=["catalog-size", "content-length"])
def test_a_connection_closed_mid_file_resumes_on_the_mirror(server, archive, tmp_path, catalog_size):
    """The short read is told by the catalog's size, or without one by the server's Content-Length."""
    cut = len(archive) // 3
    primary = server.serve("/primary/toy.zip", archive, cuts=[cut])
    mirror = server.serve("/mirror/toy.zip", archive)
    target = tmp_path / "toy.zip"
    download([primary, mirror], target, sha256(archive), size=len(archive) if catalog_size else None,
             timeout=TIMEOUT)
    assert server.requests == [("/primary/toy.zip", None), ("/mirror/toy.zip", f"bytes={cut}-")]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha256(archive)


def test_without_a_mirror_the_same_url_is_retried_with_range_requests(server, archive, tmp_path):
    first, second = 50_000, 70_000
    url = server.serve("/toy.zip", archive, cuts=[first, second])
    target = tmp_path / "toy.zip"
    download([url], target, sha256(archive), timeout=TIMEOUT)
    assert server.requests == [("/toy.zip", None), ("/toy.zip", f"bytes={first}-"),
                               ("/toy.zip", f"bytes={first + second}-")]
    assert target.read_bytes() == archive


@pytest.mark.parametrize("catalog_size", [True, False], ids=["catalog-size", "unknown-size"])
def test_a_complete_part_is_verified_before_any_request(server, archive, tmp_path, catalog_size):
    """An earlier run got every byte but stopped before the rename: nothing is requested at all
    (a Range request from its end would only earn a 416)."""
    url = server.serve("/toy.zip", archive)
    target = tmp_path / "toy.zip"
    part_of(target).write_bytes(archive)
    download([url], target, sha256(archive), size=len(archive) if catalog_size else None, timeout=TIMEOUT)
    assert server.requests == []
    assert target.read_bytes() == archive and not part_of(target).exists()


@pytest.mark.parametrize("damage", ["longer", "corrupt"])
def test_a_416_answer_verifies_the_part_and_restarts_a_wrong_one(server, archive, tmp_path, damage):
    """Without a catalog size, a `.part` as long as the file (or longer) asks for a range past the
    end; the server's 416 means it is complete or wrong, and a wrong one is fetched afresh."""
    url = server.serve("/toy.zip", archive)
    target = tmp_path / "toy.zip"
    stale = archive + b"trailing bytes" if damage == "longer" else b"\0" * 100 + archive[100:]
    part_of(target).write_bytes(stale)
    download([url], target, sha256(archive), timeout=TIMEOUT)
    assert server.requests == [("/toy.zip", f"bytes={len(stale)}-"), ("/toy.zip", None)]
    assert target.read_bytes() == archive


def test_a_full_length_wrong_part_is_discarded_before_any_range_request(server, archive, tmp_path):
    """With the catalog's size, a `.part` of that size that fails the checksum cannot be resumed."""
    url = server.serve("/toy.zip", archive)
    target = tmp_path / "toy.zip"
    part_of(target).write_bytes(b"\0" * 100 + archive[100:])
    download([url], target, sha256(archive), size=len(archive), timeout=TIMEOUT)
    assert server.requests == [("/toy.zip", None)]
    assert target.read_bytes() == archive


def test_a_wrong_checksum_is_one_clear_error_naming_the_file(server, archive, tmp_path):
    url = server.serve("/toy.zip", archive)
    target = tmp_path / "toy.zip"
    with pytest.raises(DataError) as caught:
        download([url], target, "0" * 64, size=len(archive), timeout=TIMEOUT)
    message = str(caught.value)
    assert isinstance(caught.value, UserError)
    assert "\n" not in message and str(target) in message and "checksum mismatch" in message
    assert sha256(archive) in message and "deleted" in message
    assert not target.exists() and not part_of(target).exists()  # a corrupt .part must not be resumed


def test_a_server_that_keeps_dropping_ends_after_bounded_attempts_keeping_the_part(server, archive, tmp_path):
    url = server.serve("/toy.zip", archive, cuts=[10_000] * 10)
    target = tmp_path / "toy.zip"
    with pytest.raises(DataError, match=r"could not download .*toy\.zip") as caught:
        download([url], target, sha256(archive), size=len(archive), timeout=TIMEOUT, max_attempts=3)
    assert len(server.requests) == 3
    assert part_of(target).read_bytes() == archive[:30_000]  # kept: the next run resumes from here
    assert "running again resumes it" in str(caught.value)


def test_dead_urls_stop_after_one_round(server, archive, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/toy.zip"
    target = tmp_path / "toy.zip"
    with pytest.raises(DataError, match="HTTP 404") as caught:
        download([closed, f"{server.url}/missing.zip"], target, sha256(archive), timeout=TIMEOUT)
    assert server.requests == [("/missing.zip", None)]
    assert str(target) in str(caught.value) and "\n" not in str(caught.value)


def test_a_catalog_archive_resumes_from_its_mirror_and_is_extracted(server, archive, tmp_path, monkeypatch):
    """The catalog's `urls` are the host then its mirrors; its `size` tells a short read."""
    cut = len(archive) // 2
    urls = [server.serve("/cyclegan/toy.zip", archive, cuts=[cut]), server.serve("/mirror/toy.zip", archive)]
    monkeypatch.setenv("I2IBENCH_HOME", str(tmp_path / "home"))
    entry = catalog.DatasetEntry("toy", "download", "two-domain", 64, False, "test archive", Path("toy.yaml"),
                                 {"urls": urls, "sha256": sha256(archive), "size": len(archive),
                                  "archive_folder": "toy"})
    folder = catalog.fetch_archive(entry)
    assert server.requests == [("/cyclegan/toy.zip", None), ("/mirror/toy.zip", f"bytes={cut}-")]
    assert detect_layout(folder).kind == "two-domain"
    assert sum(1 for _ in folder.rglob("*.jpg")) == 8
