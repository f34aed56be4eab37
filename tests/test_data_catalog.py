"""Dataset catalog, CUFS preparation on the real shared files, and the downloader on a local server."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2ibench.data import catalog
from i2ibench.data.download import download, safe_extract
from i2ibench.data.folders import detect_layout
from i2ibench.data.images import DataError

from conftest import SHARED_DATASETS, needs_shared_data


def test_catalog_entries_are_complete():
    entries = catalog.entries()
    assert {"builtin", "sketch-photo", "horse2zebra", "monet2photo", "summer2winter_yosemite"} <= set(entries)
    for name, entry in entries.items():
        assert entry.layout in ("two-domain", "multi-domain", "mask"), name
        assert entry.kind in ("builtin", "download", "prepare"), name
        if entry.kind == "download":
            assert len(entry.options["sha256"]) == 64 and entry.options["urls"], name


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError) as err:
        catalog.resolve("horse2zebraa")
    assert "horse2zebraa" in str(err.value) and "horse2zebra" in str(err.value) and "sketch-photo" in str(err.value)


def test_a_folder_in_a_suite_layout_is_a_dataset(builtin_root):
    assert catalog.resolve(str(builtin_root)) == builtin_root


@needs_shared_data
def test_cufs_preparation_on_the_real_files(tmp_path, monkeypatch):
    monkeypatch.setenv("I2IBENCH_HOME", str(tmp_path))
    raw = SHARED_DATASETS / "cufs-student"
    folder = catalog.prepare("sketch-photo", raw)
    layout = detect_layout(folder)
    assert layout.kind == "two-domain"
    counts = {name: len(list((folder / name).iterdir())) for name in ("trainA", "trainB", "testA", "testB")}
    assert counts == {"trainA": 88, "trainB": 88, "testA": 100, "testB": 100}
    assert sorted(p.name for p in (folder / "testA").iterdir()) == sorted(p.name for p in (folder / "testB").iterdir())
    # palette sketches became RGB, pixel for pixel
    raw_sketch = next(p for p in sorted((raw / "CUHK_student_train" / "sketches").iterdir())
                      if Image.open(p).mode == "P")  # the training sketches are palette PNGs
    converted = Image.open(folder / "trainA" / f"{raw_sketch.stem}.png")
    assert converted.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(converted), np.asarray(Image.open(raw_sketch).convert("RGB")))
    assert catalog.resolve("sketch-photo") == folder  # prepared once, found afterwards


def test_cufs_preparation_rejects_a_wrong_folder(tmp_path):
    with pytest.raises(DataError, match="CUHK_student_train"):
        catalog.prepare("sketch-photo", tmp_path)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that honours `Range: bytes=N-` (resumed downloads), quietly."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.headers.get("Range", ""))  # before answering: the client may finish first
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if (header := self.headers.get("Range", "")).startswith("bytes="):
            start = int(header[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.shutdown()


def dataset_zip(names: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in names.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def png_bytes(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 0, 0)).save(out, format="PNG")
    return out.getvalue()


def test_download_checks_the_sha256(server, tmp_path):
    root, url, _ = server
    payload = dataset_zip({"toy/trainA/a.png": png_bytes(1)})
    (root / "toy.zip").write_bytes(payload)
    target = tmp_path / "dl" / "toy.zip"
    download([f"{url}/toy.zip"], target, hashlib.sha256(payload).hexdigest())
    assert target.read_bytes() == payload

    wrong = tmp_path / "dl" / "bad.zip"
    (root / "bad.zip").write_bytes(payload)
    with pytest.raises(DataError, match="checksum mismatch") as err:
        download([f"{url}/bad.zip"], wrong, "0" * 64)
    assert "deleted" in str(err.value)
    assert not wrong.exists() and not wrong.with_name("bad.zip.part").exists()


def test_download_resumes_a_partial_file_and_falls_back_to_a_mirror(server, tmp_path):
    root, url, httpd = server
    payload = bytes(range(256)) * 400
    (root / "big.zip").write_bytes(payload)
    target = tmp_path / "dl" / "big.zip"
    target.parent.mkdir()
    target.with_name("big.zip.part").write_bytes(payload[:30_000])  # an interrupted earlier download
    download([f"{url}/missing.zip", f"{url}/big.zip"], target, hashlib.sha256(payload).hexdigest())
    assert target.read_bytes() == payload
    assert "bytes=30000-" in httpd.requests  # only the rest was fetched


def test_extraction_refuses_paths_outside_the_target(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(dataset_zip({"ok/trainA/a.png": b"x", "../../escape.txt": b"pwned"}))
    with pytest.raises(DataError, match="outside"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "ok").exists()


def test_fetching_a_catalog_archive_end_to_end(server, tmp_path, monkeypatch):
    """A catalog entry pointing at the local server: download, check, extract, detect the layout."""
    root, url, _ = server
    files = {f"toy/{split}{d}/{i}.png": png_bytes(i) for split in ("train", "test") for d in "AB" for i in range(2)}
    payload = dataset_zip(files)
    (root / "toy.zip").write_bytes(payload)
    monkeypatch.setenv("I2IBENCH_HOME", str(tmp_path / "home"))
    entry = catalog.DatasetEntry("toy", "download", "two-domain", 8, False, "test archive", Path("toy.yaml"),
                                 {"urls": [f"{url}/toy.zip"], "sha256": hashlib.sha256(payload).hexdigest(),
                                  "archive_folder": "toy"})
    folder = catalog.fetch_archive(entry)
    assert detect_layout(folder).kind == "two-domain"
    assert len(list((folder / "trainA").iterdir())) == 2
