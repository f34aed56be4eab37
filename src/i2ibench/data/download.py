"""Downloading and unpacking public dataset archives: resumable, checksummed, safely extracted."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from i2ibench.data.images import DataError

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(urls: list[str], target: Path, sha256: str, size: int | None = None, timeout: float = 60) -> Path:
    """Fetch `target` from the first URL that works, resuming a partial `<target>.part`.

    The finished file must match `sha256`; a mismatch deletes it (a resumed download could
    otherwise stay corrupt forever) and raises DataError saying so.
    """
    from tqdm import tqdm

    if target.is_file() and sha256_of(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    errors = []
    for url in urls:
        have = partial.stat().st_size if partial.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                resumed = have and response.status == 206
                if not resumed:
                    have = 0  # the server ignored the range: start over
                total = size or (have + int(response.headers.get("Content-Length", 0))) or None
                with open(partial, "ab" if resumed else "wb") as out, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, desc=target.name) as bar:
                    for chunk in iter(lambda: response.read(CHUNK), b""):
                        out.write(chunk)
                        bar.update(len(chunk))
            break
        except (urllib.error.URLError, OSError) as err:
            errors.append(f"{url}: {err}")
    else:
        kept = f"\nThe partial file {partial} is kept; running again resumes it." if partial.exists() else ""
        raise DataError(f"could not download {target.name}:\n  " + "\n  ".join(errors) + kept)
    actual = sha256_of(partial)
    if actual != sha256:
        partial.unlink()
        raise DataError(f"{target.name}: checksum mismatch (sha256 {actual}, expected {sha256}); "
                        "the corrupted download was deleted. Run again to download it afresh.")
    partial.replace(target)
    return target


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
