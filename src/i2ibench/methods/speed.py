"""SpeedOptions: ways to run a method faster without changing its maths, one flag each.

- channels_last: networks and image batches in NHWC memory format. cuDNN prefers it (tensor cores);
  on CPU it made the CycleGAN step 15% slower here (results/perf/train_speed.json), so the default
  `None` turns it on only for CUDA;
- fused_adam: Adam's fused kernels (CUDA; CPU since PyTorch 2.4) instead of the multi-tensor loop;
- compile: `torch.compile` of each network, with `compile_mode` `default`, `reduce-overhead`
  (CUDA graphs, for static shapes) or `max-autotune`;
- bf16 mixed precision is Lightning's own `--trainer.precision bf16-mixed` (the metrics' Inception
  pass stays float32 either way).
benchmarks/train_speed.py measures each on the machine at hand; the defaults are the ones that
were faster there and gave the same losses (README, "Speed").
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


class SpeedOptions(Callback):
    def __init__(self, channels_last: bool | None = None, fused_adam: bool = True, compile: bool = False,
                 compile_mode: str = "default") -> None:
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile_mode {compile_mode!r}; use one of {COMPILE_MODES}")
        self.channels_last, self.fused_adam, self.compile, self.compile_mode = (
            channels_last, fused_adam, compile, compile_mode)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.channels_last is None:  # auto: NHWC where it is faster (CUDA), NCHW on CPU
            self.channels_last = trainer.strategy.root_device.type == "cuda"
        # Before configure_optimizers, which builds Adam through TranslationModule.adam.
        if hasattr(pl_module, "adam_implementation"):
            pl_module.adam_implementation = {"fused": True} if self.fused_adam else {}

    # Networks are changed once the module's own `setup` has run: Lightning calls callbacks' `setup`
    # first, and a method may build networks there (StarGAN v2 with num_domains from the dataset).
    # `.to(memory_format=...)` and `compile` keep parameter identity, so the optimisers stay valid.
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply_layout(pl_module)
        if self.compile:
            for net in pl_module.children():
                net.compile(mode=None if self.compile_mode == "default" else self.compile_mode)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._apply_layout(pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self._apply_layout(pl_module)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._apply_layout(pl_module)

    def _apply_layout(self, pl_module: pl.LightningModule) -> None:
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.channels_last and isinstance(batch, dict):
            for key, value in batch.items():
                if isinstance(value, torch.Tensor) and value.dim() == 4 and value.is_floating_point():
                    batch[key] = value.contiguous(memory_format=torch.channels_last)
