"""Where i2ibench keeps its caches, and writing files atomically (temp file + rename).

A reader never sees half a file: a result record, a sample grid or a prepared dataset either
exists complete or not at all, even when a run is killed while writing it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def home() -> Path:
    """Cache root for prepared datasets and real-image statistics: $I2IBENCH_HOME or ~/.cache/i2ibench."""
    return Path(os.environ.get("I2IBENCH_HOME") or Path.home() / ".cache" / "i2ibench")


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path | str, data: Any) -> None:
    """Strict JSON: non-finite floats (PSNR of identical images is inf) are written as "inf" / "nan"."""
    write_text(path, json.dumps(finite_json(data), indent=2, allow_nan=False, default=_json_default) + "\n")


def finite_json(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return str(data)  # "inf", "-inf", "nan"
    if isinstance(data, dict):
        return {key: finite_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(value) for value in data]
    return data


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def save_image(path: Path | str, image: Any) -> None:
    """Save a PIL image atomically; the format follows the file extension."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format=_PIL_FORMATS.get(path.suffix.lower(), "PNG"))


_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


@contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():  # another process finished first; its copy is as good as ours
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
