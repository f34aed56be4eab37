"""Converters from a dataset's raw layout into the suite's layout."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from i2ibench import files
from i2ibench.data.images import DataError, check_images, list_images, load_rgb, raise_for_bad

log = logging.getLogger(__name__)


def prepare_cufs(source: Path, target: Path) -> None:
    """CUHK face sketch database (student part) -> sketch-photo: A = sketches, B = photos.

    Raw layout (as in chaofengc/Face-Sketch, `Data/`): {CUHK_student_train,CUHK_student_test}/
    {photos,sketches}/ with a photo and its sketch sharing a file name. Every image is decoded,
    converted to RGB (some sketches are palette PNGs) and written as PNG. The test split stays
    paired by name; a test photo without its sketch is an error.
    """
    splits = {"train": "CUHK_student_train", "test": "CUHK_student_test"}
    missing = [str(source / raw / kind) for raw in splits.values() for kind in ("photos", "sketches")
               if not (source / raw / kind).is_dir()]
    if missing:
        raise DataError(f"{source}: not a CUFS folder; missing {', '.join(missing)}. Expected "
                        "CUHK_student_train/{photos,sketches}/ and CUHK_student_test/{photos,sketches}/.")
    converted = 0
    with files.atomic_directory(target) as tmp:
        for split, raw in splits.items():
            sketches, photos = list_images(source / raw / "sketches"), list_images(source / raw / "photos")
            raise_for_bad(check_images(sketches + photos).bad)
            if split == "test" and sorted(p.stem for p in sketches) != sorted(p.stem for p in photos):
                unmatched = sorted({p.stem for p in sketches} ^ {p.stem for p in photos})
                raise DataError(f"{source / raw}: test photos and sketches must pair by name; unmatched: {unmatched[:5]}")
            for domain, paths in (("A", sketches), ("B", photos)):
                folder = tmp / f"{split}{domain}"
                folder.mkdir()
                for path in paths:
                    # Fast zlib level: a cache, read far more often than written; level 6 took
                    # 2.5x as long for 376 CUFS images, for smaller files only.
                    load_rgb(path).save(folder / f"{path.stem}.png", compress_level=1)
                    converted += 1
    log.warning(f"prepared sketch-photo from {source}: {converted} images decoded to RGB PNG into {target}")


PREPARERS: dict[str, Callable[[Path, Path], None]] = {"cufs": prepare_cufs}
