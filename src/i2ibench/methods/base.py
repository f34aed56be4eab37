"""TranslationModule: what every method shares.

A method subclasses it, builds its networks, and implements `training_step` (manual
optimisation: GANs alternate generator and discriminator updates) and `translate`. The base
provides the evaluation steps (Lightning runs the loop, the EvaluationCallback consumes what
they return), per-epoch scheduler steps, sample grids, the guard that stops a run at its first
non-finite loss, and the checkpoint extras that make a resumed run continue exactly (RNG states
and whatever `extra_state` a method adds).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor, nn
from torchvision.utils import make_grid

from i2ibench import files
from i2ibench.data.tasks import parse_task, two_domain_tasks
from i2ibench.errors import NonFiniteLossError
from i2ibench.methods.recipe import check_epoch_schedule


class TranslationModule(pl.LightningModule):
    """Base class of every i2ibench method. Subclasses set `dataset_mode` and implement the contract."""

    dataset_mode = "two-domain"  # which datasets the method can train on: two-domain, multi-domain, mask

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.epochs_completed = 0  # our own count: Lightning's checkpoint "epoch" is the index of the last one
        self.loaded_checkpoint: dict | None = None
        self.adam_implementation: dict[str, bool] = {}  # {"fused": True} from SpeedOptions; {} lets PyTorch choose
        self.unchecked_losses: list[tuple[int, int, dict[str, Tensor]]] = []  # (step, epoch, losses) not yet checked
        self.rng_to_restore: dict | None = None  # a resumed fit's RNG states, applied at its first batch

    def adam(self, params, lr: float, betas: tuple[float, float], weight_decay: float = 0.0) -> torch.optim.Adam:
        """Adam as every method builds it; the implementation (fused / foreach) does not change the maths."""
        return torch.optim.Adam(list(params), lr=lr, betas=betas, weight_decay=weight_decay, **self.adam_implementation)

    # -- the contract --------------------------------------------------------------------------
    def translate(self, batch: dict, task: str) -> Tensor:
        """Translate the task's source images in `batch`; returns images in [-1, 1]."""
        raise NotImplementedError

    def eval_tasks(self, domains: tuple[str, ...]) -> list[str]:
        """The evaluation tasks this method is judged on, for a dataset with these domains."""
        return two_domain_tasks()

    def extra_state(self) -> dict:
        """State outside parameters and optimisers that a resumed run needs (e.g. image pools)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def log_losses(self, losses: dict[str, Tensor], batch_size: int) -> None:
        """Every loss term: per step as `train/<name>` (this process's value, no collective per step)
        and per epoch as `train_epoch/<name>` (mean over all processes, synced once per epoch).

        Every method passes its terms through here, so this is also where they are watched for
        NaN / inf (`check_losses_finite`)."""
        detached = {name: value.detach() for name, value in losses.items()}
        if self._trainer is not None:
            self.unchecked_losses.append((self.trainer.fit_loop.total_batch_idx, self.current_epoch, detached))
        self.log_dict({f"train/{k}": v for k, v in detached.items()}, on_step=True, on_epoch=False,
                      batch_size=batch_size)
        self.log_dict({f"train_epoch/{k}": v for k, v in detached.items()}, on_step=False, on_epoch=True,
                      sync_dist=True, batch_size=batch_size)

    # -- evaluation: Lightning owns the loop, the EvaluationCallback the metrics ---------------
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.translate(batch, batch["task"][0])

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.translate(batch, batch["task"][0])

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        task = parse_task(batch["task"][0])
        paths = batch["x_path"] if task.mode else batch[f"{task.source}_path"]  # multi-domain items name x
        return {"task": task.name, "paths": paths, "images": self.translate(batch, task.name)}

    # -- the non-finite loss guard ---------------------------------------------------------------
    def check_losses_finite(self) -> None:
        """Raise NonFiniteLossError naming the first step with a NaN / inf loss term since the last check.

        Reading a flag from an accelerator waits for its queued work (a host sync), so there the
        terms are collected on the device and checked together every `log_every_n_steps` batches
        (Lightning syncs to log then anyway), and always before anything is kept: a checkpoint, a
        validation, the end of an epoch or of training. A diverged GPU run may thus train up to that
        many more steps, but nothing from after the first bad step is saved or evaluated, and the
        message names that first step. On CPU there is no sync to save: every batch is checked.
        """
        if not self.unchecked_losses:
            return
        pending, self.unchecked_losses = self.unchecked_losses, []
        flags: dict[torch.device, list[tuple[int, Tensor]]] = {}  # per device: (entry, all-finite flag)
        for entry, (_, _, losses) in enumerate(pending):
            for flag in finite_flags(losses):
                flags.setdefault(flag.device, []).append((entry, flag))
        bad = set()
        for items in flags.values():
            on_host = torch.stack([flag for _, flag in items]).cpu().tolist()  # one host sync per device
            bad |= {entry for (entry, _), ok in zip(items, on_host) if not ok}
        if not bad:
            return
        step, epoch, losses = pending[min(bad)]
        terms = ", ".join(f"{name}={float(value):g}" for name, value in losses.items()
                          if not math.isfinite(float(value)))
        raise NonFiniteLossError(
            f"non-finite loss at step {step} (epoch {epoch}): {terms}; training stopped, and nothing from this "
            "step on was saved or evaluated. Lower the learning rate (--model.init_args.lr) or check the data.")

    def on_fit_start(self) -> None:
        super().on_fit_start()
        # every epoch-scheduled method (n_epochs at constant lr, then n_epochs_decay): refuse a longer run
        if "n_epochs" in self.hparams and "n_epochs_decay" in self.hparams:
            check_epoch_schedule(self.trainer, self.hparams.n_epochs, self.hparams.n_epochs_decay)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.rng_to_restore is not None:
            # Re-applied here, at the first resumed batch, rather than only at load time: whatever ran
            # in between (sanity check, data loader start) must not shift what training draws next.
            set_rng_states(self.rng_to_restore)
            self.rng_to_restore = None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        every = 1 if self.device.type == "cpu" else max(1, self.trainer.log_every_n_steps)
        if (self.trainer.fit_loop.total_batch_idx + 1) % every == 0:
            self.check_losses_finite()

    def on_validation_start(self) -> None:
        self.check_losses_finite()

    def on_train_end(self) -> None:
        self.check_losses_finite()

    # -- schedules and samples -----------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        # Runs before ModelCheckpoint saves, so a checkpoint holds the already-stepped schedulers.
        self.check_losses_finite()
        self.epochs_completed = self.current_epoch + 1
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()
        if self.trainer.is_global_zero:
            self.save_sample_grid()

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> Tensor:
        """Rows of input | translation | reconstruction, for each two-domain direction."""
        rows = []
        for task in two_domain_tasks():
            source, target = task[0], task[2]
            real = inputs[source].to(self.device)
            fake = self.translate({source: real}, task)
            rec = self.translate({target: fake}, f"{target}2{source}")
            rows += image_rows(real, fake, rec)
        return grid_of_rows(rows, per_line=min(4, len(rows)))

    def save_sample_grid(self) -> Path | None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "sample_batch"):
            return None
        was_training = self.training
        self.eval()
        grid = self.sample_grid(datamodule.sample_batch())
        self.train(was_training)
        path = Path(self.trainer.default_root_dir) / "samples" / f"epoch_{self.current_epoch:04d}.png"
        files.save_image(path, to_pil(grid))
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="samples", images=[str(path)], step=self.global_step)
        return path

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_losses_finite()  # raising here aborts the save: no checkpoint of diverged weights
        checkpoint["i2ibench"] = {"rng": rng_states(), "extra": self.extra_state(),
                                  "epochs_completed": self.epochs_completed}
        # LightningCLI re-parses a checkpoint's hyperparameters by this key; a model built from
        # Python rather than the CLI lacks it, and `i2ibench test --ckpt_path` would reject it.
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"].setdefault("_class_path", f"{type(self).__module__}.{type(self).__qualname__}")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("i2ibench")
        if saved:
            self.epochs_completed = saved["epochs_completed"]
            # `trainer.test(ckpt_path=...)` does not restore the trainer's counters: evaluation
            # records read the evaluated weights' epoch and step from here.
            self.loaded_checkpoint = {"epoch": self.epochs_completed, "global_step": checkpoint.get("global_step")}
            set_rng_states(saved["rng"])
            if self._trainer is not None and self.trainer.state.fn == "fit":
                self.rng_to_restore = saved["rng"]
            self.load_extra_state(saved["extra"])


def finite_flags(losses: dict[str, Tensor]) -> list[Tensor]:
    """One 0-d bool tensor per device the terms live on: are all of them finite? (No host sync.)"""
    groups: dict[torch.device, list[Tensor]] = {}
    for value in losses.values():
        groups.setdefault(value.device, []).append(value.reshape(-1).float())
    return [torch.isfinite(torch.cat(values)).all() for values in groups.values()]


def set_requires_grad(nets: tuple[nn.Module, ...], flag: bool) -> None:
    """Freeze or unfreeze networks (the discriminators during a generator update)."""
    for net in nets:
        net.requires_grad_(flag)


def image_rows(*columns: Tensor) -> list[Tensor]:
    """One image row per item: the i-th image of every column (N x 3 x H x W each) side by side."""
    return [torch.cat(row, dim=2) for row in zip(*columns)]


def grid_of_rows(rows: list[Tensor], per_line: int = 1) -> Tensor:
    """Rows of a sample grid stacked into one image, mapped from [-1, 1] to [0, 1] (what `to_pil` saves)."""
    return make_grid(torch.stack(rows), nrow=per_line, padding=2, normalize=True, value_range=(-1, 1))


def to_pil(grid: Tensor):
    from PIL import Image

    array = grid.mul(255).add_(0.5).clamp_(0, 255).to("cpu", torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def rng_states() -> dict:
    """Every global RNG state, as tensors and plain Python values (checkpoints load with weights_only)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    states = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
