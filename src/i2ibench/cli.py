"""The `i2ibench` command.

- `fit | validate | test | predict`: LightningCLI with YAML configs (`--method NAME` is short for
  `--config configs/methods/NAME.yaml`);
- `methods`: the registered methods with a one-line description each;
- the other verbs (eval, bench, compare, data) live in `i2ibench.commands`.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.strategies import DDPStrategy

from i2ibench.checkpointing import AtomicCheckpointIO, RunCheckpoint, last_checkpoints
from i2ibench.data import I2IDataModule
from i2ibench.errors import ConfigError, NonFiniteLossError, report_user_errors, verbose_requested
from i2ibench.methods import TranslationModule
from i2ibench.methods.predict_writer import TranslationWriter
from i2ibench.methods.speed import SpeedOptions
from i2ibench.metrics.callback import EvaluationCallback
from i2ibench.registry import METHODS, load_all

# The best-on-validation checkpoint monitors val/fid_mean, which exists only after the epochs that
# evaluate (`check_val_every_n_epoch`); on the others ModelCheckpoint keeps the previous best and
# would warn once per epoch that the key is missing.
warnings.filterwarnings("ignore", message=r".*ModelCheckpoint\(monitor='val/fid_mean'\)` could not find")

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
EXIT_TRAINING_FAILED = 1  # the run started but cannot go on (a non-finite loss); bad input exits 2
SPECIAL_CKPT_PATHS = ("last", "best", "hpc")


class I2IBenchCLI(LightningCLI):
    """LightningCLI with the suite's defaults: CSV + offline W&B logging, `last.ckpt` written atomically
    at every epoch end (and every `--checkpoint.last_every_n_batches` batches), `--ckpt_path last`
    that says when there is nothing to resume."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(EvaluationCallback, "evaluation")
        parser.add_lightning_class_args(SpeedOptions, "speed")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 0,
                             "checkpoint.save_on_train_epoch_end": True})
        # Always under the run folder, so `--ckpt_path last` finds the previous run's last.ckpt.
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath",
                              compute_fn=lambda root: str(Path(root or ".") / "checkpoints"))
        parser.add_argument("--wandb.enabled", type=bool, default=True, help="log to Weights & Biases (offline by default)")
        parser.add_argument("--wandb.project", type=str, default="i2ibench")
        parser.add_argument("--wandb.group", type=str | None, default=None)
        parser.add_argument("--wandb.name", type=str | None, default=None)
        parser.add_argument("--wandb.tags", type=list[str], default=[])
        parser.add_argument("--wandb.config", type=dict, default={}, help="extra W&B config fields (e.g. an ablation value)")
        parser.add_argument("--catalog", type=dict | None, default=None,
                            help="dataset catalog metadata of configs/datasets/*.yaml (read by the bench, unused here)")
        parser.add_argument("--predict_dir", type=str | None, default=None,
                            help="predict: folder for translated images (default: <root>/predictions)")
        parser.link_arguments("seed_everything", "data.seed", compute_fn=lambda seed: seed if isinstance(seed, int) else 0)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        root = Path(config.get("default_root_dir") or ".")
        settings = self._get(self.config, "wandb")
        if config.get("logger") is True:  # not configured by the user: the suite's loggers
            loggers = [CSVLogger(str(root), name="csv")]
            if settings.enabled:
                loggers.append(WandbLogger(save_dir=str(root), project=settings.project, group=settings.group,
                                           name=settings.name, tags=list(settings.tags), config=dict(settings.config),
                                           offline=os.environ.get("WANDB_MODE") == "offline"))
            config["logger"] = loggers
        config["strategy"] = gan_ddp_strategy(config.get("strategy"))
        config["plugins"] = with_atomic_checkpoints(config.get("plugins"))
        if self.subcommand == "predict":
            callbacks.append(TranslationWriter(self._get(self.config, "predict_dir") or root / "predictions"))
        return super()._instantiate_trainer(config, callbacks)

    # `before_<verb>` hooks run after the trainer is built and before the verb runs.
    def before_fit(self) -> None:
        self._resolve_ckpt_path("fit")

    def before_validate(self) -> None:
        self._resolve_ckpt_path("validate")

    def before_test(self) -> None:
        self._resolve_ckpt_path("test")

    def before_predict(self) -> None:
        self._resolve_ckpt_path("predict")

    def _resolve_ckpt_path(self, verb: str) -> None:
        """`--ckpt_path last` without a checkpoint: fit says so in one line and starts fresh (Lightning
        only warns, among its other output); the other verbs would evaluate untrained weights, so
        they stop. A checkpoint file that does not exist is an error before anything runs."""
        settings = self.config_init[verb]
        path = settings.get("ckpt_path")
        if path is None:
            return
        if path == "last":
            folders = [Path(cb.dirpath) for cb in self.trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
            if any(last_checkpoints(folder) for folder in folders):
                return
            where = ", ".join(str(folder) for folder in folders) or "the run folder (checkpointing is off)"
            if verb != "fit":
                raise ConfigError(f"--ckpt_path last: no checkpoint in {where}; train first, or pass a "
                                  "checkpoint file to --ckpt_path.")
            if rank_zero_only.rank == 0:
                print(f"i2ibench: no checkpoint in {where}; starting fresh", file=sys.stderr, flush=True)
            settings["ckpt_path"] = None
        elif str(path) not in SPECIAL_CKPT_PATHS and "://" not in str(path) and not Path(path).is_file():
            raise ConfigError(f"--ckpt_path {path}: no such checkpoint file; pass an existing .ckpt file, "
                              "or `last` to resume the run in --trainer.default_root_dir.")


def with_atomic_checkpoints(plugins: Any) -> Any:
    """The trainer's plugins plus AtomicCheckpointIO, unless the user configured a CheckpointIO."""
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


def gan_ddp_strategy(strategy: Any) -> Any:
    """`ddp` / `ddp_spawn` -> DDPStrategy(find_unused_parameters=True, broadcast_buffers=False).

    - A GAN step alternates generator and discriminator updates, each backward leaving the other
      network's parameters without gradients; plain DDP then fails ("parameters that were not used
      in producing the loss"). Telling DDP to look for unused parameters is the supported fix.
    - Evaluation shards the images without padding, so processes may run one batch fewer; a
      forward through DDP that broadcasts buffers (spectral norm's u, v) would then deadlock. The
      nets' buffers need no broadcast: weights stay identical across processes, and so do the
      power iterations computed from them (StyleGAN2-ADA trains with the same setting).
    """
    if strategy in ("ddp", "ddp_spawn"):
        start_method = "spawn" if strategy == "ddp_spawn" else "popen"
        return DDPStrategy(find_unused_parameters=True, broadcast_buffers=False, start_method=start_method)
    return strategy


def expand_method_shortcut(argv: list[str]) -> list[str]:
    """`--method cyclegan` -> `--config configs/methods/cyclegan.yaml` (placed first, so later flags win)."""
    if "--method" not in argv:
        return argv
    at = argv.index("--method")
    if at + 1 >= len(argv) or argv[at + 1].startswith("-"):
        raise ConfigError("--method needs a name, e.g. --method cyclegan; see `i2ibench methods` for the list")
    spec = METHODS.get(argv[at + 1])
    rest = argv[:at] + argv[at + 2:]
    return rest[:1] + ["--config", str(spec.config_path)] + rest[1:]


def build_cli(argv: list[str], run: bool = True) -> I2IBenchCLI:
    """The suite's LightningCLI. `run=False` only builds model, datamodule and trainer (the bench)."""
    # Through sys.argv rather than `args=`: DDP's launcher re-runs sys.argv in each new process.
    sys.argv = [sys.argv[0], *expand_method_shortcut(argv)]
    return I2IBenchCLI(
        TranslationModule, I2IDataModule, subclass_mode_model=True, run=run,
        seed_everything_default=0, save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": "runs", "logger": True},
    )


def list_methods(argv: list[str]) -> int:
    """Print every registered method: name, the data it needs, one line of description."""
    for name in METHODS.names():
        spec = METHODS.get(name)
        print(f"{name:20s} [{spec.dataset_mode}]  {spec.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line: a `UserError` anywhere below ends with one line and exit status 2; a run
    stopped by a non-finite loss ends with one line `i2ibench: error: non-finite loss at step ...`,
    the last on stderr, and exit status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return report_user_errors(run_verb, argv)
    except NonFiniteLossError as err:
        if verbose_requested(argv):
            traceback.print_exc()
        finish_wandb()  # W&B prints its closing lines at exit otherwise, after ours
        sys.stdout.flush()
        print(f"i2ibench: error: {err}", file=sys.stderr, flush=True)
        return EXIT_TRAINING_FAILED


def finish_wandb() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=EXIT_TRAINING_FAILED)


def run_verb(argv: list[str]) -> int:
    os.environ.setdefault("WANDB_MODE", "offline")  # no account and no network needed; `wandb sync` later
    load_all()
    from i2ibench import commands

    verbs = {"methods": list_methods, **commands.VERBS}
    if argv and argv[0] in verbs:
        return verbs[argv[0]](argv[1:]) or 0
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nverbs: " + ", ".join([*LIGHTNING_VERBS, *verbs]))
        return 0
    build_cli(argv)
    return 0
