"""Under DDP the recipe stays the paper's: `data.batch_size` is the global batch, split across processes.

Real DDP (2 CPU processes over gloo, through `i2ibench fit`) against 1 process: at every step the
same samples are seen (the union over processes of each step's batch), the learning rates and
StarGAN v2's diversity weight are the same, and so is the number of steps. Before the split,
2 processes trained a batch twice as large for half the steps, and StarGAN v2's diversity weight
stopped half-way down its decay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import Callback

from conftest import inception_weights

TESTS = Path(__file__).resolve().parent
WEIGHTS = inception_weights()
# The evaluation callback loads its Inception weights at set-up (fail fast), even with validation off.
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights (set I2IBENCH_INCEPTION_WEIGHTS)")


class RecipeProbe(Callback):
    """Records, per process and step, what the step trains on and the schedule values it uses.

    Loaded by the `i2ibench fit` subprocesses through `--trainer.callbacks+=` (tests/ on PYTHONPATH).
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.steps = Path(out_dir), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if "x_path" in batch:  # multi-domain: the source image and its latent identify a draw
            ids = [f"{p}|{float(z.sum()):.6f}" for p, z in zip(batch["x_path"], batch["z"])]
        else:  # two-domain: the A image and the B image drawn for it
            ids = [f"{a}|{b}" for a, b in zip(batch["A_path"], batch["B_path"])]
        step = {"step": trainer.global_step, "epoch": trainer.current_epoch, "ids": ids,
                "lr": [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]}
        if hasattr(pl_module, "diversity_weight"):
            step["lambda_ds"] = pl_module.diversity_weight()
        self.steps.append(step)

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.steps))


def small_two_domain(root: Path, builtin_root: Path, count: int = 4) -> Path:
    """4 A and 4 B images: one epoch is 4 draws, so epochs (and the lr schedule) turn within a few steps."""
    for folder in ("trainA", "trainB", "testA", "testB"):
        (root / folder).mkdir(parents=True)
        for src in sorted((builtin_root / folder).iterdir())[:count]:
            os.symlink(src, root / folder / src.name)
    return root


def fit(tmp_path: Path, name: str, args: list[str], processes: int) -> tuple[list[dict], str]:
    """`i2ibench fit` on 1 or 2 CPU processes; the probe's steps merged over processes, and the log.

    2 processes: the real command in a subprocess (Lightning relaunches it for rank 1). 1 process:
    the same LightningCLI built in this process (`run=False`, as the bench does), which saves an
    interpreter start on this small machine.
    """
    out = tmp_path / name
    probe = {"class_path": "test_methods_ddp_recipe.RecipeProbe", "init_args": {"out_dir": str(out / "probe")}}
    fit_args = [*args, "--trainer.default_root_dir", str(out), "--trainer.accelerator", "cpu",
                "--trainer.devices", str(processes), "--trainer.limit_val_batches", "0",
                "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
                "--wandb.enabled", "false", "--evaluation.lpips", "off", "--evaluation.weights", str(WEIGHTS),
                f"--trainer.callbacks+={json.dumps(probe)}"]
    if processes == 1:
        from i2ibench.cli import build_cli
        from i2ibench.registry import METHODS, load_all

        load_all()
        at = fit_args.index("--method")  # without a verb `--method` cannot expand; the bench passes --config
        config = ["--config", str(METHODS.get(fit_args[at + 1]).config_path)]
        argv = sys.argv
        try:
            cli = build_cli(config + fit_args[:at] + fit_args[at + 2:], run=False)
            cli.trainer.fit(cli.model, cli.datamodule)
        finally:
            sys.argv = argv
        log = ""
    else:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
               "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "i2ibench", "fit", *fit_args, "--trainer.strategy", "ddp"]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        log = result.stdout + result.stderr
        assert result.returncode == 0, log[-4000:]
    ranks = [json.loads((out / "probe" / f"rank{r}.json").read_text()) for r in range(processes)]
    assert len({len(steps) for steps in ranks}) == 1, "processes ran different numbers of steps"
    merged = []
    for per_rank in zip(*ranks):
        first = per_rank[0]
        for other in per_rank[1:]:  # every process uses the same schedule values at a step
            assert {k: other[k] for k in ("step", "epoch", "lr")} == {k: first[k] for k in ("step", "epoch", "lr")}
            assert other.get("lambda_ds") == first.get("lambda_ds")
        merged.append({**first, "ids": sorted(i for s in per_rank for i in s["ids"])})
    return merged, log


