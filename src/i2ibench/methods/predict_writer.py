"""Writes the translations of `i2ibench predict` as image files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from i2ibench import files
from i2ibench.methods.base import to_pil


class TranslationWriter(BasePredictionWriter):
    """Saves each translated image as `<output_dir>/<task>/<source stem>.png` (written atomically).

    Several styles per source (N x K outputs, StarGAN v2) are saved side by side in one image.
    """

    def __init__(self, output_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(self, trainer, pl_module, prediction: dict, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int) -> None:
        folder = self.output_dir / prediction["task"].replace("->", "_to_").replace("@", "_")
        for path, image in zip(prediction["paths"], prediction["images"]):
            if image.dim() == 4:  # K styles of one source: one row
                image = torch.cat(list(image), dim=2)
            files.save_image(folder / f"{Path(path).stem}.png", to_pil(image.mul(0.5).add(0.5).clamp(0, 1)))
