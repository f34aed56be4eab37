"""On-disk cache of real-image features, so a dataset's reference set is extracted once.

The key covers what changes the features: every file (path, size, modification time), the
evaluation image size, the extractor and the weights' sha256. Entries are written atomically.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor

from i2ibench import files
from i2ibench.metrics.inception import EXTRACTOR_NAME

CACHE_VERSION = 1


def features_key(paths: list[Path], image_size: int | None, weights_sha256: str) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{EXTRACTOR_NAME}|{weights_sha256}|{image_size}".encode())
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"|{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def cache_path(key: str) -> Path:
    return files.home() / "real-features" / f"{key}.pt"


def load(key: str) -> Tensor | None:
    path = cache_path(key)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)["features"]


def save(key: str, features: Tensor, paths: list[Path]) -> None:
    with files.atomic_path(cache_path(key)) as tmp:
        torch.save({"features": features.float().contiguous(), "paths": [str(p) for p in paths]}, tmp)