def assert_same_recipe(one: list[dict], two: list[dict]) -> None:
    """Same steps, samples seen, schedule values; each epoch trains on the same draws.

    Which draws share a step differs: for training, Lightning's DistributedSamplerWrapper always
    permutes each epoch's draws (seeded) before dealing them out to the processes.
    """
    assert len(two) == len(one), f"{len(one)} steps on 1 process, {len(two)} on 2"
    seen_one = seen_two = 0
    epochs_one, epochs_two = defaultdict(list), defaultdict(list)
    for a, b in zip(one, two):
        seen_one, seen_two = seen_one + len(a["ids"]), seen_two + len(b["ids"])
        assert seen_two == seen_one, f"samples seen after step {a['step']}: {seen_one} on 1 process, {seen_two} on 2"
        assert (b["step"], b["epoch"]) == (a["step"], a["epoch"])
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-12)
        if "lambda_ds" in a:
            assert b["lambda_ds"] == pytest.approx(a["lambda_ds"], rel=1e-12)
        epochs_one[a["epoch"]] += a["ids"]
        epochs_two[b["epoch"]] += b["ids"]
    for epoch, draws in epochs_one.items():
        assert sorted(epochs_two[epoch]) == sorted(draws), f"epoch {epoch} trains on other draws"


@pytest.mark.slow
@needs_weights
def test_cyclegan_global_batch_and_lr_schedule_equal_on_one_and_two_processes(tmp_path, builtin_root):
    data = small_two_domain(tmp_path / "data", builtin_root)
    args = ["--method", "cyclegan", "--data.dataset", str(data), "--data.load_size", "36", "--data.crop_size", "32",
            "--data.num_workers", "0", "--data.batch_size", "2",
            "--model.init_args.generator_args.ngf", "4", "--model.init_args.generator_args.n_blocks", "1",
            "--model.init_args.discriminator_args.ndf", "4",
            "--model.init_args.n_epochs", "1", "--model.init_args.n_epochs_decay", "2", "--trainer.max_epochs", "3"]
    one, _ = fit(tmp_path, "one", args, processes=1)
    two, log = fit(tmp_path, "two", args, processes=2)
    assert len(one) == 6  # 3 epochs x (4 draws / global batch 2)
    assert [s["lr"][0] for s in one] == pytest.approx([2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 * 2 / 3, 2e-4 / 3, 2e-4 / 3])
    assert_same_recipe(one, two)
    assert log.count("global batch 2 (1 per process x 2 processes)") == 1  # printed once, by rank 0


