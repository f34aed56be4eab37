"""Named datasets: what a name means and how its folder is obtained.

Each entry is `configs/datasets/<name>.yaml`: its `catalog:` section says what the set is
(layout, image size, paired test, source, how to get it) and its `data:` section holds the
datamodule settings, so the same file serves `i2ibench fit --config` and the bench. Kinds:
- builtin: generated from scikit-image's photographs (`data.embedded`);
- download: a public archive, fetched with resume and a sha256 check, extracted safely;
- prepare: a raw folder the user has (`i2ibench data prepare NAME --from DIR`, or the folder
  named by the entry's environment variable, prepared automatically on first use); an entry
  with a `fetch:` section (sketch-photo) otherwise downloads its raw files on first use, each
  checked against a committed sha256 manifest (`data.cufs`), and prepares them.
Any folder in one of the suite's layouts works too: pass its path instead of a name.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from i2ibench import files
from i2ibench.data import embedded
from i2ibench.data.cufs import fetch_pinned_files
from i2ibench.data.download import download, safe_extract
from i2ibench.data.images import DataError
from i2ibench.data.prepare import PREPARERS
from i2ibench.registry import CONFIG_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    kind: str  # builtin, download or prepare
    layout: str  # two-domain, multi-domain or mask
    image_size: int
    paired_test: bool
    source: str
    config: Path
    options: dict[str, Any] = field(default_factory=dict)  # urls/sha256/size, preparer/source_env, ...

    @property
    def folder(self) -> Path:
        return files.home() / "datasets" / self.name


@lru_cache(maxsize=1)
def entries() -> dict[str, DatasetEntry]:
    found = {}
    for path in sorted((CONFIG_DIR / "datasets").glob("*.yaml")):
        spec = (yaml.safe_load(path.read_text()) or {}).get("catalog")
        if not spec:
            continue
        name = path.stem
        keys = ("kind", "layout", "image_size", "paired_test", "source")
        found[name] = DatasetEntry(name, *(spec[k] for k in keys), config=path,
                                   options={k: v for k, v in spec.items() if k not in keys})
    return found


def known_names() -> list[str]:
    return sorted(entries())


def resolve(name_or_path: str | Path, fetch: bool = True) -> Path:
    """The folder of a dataset: a catalog name (obtained on first use when `fetch`) or a folder."""
    name = str(name_or_path)
    entry = entries().get(name)
    if entry is None:
        path = Path(name).expanduser()
        if path.is_dir():
            return path
        raise DataError(f"unknown dataset {name!r}: not a catalog name and not a folder. "
                        f"Known names: {', '.join(known_names())}.")
    if entry.kind == "builtin":
        return embedded.materialize(name)
    if entry.folder.is_dir():
        return entry.folder
    if not fetch:
        raise DataError(f"dataset {name!r} is not available yet at {entry.folder}; it is obtained by "
                        "prepare_data() on the first process (or `i2ibench data prepare`).")
    if entry.kind == "download":
        return fetch_archive(entry)
    # A raw folder the user named wins over a download; one named but absent is a typo, not a
    # reason to download.
    variable = entry.options.get("source_env", "")
    source = os.environ.get(variable, "") if variable else ""
    if source:
        if not Path(source).is_dir():
            raise DataError(f"${variable}={source}: not a folder. Point it at the raw {name} folder "
                            f"({entry.source}), or unset it" + (" to download the set." if "fetch" in entry.options
                                                                 else "."))
        log.warning(f"{name}: preparing from ${variable}={source}")
        return prepare(name, Path(source))
    if "fetch" in entry.options:
        raw = fetch_pinned_files(name, entry.options["fetch"], entry.config.parent)
        return prepare(name, raw)
    raise DataError(f"dataset {name!r} must be prepared from its raw files first: "
                    f"`i2ibench data prepare {name} --from DIR` ({entry.source})"
                    + (f", or set ${variable} to DIR" if variable else ""))


def fetch_archive(entry: DatasetEntry) -> Path:
    """Download, check and extract a catalog archive; the dataset folder appears only when complete."""
    options = entry.options
    archive = files.home() / "downloads" / f"{entry.name}.zip"
    download(options["urls"], archive, options["sha256"], options.get("size"))
    with files.atomic_directory(entry.folder) as tmp:
        safe_extract(archive, tmp)
        inner = tmp / options.get("archive_folder", entry.name)
        if inner.is_dir():  # the CycleGAN archives hold one top folder named after the set
            for child in inner.iterdir():
                child.rename(tmp / child.name)
            inner.rmdir()
    return entry.folder


def prepare(name: str, source: Path) -> Path:
    entry = entries().get(name)
    if entry is None or entry.kind != "prepare":
        preparable = [n for n, e in entries().items() if e.kind == "prepare"]
        raise DataError(f"{name!r} is not a dataset that is prepared from raw files; those are: {preparable}")
    PREPARERS[entry.options["preparer"]](Path(source), entry.folder)
    return entry.folder
