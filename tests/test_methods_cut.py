"""CUT and FastCUT as LightningModules: one step, FastCUT's flip path, configs, and real 2-process DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from conftest import cpu_trainer, tiny_datamodule

TESTS = Path(__file__).resolve().parent
TINY = dict(generator_args={"ngf": 8, "n_blocks": 5}, discriminator_args={"ndf": 8}, num_patches=16,
            n_epochs=1, n_epochs_decay=1)


def tiny_cut(**overrides):
    """CUT with the reference architecture at a tiny width (5 blocks: the fewest with layer 16)."""
    from i2ibench.methods.cut import CUT

    return CUT(**{**TINY, **overrides})


class StepProbe(Callback):
    """Per step: this process's logged losses and the A image it trained on; at the end, per process,
    those steps and the head's weights. Used in-process and, through `--trainer.callbacks+=`, by the
    `i2ibench fit` DDP subprocesses (tests/ on PYTHONPATH)."""

    def __init__(self, out_dir: str | None = None) -> None:
        self.out_dir, self.steps, self.batch_paths = Path(out_dir) if out_dir else None, [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_paths = list(batch["A_path"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({"A": self.batch_paths, **{k: float(v) for k, v in trainer.callback_metrics.items()
                                                      if k.startswith("train/")}})

    def on_train_end(self, trainer, pl_module) -> None:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            rank = trainer.global_rank
            (self.out_dir / f"rank{rank}.json").write_text(json.dumps(self.steps))
            torch.save({"head": pl_module.head.state_dict(), "gen": pl_module.gen.state_dict()},
                       self.out_dir / f"rank{rank}.pt")


@pytest.mark.slow
def test_one_training_step_updates_generator_discriminator_and_head(builtin_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_cut()
    before = {name: [p.detach().clone() for p in getattr(model, name).parameters()] for name in ("gen", "disc", "head")}
    probe = StepProbe()
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[probe]).fit(model, tiny_datamodule(builtin_root))
    for name, params in before.items():
        changed = [not torch.equal(old, new) for old, new in zip(params, getattr(model, name).parameters())]
        assert all(changed), f"{name}: {changed.count(False)} of {len(changed)} parameter tensors did not change"
    losses = {k.removeprefix("train/"): v for k, v in probe.steps[0].items() if k != "A"}
    assert set(losses) == {"gen_adv", "gen_nce", "gen_nce_idt", "gen_total", "disc"}
    assert all(math.isfinite(v) for v in losses.values())
    # the reference's objective: adversarial term + the mean of the NCE and identity-NCE terms
    assert losses["gen_total"] == pytest.approx(losses["gen_adv"] + (losses["gen_nce"] + losses["gen_nce_idt"]) / 2,
                                                rel=1e-5)
    assert losses["gen_nce"] > 0 and losses["gen_nce_idt"] > 0


def test_three_optimisers_hold_generator_discriminator_and_head_from_construction():
    """The head's parameters exist before any batch: a DDP wrapper built now sees and syncs them."""
    model = tiny_cut()
    optimisers, schedulers = model.configure_optimizers()
    groups = [{id(p) for p in opt.param_groups[0]["params"]} for opt in optimisers]
    assert groups == [{id(p) for p in net.parameters()} for net in (model.gen, model.disc, model.head)]
    assert len(list(model.head.parameters())) == 4 * len(model.nce_layers)
    assert [opt.param_groups[0]["lr"] for opt in optimisers] == [2e-4] * 3 and len(schedulers) == 3
    assert model.eval_tasks(("A", "B")) == ["A2B"]
    with pytest.raises(ValueError, match="one-sided"):
        model.translate({"B": torch.zeros(1, 3, 32, 32)}, "B2A")


def test_nce_layers_beyond_the_generator_are_a_config_error():
    from i2ibench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.init_args.nce_layers .*layer ids \[40\] do not exist"):
        tiny_cut(nce_layers=[0, 4, 40])


