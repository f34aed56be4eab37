"""The CUFS student files fetched on first use: raw files at a pinned commit, each one checksummed.

A `prepare` catalog entry may carry a `fetch:` section (configs/datasets/sketch-photo.yaml does):
a public repository, a pinned commit, file URL templates and a manifest of `<sha256>  <path>`
lines (the format `sha256sum -c` reads). Every listed file is downloaded one by one with
`download.download`, which resumes a dropped connection with a Range request and accepts a file
only when its sha256 equals the manifest's. The files, not the repository archive, because a
GitHub archive is generated on request (its bytes, and so its checksum, are not stable, and its
Range support is not promised) and holds the whole repository (about three times the 22 MB
needed), while a file at a commit is byte-stable. The checked raw folder is then handed to the
entry's preparer.
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from i2ibench import files
from i2ibench.data.download import download
from i2ibench.data.images import DataError

log = logging.getLogger(__name__)

WORKERS = 8  # parallel requests: hundreds of small files, each one round trip
_LINE = re.compile(r"([0-9a-f]{64}) [ *](\S.*)")


def read_manifest(path: Path) -> dict[str, str]:
    """`{path in the repository: sha256}` from a `sha256sum` file; a malformed or unsafe line is an error."""
    manifest: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line)
        relative = PurePosixPath(match.group(2)) if match else None
        if relative is None or relative.is_absolute() or ".." in relative.parts:
            raise DataError(f"{path}:{number}: expected '<sha256>  <relative path>' (64 lowercase hex digits, "
                            f"no absolute path, no '..'), got {line[:100]!r}")
        manifest[str(relative)] = match.group(1)
    if not manifest:
        raise DataError(f"{path}: the manifest lists no files")
    return manifest


def file_urls(spec: dict[str, Any]) -> list[str]:
    """URL templates with `{path}` left open: the environment's base URL when set, else the catalog's list."""
    base = os.environ.get(spec.get("url_env", ""), "").strip()
    if base:
        return [base.rstrip("/") + "/{path}"]
    return [url.replace("{commit}", spec["commit"]) for url in spec["urls"]]


def describe(name: str, spec: dict[str, Any], count: int, urls: list[str]) -> str:
    """What is downloaded, from where, and on what terms: said before the first byte."""
    return (f"{name}: downloading {count} files from github.com/{spec['repository']} at commit {spec['commit']} "
            f"(folder {spec['root']}/) as {urls[0].replace('{path}', '<path>')}, each checked against "
            f"{spec['manifest']}. "
            f"Terms: {' '.join(str(spec.get('terms', '')).split())}")


def fetch_pinned_files(name: str, spec: dict[str, Any], manifest_dir: Path, timeout: float = 60) -> Path:
    """Download every file of `spec`'s manifest (resumed, sha256-checked) and return the raw folder.

    Files land in `<cache>/downloads/<name>/<commit>/<path>`; ones already there with the right
    sha256 are not fetched again. The first failure (a wrong sha256, a file the server lacks, a
    connection that cannot be resumed) stops the remaining downloads and raises one DataError that
    names the file; files already checked stay, so running again fetches only the rest.
    """
    manifest_path = manifest_dir / spec["manifest"]
    manifest = read_manifest(manifest_path)
    urls = file_urls(spec)
    destination = files.home() / "downloads" / name / spec["commit"]
    log.warning(describe(name, spec, len(manifest), urls))

    def fetch(relative: str) -> None:
        try:
            download([url.replace("{path}", quote(relative)) for url in urls], destination / relative,
                     manifest[relative], timeout=timeout, show_bar=False)
        except DataError as err:
            raise DataError(f"{name}: {relative} (github.com/{spec['repository']} at {spec['commit'][:12]}, "
                            f"checksums in {manifest_path}): {err}") from err

    from tqdm import tqdm

    pool = ThreadPoolExecutor(WORKERS)
    try:
        with tqdm(total=len(manifest), unit="file", desc=name) as bar:
            futures = [pool.submit(fetch, relative) for relative in sorted(manifest)]
            for future in futures:
                future.add_done_callback(lambda _: bar.update(1))
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [future.exception() for future in futures if future in done and future.exception() is not None]
        if failed:
            raise failed[0]
    finally:  # on an error or Ctrl-C, files not yet started are dropped; running ones finish theirs
        pool.shutdown(wait=True, cancel_futures=True)
    return destination / spec["root"]
