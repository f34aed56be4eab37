"""Downloading and unpacking public dataset archives: resumable, checksummed, safely extracted.

A download goes to `<target>.part` and becomes `target` only once its sha256 matches. A connection
that ends early, even one that closes cleanly mid-file (Python's HTTP client reports that as a
normal end of data), is a short read, found by comparing the bytes received with the expected
size (the catalog's, else the server's Content-Length / Content-Range): the `.part` is kept and the
next attempt, on the next mirror (the same URL when there is none), resumes it with an HTTP Range
request. A `.part` that may already be complete is verified before any Range request; a 416 (range
not satisfiable) answer means the `.part` is complete or wrong: it is verified, and a wrong one is
discarded and fetched afresh. Attempts are bounded, and the `.part` survives every failure but a
checksum mismatch.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from i2ibench.data.images import DataError

CHUNK = 1 << 20
MAX_ATTEMPTS = 10  # requests for one file, over all its URLs


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Attempt:
    """What one request achieved: every expected byte is in the `.part` (`complete`), or why not."""

    complete: bool
    progress: bool = False  # the .part changed (bytes arrived, or a wrong one was discarded)
    problem: str = ""


def download(urls: list[str], target: Path, sha256: str, size: int | None = None, timeout: float = 60,
             max_attempts: int = MAX_ATTEMPTS, show_bar: bool = True) -> Path:
    """Fetch `target` from `urls` (the first, then the others as mirrors), resuming `<target>.part`.

    `size` (bytes, when the catalog pins it) is what a complete file must have; without it the
    server's length is used. Attempts go round the URLs, at most `max_attempts` in all, and stop
    early once every URL in turn made no progress. Raises DataError naming the file when no attempt
    completed it (the `.part` is kept: running again resumes it) or when the complete file's sha256
    is wrong (the `.part` is deleted: resuming a corrupt file could never succeed).
    """
    target = Path(target)
    if not urls:
        raise DataError(f"{target.name}: no download URL is configured (catalog entry `urls:`).")
    if target.is_file() and sha256_of(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")

    # A .part that may be complete is verified before anything is requested: asking for the bytes
    # after its end would only earn a 416.
    have = partial.stat().st_size if partial.exists() else 0
    if have and (size is None or have >= size):
        if sha256_of(partial) == sha256:
            return partial.replace(target)
        if size is not None:  # as long as the file (or longer) and wrong: none of it can be trusted
            partial.unlink()

    problems: dict[str, str] = {}
    stalled = 0  # consecutive attempts that changed nothing
    for attempt_number in range(max_attempts):
        url = urls[attempt_number % len(urls)]
        attempt = fetch_once(url, partial, sha256, size, timeout, target.name, show_bar)
        if attempt.complete:
            actual = sha256_of(partial)
            if actual != sha256:
                partial.unlink()
                raise DataError(f"{target}: checksum mismatch: the file from {url} has sha256 {actual}, expected "
                                f"{sha256}; the corrupted download was deleted. Run again to download it afresh, "
                                "or correct the catalog entry's sha256.")
            return partial.replace(target)
        problems[url] = attempt.problem
        stalled = 0 if attempt.progress else stalled + 1
        if stalled >= max(2, len(urls)):
            break
    have = partial.stat().st_size if partial.exists() else 0
    kept = (f" The partial file {partial} ({have} of {size or 'unknown'} bytes) is kept; running again resumes it."
            if have else "")
    raise DataError(f"could not download {target}: " + "; ".join(f"{u}: {p}" for u, p in problems.items()) + "." + kept)


def fetch_once(url: str, partial: Path, sha256: str, size: int | None, timeout: float, label: str,
               show_bar: bool = True) -> Attempt:
    """One request: the rest of `partial` (a Range request when it has bytes), appended to it."""
    from tqdm import tqdm

    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing after byte `have`: the .part is complete, or wrong
            if sha256_of(partial) == sha256:
                return Attempt(complete=True)
            partial.unlink()
            return Attempt(complete=False, progress=True,
                           problem=f"HTTP 416 for bytes {have}-: the partial file was longer than the file or "
                                   "corrupt, and was discarded")
        return Attempt(complete=False, problem=f"HTTP {err.code} {err.reason}")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        return Attempt(complete=False, problem=str(getattr(err, "reason", err)))

    with response:
        resumed = have > 0 and response.status == 206
        if resumed and content_range_start(response) != have:
            return Attempt(complete=False, problem=f"asked for bytes {have}-, the server sent "
                                                   f"{response.headers.get('Content-Range')!r}")
        start = have if resumed else 0  # a 200 answer to a Range request is the whole file: start over
        served = server_total(response, start)
        if size is not None and served is not None and served != size:
            return Attempt(complete=False, problem=f"the server has {served} bytes, the catalog expects {size}")
        expected = size if size is not None else served
        received, problem = 0, ""
        try:
            with open(partial, "ab" if resumed else "wb") as out, tqdm(
                    total=expected, initial=start, unit="B", unit_scale=True, desc=label,
                    disable=not show_bar) as bar:  # many small files: the caller draws one bar
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (http.client.HTTPException, OSError) as err:  # reset, timeout, IncompleteRead: bytes so far kept
            problem = f"connection lost ({err})"
    total = start + received
    if expected is None:  # nothing to compare with: a clean end is the end
        return Attempt(complete=not problem, progress=received > 0, problem=problem)
    if total >= expected:
        return Attempt(complete=True)
    return Attempt(complete=False, progress=received > 0,
                   problem=problem or f"connection closed after {total} of {expected} bytes (short read; resumable)")


def content_range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def server_total(response, start: int) -> int | None:
    """The full file's length as the server states it: Content-Range's total, else start + Content-Length."""
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def safe_extract(archive: Path, destination: Path) -> None:
    """Unzip `archive` into `destination`, refusing any entry that would land outside it."""
    destination = destination.resolve()
    with zipfile.ZipFile(archive) as bundle:
        for entry in bundle.infolist():
            path = (destination / entry.filename).resolve()
            if path != destination and destination not in path.parents:
                raise DataError(f"{archive}: entry {entry.filename!r} would be written outside {destination}; "
                                "refusing to extract this archive.")
            mode = entry.external_attr >> 16
            if (mode & 0o170000) == 0o120000:
                raise DataError(f"{archive}: entry {entry.filename!r} is a symbolic link; refusing to extract.")
        for entry in bundle.infolist():
            if entry.is_dir():
                (destination / entry.filename).mkdir(parents=True, exist_ok=True)
                continue
            path = destination / entry.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(entry) as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out)