def test_the_configs_hold_the_papers_cut_and_fastcut_settings():
    import yaml

    from i2ibench.registry import METHODS, load_all

    load_all()
    cut, fast = (yaml.safe_load(METHODS.get(name).config_path.read_text()) for name in ("cut", "fastcut"))
    c, f = cut["model"]["init_args"], fast["model"]["init_args"]
    assert (c["nce_idt"], c["lambda_NCE"], c["flip_equivariance"], c["n_epochs"], c["n_epochs_decay"]) == (
        True, 1.0, False, 200, 200)
    assert (f["nce_idt"], f["lambda_NCE"], f["flip_equivariance"], f["n_epochs"], f["n_epochs_decay"]) == (
        False, 10.0, True, 150, 50)
    for args, config in ((c, cut), (f, fast)):
        assert (args["nce_layers"], args["num_patches"], args["nce_T"], args["head_channels"]) == (
            [0, 4, 8, 12, 16], 256, 0.07, 256)
        assert config["trainer"]["max_epochs"] == args["n_epochs"] + args["n_epochs_decay"]
        assert (config["data"]["load_size"], config["data"]["crop_size"], config["data"]["batch_size"]) == (286, 256, 1)


def test_the_flip_path_compares_flipped_back_features():
    """Layer 0 (the reflection-padded image) is exactly flip-equivariant, so on it a translation that
    is the mirrored source, flipped back, is the source: the loss of translating x to itself. Without
    the flip-back (or with it applied to the keys) the loss is that of mismatched patches."""
    torch.manual_seed(0)
    model = tiny_cut(nce_layers=[0], lambda_NCE=10.0, nce_idt=False, flip_equivariance=True)
    x = torch.randn(1, 3, 32, 32)

    def loss(translated, flipped):
        model.sampling.manual_seed(1)  # the same patch ids every time
        return model.nce_loss(x, translated, flipped)

    assert torch.equal(loss(x.flip(3), True), loss(x, False))
    assert loss(x.flip(3), False) > loss(x, False) + 1.0
    assert loss(x, True) > loss(x, False) + 1.0


@pytest.mark.slow
def test_fastcut_trains_through_both_flip_branches(builtin_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_cut(lambda_NCE=10.0, nce_idt=False, flip_equivariance=True)
    flips = []
    original = model.nce_loss

    def recording(source, translated, flipped=False):
        flips.append(flipped)
        return original(source, translated, flipped)

    model.nce_loss = recording
    probe = StepProbe()
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=4, callbacks=[probe]).fit(model, tiny_datamodule(builtin_root))
    assert True in flips and False in flips, flips
    assert len(flips) == 4  # one NCE term per step: no identity NCE
    for step in probe.steps:
        assert set(step) == {"A", "train/gen_adv", "train/gen_nce", "train/gen_total", "train/disc"}
        assert all(math.isfinite(v) for k, v in step.items() if k != "A")


def two_domain_folder(root: Path, builtin_root: Path, a_images: list[Path], b_image: Path) -> Path:
    """trainA: the given images; trainB: two links to one image; small test splits."""
    for folder in ("trainA", "trainB", "testA", "testB"):
        (root / folder).mkdir(parents=True)
    for i, image in enumerate(a_images):
        os.symlink(image, root / "trainA" / f"a{i}{image.suffix}")
    for i in range(2):
        os.symlink(b_image, root / "trainB" / f"b{i}{b_image.suffix}")
    for folder in ("testA", "testB"):
        for src in sorted((builtin_root / folder).iterdir())[:2]:
            os.symlink(src, root / folder / src.name)
    return root