@pytest.mark.slow
@needs_weights
def test_stargan_v2_iterations_and_diversity_decay_equal_on_one_and_two_processes(tmp_path):
    from i2ibench.data.embedded import materialize

    data = materialize("builtin-multi", size=32)
    args = ["--method", "stargan-v2", "--data.dataset", str(data), "--data.crop_size", "32",
            "--data.num_workers", "0", "--data.batch_size", "4", "--data.samples_per_epoch", "8",
            "--data.latent_dim", "4", "--data.outputs_per_source", "1",
            "--model.init_args.img_size", "32", "--model.init_args.base_dim", "8",
            "--model.init_args.max_conv_dim", "16", "--model.init_args.style_dim", "8",
            "--model.init_args.latent_dim", "4", "--model.init_args.ds_iter", "4", "--trainer.max_epochs", "2"]
    one, _ = fit(tmp_path, "one", args, processes=1)
    two, log = fit(tmp_path, "two", args, processes=2)
    assert [s["lambda_ds"] for s in one] == pytest.approx([2.0, 1.5, 1.0, 0.5])  # 4 iterations of batch 4
    assert_same_recipe(one, two)
    final = torch.load(tmp_path / "two" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["i2ibench"]["extra"]["iterations"] == 4  # the decay reached 0: 2 * (1 - 4 / 4)
    assert log.count("global batch 4 (2 per process x 2 processes)") == 1
    assert "0 after the last iteration of this fit" in log


def test_a_global_batch_that_cannot_be_split_is_refused_before_training(tmp_path):
    from i2ibench.errors import ConfigError
    from i2ibench.methods.recipe import split_global_batch

    assert split_global_batch(8, 2).per_process == 4
    assert split_global_batch(1, 4, per_sample_recipe=True).global_batch == 4
    with pytest.raises(ConfigError, match="data.batch_size 8 is the global batch.*3 processes"):
        split_global_batch(8, 3)
    with pytest.raises(ConfigError, match="data.batch_size 1"):
        split_global_batch(1, 2)  # StarGAN v2 has no per-sample recipe: batch 1 on 2 processes is refused


def test_batch_one_on_two_processes_runs_one_per_process_and_says_the_global_batch_grew():
    from i2ibench.methods.recipe import split_global_batch

    split = split_global_batch(1, 2, per_sample_recipe=True)  # CycleGAN / InstaGAN
    assert (split.per_process, split.global_batch) == (1, 2)
    assert split.describe() == ("global batch 2 (1 per process x 2 processes), not the configured 1: "
                                "a batch of 1 cannot be split")


def test_a_run_longer_than_its_learning_rate_schedule_is_refused():
    from types import SimpleNamespace

    from i2ibench.errors import ConfigError
    from i2ibench.methods.recipe import check_epoch_schedule

    check_epoch_schedule(SimpleNamespace(max_epochs=4), 2, 2)
    with pytest.raises(ConfigError, match=r"trainer.max_epochs \(5\) exceeds .* \(4\)"):
        check_epoch_schedule(SimpleNamespace(max_epochs=5), 2, 2)


def test_every_epoch_scheduled_method_refuses_a_run_longer_than_its_schedule():
    """The check lives in TranslationModule.on_fit_start: every method with n_epochs + n_epochs_decay gets it."""
    import inspect

    import pytorch_lightning as pl

    from i2ibench.errors import ConfigError
    from i2ibench.registry import METHODS, load_all

    load_all()
    classes = {METHODS.get(name).module_class for name in METHODS.names()}
    def takes_schedule(cls) -> bool:  # DualGAN, MaskCycleGAN: CycleGAN's arguments through **kwargs
        return any({"n_epochs", "n_epochs_decay"} <= set(inspect.signature(base.__init__).parameters)
                   for base in cls.__mro__ if "__init__" in vars(base))

    scheduled = [c for c in classes if takes_schedule(c)]
    assert {c.__name__ for c in scheduled} >= {"CycleGAN", "DualGAN", "MaskCycleGAN", "Pix2Pix", "CUT", "BicycleGAN",
                                               "LSRAGAN", "DRIT", "InstaGAN"}
    for cls in scheduled:
        offline = {"lambda_perceptual": 0.0} if "lambda_perceptual" in inspect.signature(cls).parameters else {}
        model = cls(n_epochs=2, n_epochs_decay=1, **offline)  # no VGG-16 download: not what is checked here
        model.trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False)
        model.on_fit_start()  # exactly the schedule: accepted
        model.trainer = pl.Trainer(max_epochs=4, logger=False, enable_checkpointing=False)
        with pytest.raises(ConfigError, match=r"trainer.max_epochs \(4\) exceeds the schedule"):
            model.on_fit_start()
