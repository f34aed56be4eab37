"""EvaluationCallback: judges every method the same way, on 1 process or N.

Lightning runs the validation / test loops; the method's `validation_step` / `test_step`
return translations (`translate(batch, task)`), and this callback turns them into metrics:
it knows tasks, never method internals. Validation runs every `check_val_every_n_epoch`
epochs (Lightning's own interval) on the val split, or the test split when there is none (then
tracked only, never used to pick a checkpoint); `i2ibench test` evaluates the test split.
Under DDP each process translates its unpadded share, features are all-gathered by
torchmetrics, every process computes the same numbers, and rank 0 writes the JSON record.

Two guards keep numbers true. The Inception (and LPIPS) networks are built in `setup`, before
the first training step, so missing or broken weights stop a run before it trains, not after.
Translations that hold NaN or infinite values are never scored (8-bit quantisation would turn
them into black images with a normal-looking FID): the evaluation raises `NonFiniteOutputError`
naming the task, the epoch, the step and the checkpoint, and writes no record.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger

from i2ibench import files
from i2ibench.data.tasks import Task, parse_task, rename_domains
from i2ibench.metrics.evaluator import Evaluator
from i2ibench.metrics.record import build_record
from i2ibench.metrics.suite import DistributionSettings

log = logging.getLogger(__name__)

class NonFiniteOutputError(RuntimeError):
    """A method's translations hold NaN or infinite values: the evaluation is refused, no record is written."""


LOGGED = ("fid", "kid_mean", "kid_std", "is_mean", "kernel_mmd2", "mmd_xu", "wasserstein", "nn1_accuracy", "precision",
          "recall", "lpips_diversity")


def reference_names(task: str, paired: bool, masked: bool) -> tuple[str, ...]:
    """What a task's translations are compared with: two-domain tasks, the source (and the ground truth
    when paired, the background in mask mode); multi-domain tasks, the ground truth when paired only
    (source and translation are of different domains)."""
    if parse_task(task).mode is not None:
        return ("gt",) if paired else ()
    return ("source",) + (("gt",) if paired else ()) + (("background",) if masked else ())


def batch_references(task: Task, batch: dict) -> dict[str, torch.Tensor]:
    """The images of `reference_names` in one evaluation batch (multi-domain: the first style is compared)."""
    if task.mode is not None:
        return {"gt": batch["gt"]} if "gt" in batch else {}
    references = {"source": batch[task.source]}
    if f"{task.target}_gt" in batch:
        references["gt"] = batch[f"{task.target}_gt"]
    if f"{task.source}_masks" in batch:  # mask tasks: the source outside its instances
        references["background"] = batch[task.source]
        references["background_mask"] = batch[f"{task.source}_masks"].amax(dim=1, keepdim=True)
    return references