def fit_args(data: Path, out: Path, devices: int) -> list[str]:
    probe = {"class_path": "test_methods_cut.StepProbe", "init_args": {"out_dir": str(out / "probe")}}
    return ["--data.dataset", str(data), "--data.load_size", "32", "--data.crop_size", "32", "--data.flip", "false",
            "--data.num_workers", "0",
            "--model.init_args.generator_args.ngf", "8", "--model.init_args.generator_args.n_blocks", "5",
            "--model.init_args.discriminator_args.ndf", "8", "--model.init_args.num_patches", "16",
            "--model.init_args.n_epochs", "1", "--model.init_args.n_epochs_decay", "1",
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.log_every_n_steps", "1", "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
            "--trainer.default_root_dir", str(out), "--wandb.enabled", "false", "--seed_everything", "0",
            f"--trainer.callbacks+={json.dumps(probe)}"]


def fit_in_process(method: str, args: list[str]) -> None:
    """`i2ibench fit --method METHOD ARGS` on 1 process, built in this process (saves an interpreter start)."""
    from i2ibench.cli import build_cli
    from i2ibench.registry import METHODS, load_all

    load_all()
    argv = sys.argv
    try:
        cli = build_cli(["--config", str(METHODS.get(method).config_path), *args], run=False)
        cli.trainer.fit(cli.model, cli.datamodule)
    finally:
        sys.argv = argv


def csv_first_step(out: Path) -> dict[str, float]:
    """The step-0 `train/*` losses the CSV logger wrote (rank 0's own values under DDP)."""
    import csv

    rows = list(csv.DictReader((out / "csv" / "version_0" / "metrics.csv").open()))
    row = next(r for r in rows if r.get("step") == "0" and r.get("train/gen_total"))
    return {k: float(v) for k, v in row.items() if k.startswith("train/") and v}


@pytest.mark.slow
def test_two_process_ddp_fit_matches_single_process_first_step_losses(builtin_root, tmp_path):
    """2 CPU processes over gloo, each training batch 1 on a different A image. Rank 0's first
    losses (before any update) equal those of a 1-process run on its image alone: the same initial
    weights, patch draws and data. After the step the head is the same on both processes: its
    gradients were averaged by DDP (a head built at the first batch would not be registered with
    DDP, and each process would keep its own)."""
    a_images = sorted((builtin_root / "trainA").iterdir())[:2]
    b_image = sorted((builtin_root / "trainB").iterdir())[0]
    both = two_domain_folder(tmp_path / "data-both", builtin_root, a_images, b_image)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    ddp_out = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "i2ibench", "fit", "--method", "cut",
                             *fit_args(both, ddp_out, 2), "--trainer.strategy", "ddp"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "global batch 2 (1 per process x 2 processes)" in log
    ranks = [json.loads((ddp_out / "probe" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [len(steps) for steps in ranks] == [1, 1]
    seen = [Path(steps[0]["A"][0]).name for steps in ranks]
    assert sorted(seen) == ["a0.png", "a1.png"], seen  # the processes trained on different images
    assert csv_first_step(ddp_out) == pytest.approx({k: v for k, v in ranks[0][0].items() if k != "A"}, rel=1e-6)

    # Rank 0's first step against a 1-process run on rank 0's image alone (rank 1 runs the same code
    # on the other image; its agreement shows in the identical weights after the step, below).
    single = two_domain_folder(tmp_path / "data-rank0", builtin_root, [a_images[int(seen[0][1])]] * 2, b_image)
    single_out = tmp_path / "single"
    fit_in_process("cut", fit_args(single, single_out, 1))
    expected = csv_first_step(single_out)
    got = {k: v for k, v in ranks[0][0].items() if k != "A"}
    assert set(got) == set(expected) == {f"train/{k}" for k in ("gen_adv", "gen_nce", "gen_nce_idt", "gen_total", "disc")}
    assert got == pytest.approx(expected, rel=1e-5)
    assert ranks[1][0]["train/gen_nce"] != pytest.approx(got["train/gen_nce"], rel=1e-5)  # rank 1 saw another image

    states = [torch.load(ddp_out / "probe" / f"rank{r}.pt") for r in range(2)]
    for part in ("head", "gen"):
        for name, value in states[0][part].items():
            assert torch.equal(value, states[1][part][name]), f"{part}.{name} differs between the processes"
