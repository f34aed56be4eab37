"""Named datasets: what a dataset name means and how its folder is obtained."""

from __future__ import annotations

from pathlib import Path

from i2ibench.data import embedded
from i2ibench.data.images import DataError


def known_names() -> list[str]:
    return sorted(embedded.BUILTINS)


def resolve(name_or_path: str | Path) -> Path:
    """The folder of a dataset: a built-in name (generated on first use) or an existing folder."""
    name = str(name_or_path)
    if name in embedded.BUILTINS:
        return embedded.materialize(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    raise DataError(f"unknown dataset {name!r}: not a known name ({', '.join(known_names())}) "
                    "and not an existing folder.")