class EvaluationCallback(Callback):
    """Args:
        method: the registered method name written into records (configs set it).
        weights: Inception weights file (None: $I2IBENCH_INCEPTION_WEIGHTS, else the official download).
        kid_subset_size, kid_subsets, is_splits, prc_neighborhood: metric protocol settings.
        seed: KID subsets, IS splits and the MMD bandwidth sample; 2020 (torch-fidelity's) reproduces its
            subsets and splits.
        lpips: LPIPS backbone (alex, vgg, squeeze), random-alex (plumbing tests only) or off.
        output_dir: where JSON records go (default: <default_root_dir>/eval).
        checkpoint_selection: how the evaluated checkpoint was chosen, for `test` records
            (last, best-on-validation); in-training evaluations are marked `in-training` (the
            report's optional best-on-test selection is made from in-training test records).
        bootstrap_resamples, bootstrap_level: the percentile intervals over test images saved with every
            number (`metrics/bootstrap.py`); 0 resamples switches them off.
        domain_names: the dataset's names of domains A and B (e.g. {"A": "cat", "B": "dog"}) when a
            two-domain model is trained on one pair of a multi-domain dataset: records and logs name its
            tasks as the multi-domain methods' (`cat->dog@latent`), so that the bench's tables line them up.
        dataset_name: the name records file the dataset under (default: `data.dataset`); the bench names
            a pair's view by the multi-domain dataset it is part of.
    """

    def __init__(self, method: str | None = None, weights: str | None = None, kid_subset_size: int | None = None,
                 kid_subsets: int = 100, is_splits: int = 10, prc_neighborhood: int = 3, seed: int = 2020,
                 lpips: str = "alex", output_dir: str | None = None, checkpoint_selection: str = "last",
                 domain_names: dict[str, str] | None = None, dataset_name: str | None = None,
                 bootstrap_resamples: int = 1000, bootstrap_level: float = 0.95) -> None:
        self.method, self.weights, self.lpips = method, weights, lpips
        self.domain_names, self.dataset_name = dict(domain_names or {}), dataset_name
        self.settings = DistributionSettings(kid_subset_size, kid_subsets, is_splits, prc_neighborhood, seed=seed,
                                             bootstrap_resamples=bootstrap_resamples, bootstrap_level=bootstrap_level)
        self.output_dir = Path(output_dir) if output_dir else None
        self.checkpoint_selection = checkpoint_selection
        self.evaluator: Evaluator | None = None
        self.last_record: dict[str, Any] | None = None
        self.records: list[Path] = []
        self._active = False
        self._nonfinite: Counter = Counter()  # task -> translations with a NaN / inf, this evaluation
        self._nonfinite_example: dict[str, str] = {}  # task -> a source file of one of them
        self._counts: dict[str, int] = {}

    # -- Lightning hooks -----------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Load the metric networks now: missing or broken weights stop the run before its first training step."""
        if self.evaluator is None and self._will_evaluate(trainer, stage):
            self.evaluator = Evaluator(self.weights, self.settings, self.lpips, pl_module.device)

    @staticmethod
    def _will_evaluate(trainer: pl.Trainer, stage: str) -> bool:
        if stage in ("validate", "test"):
            return True
        return stage == "fit" and trainer.limit_val_batches != 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        every, max_epochs = trainer.check_val_every_n_epoch, trainer.max_epochs
        if every and max_epochs and max_epochs > 0 and max_epochs % every:
            log.warning(f"max_epochs ({max_epochs}) is not a multiple of check_val_every_n_epoch ({every}): "
                        "the final epoch will not be evaluated during fit (run `i2ibench test` after it).")

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._begin(trainer, pl_module)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._begin(trainer, pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, trainer.datamodule.eval_split,
                     "in-training" if trainer.state.fn == "fit" else self.checkpoint_selection)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "test", self.checkpoint_selection)

    # -- the evaluation ------------------------------------------------------------------------
    def _begin(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._active = not trainer.sanity_checking  # the sanity check translates, but is not scored
        if not self._active:
            return
        if self.evaluator is None:
            self.evaluator = Evaluator(self.weights, self.settings, self.lpips, pl_module.device)
        self.evaluator.to(pl_module.device)
        datamodule = trainer.datamodule
        split = "test" if trainer.testing else datamodule.eval_split
        tasks = datamodule.eval_tasks()
        paired, masked = datamodule.is_paired(split), datamodule.mode == "mask"
        references = {task: reference_names(task, paired, masked) for task in tasks}
        counts = {task: len(datamodule.eval_dataset(split, task)) * datamodule.styles_per_source(task) for task in tasks}
        styled = tuple(task for task in tasks if parse_task(task).styled)
        sync_device = pl_module.device if trainer.world_size > 1 else None
        self.evaluator.begin(references, counts, sync_device, diversity=styled)
        self._counts = counts
        self._nonfinite.clear()
        self._nonfinite_example.clear()
        self._started = time.perf_counter()

    def _update(self, fake: torch.Tensor, batch: dict) -> None:
        if not self._active:
            return
        task = parse_task(batch["task"][0])
        fake = self._guard_finite(task.name, fake, batch)
        self.evaluator.update(task.name, batch["index"], fake, **batch_references(task, batch))

    def _guard_finite(self, task: str, fake: torch.Tensor, batch: dict) -> torch.Tensor:
        """Count the translations holding a NaN or inf (scored, they would pass as black images).

        They are replaced by finite values only so that every process keeps feeding the metric
        states in step (DDP gathers them); `_finish` then refuses the whole evaluation.
        """
        finite = torch.isfinite(fake.flatten(2 if fake.dim() == 5 else 1))  # per image (N x K for K styles)
        finite = finite.all(dim=-1)
        if bool(finite.all()):
            return fake
        self._nonfinite[task] += int((~finite).sum())
        paths = next((batch[k] for k in batch if k.endswith("_path")), None)
        if paths is not None and task not in self._nonfinite_example:
            bad_sources = (~finite).view(finite.shape[0], -1).any(dim=1)
            source = int(torch.nonzero(bad_sources)[0, 0])
            self._nonfinite_example[task] = str(paths[source])
        return torch.nan_to_num(fake.detach(), nan=0.0, posinf=1.0, neginf=-1.0)

    def _refuse_nonfinite(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        """Raise on every process (so none waits in a collective) when any process saw a non-finite translation."""
        local = sum(self._nonfinite.values())
        total = local
        if trainer.world_size > 1:
            total = int(trainer.strategy.reduce(torch.tensor(float(local), device=pl_module.device), reduce_op="sum"))
        if total == 0:
            return
        epoch, step = self._position(trainer, pl_module)
        where = (f"{split} evaluation at epoch {epoch}, step {step}, checkpoint "
                 f"{trainer.ckpt_path or 'none (in-training weights)'}")
        tasks = "; ".join(f"task {task}: {n} of {self._counts.get(task, '?')} translations"
                          + (f" (e.g. of {self._nonfinite_example[task]})" if task in self._nonfinite_example else "")
                          for task, n in sorted(self._nonfinite.items())) or f"{total} translations on another process"
        raise NonFiniteOutputError(
            f"{where}: the method's translations contain NaN or infinite values ({tasks}); no evaluation record "
            "was written. The model has diverged: lower the learning rate, or resume from an earlier checkpoint.")

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str, selection: str) -> None:
        if not self._active:
            return
        self._active = False
        self._refuse_nonfinite(trainer, pl_module, split)
        datamodule, strategy = trainer.datamodule, trainer.strategy
        real, cached = {}, {}
        for task in self.evaluator.suites:
            target = parse_task(task).target
            real[task], cached[target] = self.evaluator.real_features(
                datamodule.images[split][target], datamodule.eval_transform.crop_size,
                lambda: datamodule.real_dataloader(split, target),
                agree=lambda hit: strategy.broadcast(hit, src=0), is_writer=trainer.is_global_zero,
                barrier=strategy.barrier)
        metrics, unavailable = self.evaluator.finish(real)
        if self.domain_names:
            metrics, unavailable = ({rename_domains(task, self.domain_names): v for task, v in table.items()}
                                    for table in (metrics, unavailable))
        for task, values in metrics.items():
            for name, value in values.items():
                if value is not None and (name in LOGGED or name.split("_")[0] in ("ssim", "psnr", "lpips")):
                    pl_module.log(f"{split}/{task}/{name}", float(value), sync_dist=True)
        # One number to choose checkpoints by: the mean FID over the method's tasks.
        pl_module.log(f"{split}/fid_mean", sum(v["fid"] for v in metrics.values()) / len(metrics), sync_dist=True)
        epoch, step = self._position(trainer, pl_module)
        record = self._record(trainer, pl_module, split, selection, metrics, unavailable, cached, epoch, step)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                logger.experiment.config.update({"protocol": record["protocol"]}, allow_val_change=True)
        self.last_record = record
        if trainer.is_global_zero:
            folder = self.output_dir or Path(trainer.default_root_dir) / "eval"
            path = folder / f"{split}-{selection}-epoch{epoch:04d}-step{step}.json"
            files.write_json(path, record)
            self.records.append(path)

    @staticmethod
    def _position(trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[int, int]:
        """(epochs completed, global step) of the evaluated weights.

        In training, validation ends epoch `current_epoch`; a test of a checkpoint takes the
        checkpoint's own counters (`TranslationModule.loaded_checkpoint`), not the trainer's.
        """
        if trainer.state.fn == "fit":
            return trainer.current_epoch + 1, trainer.global_step
        loaded = getattr(pl_module, "loaded_checkpoint", None)
        if trainer.ckpt_path and loaded:
            return loaded["epoch"], loaded["global_step"]
        return getattr(pl_module, "epochs_completed", trainer.current_epoch), trainer.global_step

    def _record(self, trainer, pl_module, split: str, selection: str, metrics: dict, unavailable: dict,
                cached: dict, epoch: int, step: int) -> dict:
        datamodule = trainer.datamodule
        timings = {**self.evaluator.timings, "total_s": time.perf_counter() - self._started,
                   "world_size": trainer.world_size, "real_features_cached": cached}
        config = {
            "model": {"class_path": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
                      "init_args": dict(pl_module.hparams)},
            "data": dict(datamodule.hparams),
            "trainer": {"max_epochs": trainer.max_epochs, "precision": str(trainer.precision),
                        "world_size": trainer.world_size, "accelerator": type(trainer.accelerator).__name__},
        }
        return build_record(
            dataset={"name": self.dataset_name or str(datamodule.dataset), "root": str(datamodule.layout.root),
                     "split": split,
                     "paired": datamodule.is_paired(split),
                     **({"domain_names": self.domain_names} if self.domain_names else {})},
            method=self.method or type(pl_module).__name__, config=config, seed=datamodule.seed,
            step=step, epoch=epoch,
            checkpoint={"selection": selection, "path": str(trainer.ckpt_path) if trainer.ckpt_path else None},
            protocol=self.evaluator.card(datamodule.eval_transform.crop_size), metrics=metrics,
            unavailable=unavailable, timings=timings)
