"""CycleGAN as a LightningModule: updates, image pool, schedule, exact resume, logging, DDP."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from i2ibench.methods.image_pool import ImagePool

from conftest import REPO, cpu_trainer, inception_weights, tiny_cyclegan, tiny_datamodule


class LossRecorder(Callback):
    """Every per-step loss the module logged, batch by batch."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def test_one_training_step_updates_all_four_networks(builtin_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_cyclegan()
    before = {name: [p.detach().clone() for p in getattr(model, name).parameters()]
              for name in ("gen_AB", "gen_BA", "disc_A", "disc_B")}
    recorder = LossRecorder()
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[recorder]).fit(
        model, tiny_datamodule(builtin_root))
    for name, params in before.items():
        changed = [not torch.equal(old, new) for old, new in zip(params, getattr(model, name).parameters())]
        assert all(changed), f"{name}: {changed.count(False)} parameter tensors did not change"
    losses = recorder.steps[0]
    expected = {"gen_adv_A2B", "gen_adv_B2A", "gen_cycle_A", "gen_cycle_B", "gen_idt_A2B", "gen_idt_B2A",
                "gen_total", "disc_A", "disc_B"}
    assert {k.removeprefix("train/") for k in losses} == expected
    assert all(math.isfinite(v) for v in losses.values())
    parts = sum(v for k, v in losses.items() if k.startswith("train/gen_") and k != "train/gen_total")
    assert parts == pytest.approx(losses["train/gen_total"], rel=1e-5)


def test_identity_loss_off_when_weight_zero(builtin_root, tmp_path):
    recorder = LossRecorder()
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[recorder]).fit(
        tiny_cyclegan(lambda_identity=0.0), tiny_datamodule(builtin_root))
    assert not any("idt" in k for k in recorder.steps[0])


def test_image_pool_fills_then_swaps_half():
    pool = ImagePool(size=5, seed=0)
    first = torch.arange(5.0).view(5, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # while filling, images pass through and are stored
    assert len(pool.images) == 5
    returned_old, trials = 0, 2000
    for i in range(trials):
        new = torch.full((1, 1, 1, 1), 100.0 + i)
        out = pool.query(new)
        if out.item() != new.item():
            returned_old += 1
            assert any(out.item() == img.item() for img in pool.images) is False  # it was swapped out
    assert len(pool.images) == 5
    assert abs(returned_old / trials - 0.5) < 0.05


def test_image_pool_state_round_trip_reproduces_draws():
    pool = ImagePool(size=3, seed=7)
    for i in range(5):
        pool.query(torch.full((2, 1, 2, 2), float(i)))
    clone = ImagePool(size=3, seed=99)
    clone.load_state_dict(pool.state_dict())
    probe = torch.randn(8, 1, 2, 2)
    assert torch.equal(pool.query(probe), clone.query(probe))


def test_pool_size_zero_trains_and_hands_the_discriminator_detached_fakes(builtin_root, tmp_path):
    """pool_size 0 used to return the generator's graph, and D's backward ran through it again."""
    fakes = torch.randn(3, 3, 4, 4, requires_grad=True) * 2
    out = ImagePool(size=0).query(fakes)
    assert not out.requires_grad and out.grad_fn is None and torch.equal(out, fakes.detach())
    model = tiny_cyclegan(pool_size=0)
    before = [p.detach().clone() for p in model.disc_A.parameters()]
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2).fit(model, tiny_datamodule(builtin_root))
    assert all(not torch.equal(old, new) for old, new in zip(before, model.disc_A.parameters()))


def test_the_non_finite_guard_names_the_first_bad_step_and_its_terms():
    """Terms collected over several steps (as on a GPU, checked every log_every_n_steps) and checked at once."""
    from i2ibench.errors import NonFiniteLossError

    model = tiny_cyclegan()
    finite = {"gen_total": torch.tensor(1.5), "disc_A": torch.tensor(0.25)}
    model.unchecked_losses = [(10, 2, finite),
                              (11, 2, {"gen_total": torch.tensor(float("nan")), "disc_A": torch.tensor(0.5),
                                       "gen_cycle_A": torch.tensor(float("inf"))}),
                              (12, 2, {"gen_total": torch.tensor(float("nan")), "disc_A": torch.tensor(0.5)})]
    with pytest.raises(NonFiniteLossError) as failure:
        model.check_losses_finite()
    message = str(failure.value)
    assert message.startswith("non-finite loss at step 11 (epoch 2): gen_total=nan, gen_cycle_A=inf;")
    assert "disc_A" not in message and "\n" not in message
    assert model.unchecked_losses == []
    model.unchecked_losses = [(13, 2, finite)]
    model.check_losses_finite()  # finite terms pass


@pytest.mark.slow
def test_cli_fit_stops_at_the_first_non_finite_loss(builtin_root, tmp_path):
    """lr 1e30: step 0 is finite (the initial weights), step 1 is not. The run ends there, with exit
    status 1 and one line, the last on stderr (after W&B's own closing lines), naming step and terms;
    no checkpoint and no evaluation record come from the diverged weights."""
    root = tmp_path / "run"
    args = [*tiny_fit_args(root, builtin_root, max_epochs=2), "--model.init_args.lr", "1e30"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    if inception_weights() is not None:  # epoch 0 would end with an evaluation
        env["I2IBENCH_INCEPTION_WEIGHTS"] = str(inception_weights())
    else:
        args += ["--trainer.limit_val_batches", "0"]
    result = subprocess.run([sys.executable, "-m", "i2ibench", *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1, result.stderr[-3000:]
    assert last_line.startswith("i2ibench: error: non-finite loss at step 1 (epoch 0): "), last_line
    assert "gen_total=nan" in last_line and "Traceback" not in result.stderr
    assert not (root / "checkpoints").exists() and not (root / "eval").exists()


def test_learning_rate_schedule_at_epochs_0_100_150_199():
    model = tiny_cyclegan(n_epochs=100, n_epochs_decay=100)
    optimizers, schedulers = model.configure_optimizers()
    lrs = {}
    for epoch in range(200):
        lrs[epoch] = [opt.param_groups[0]["lr"] for opt in optimizers]
        for optimizer, scheduler in zip(optimizers, schedulers):
            optimizer.step()  # (no gradients: a no-op, in the order PyTorch expects)
            scheduler.step()
    expected = {0: 2e-4, 100: 2e-4 * 100 / 101, 150: 2e-4 * 50 / 101, 199: 2e-4 * 1 / 101}
    for epoch, lr in expected.items():
        assert lrs[epoch] == pytest.approx([lr, lr], rel=1e-9), epoch
    assert lrs[99] == pytest.approx([2e-4, 2e-4])  # 100 epochs at the initial rate


def test_separate_discriminator_learning_rate():
    optimizers, _ = tiny_cyclegan(lr=2e-4, lr_D=1e-4).configure_optimizers()
    assert [opt.param_groups[0]["lr"] for opt in optimizers] == [2e-4, 1e-4]


def test_resume_gives_the_same_next_losses(builtin_root, tmp_path):
    """Stop after epoch 1, resume from last.ckpt: epochs 2-3 match an uninterrupted run exactly."""
    settings = dict(n_epochs=1, n_epochs_decay=2, pool_size=3)

    def run(root: Path, max_epochs: int, ckpt_path: str | None = None, seed: int = 0) -> LossRecorder:
        pl.seed_everything(seed)
        recorder = LossRecorder()
        checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0,
                                     save_on_train_epoch_end=True)
        trainer = cpu_trainer(root, max_epochs=max_epochs, limit_train_batches=4, enable_checkpointing=True,
                              callbacks=[recorder, checkpoint])
        trainer.fit(tiny_cyclegan(**settings), tiny_datamodule(builtin_root, batch_size=2), ckpt_path=ckpt_path)
        return recorder

    straight = run(tmp_path / "straight", max_epochs=3)
    run(tmp_path / "stopped", max_epochs=1)
    # A different seed for the fresh process state: everything that matters must come from the checkpoint.
    resumed = run(tmp_path / "stopped", max_epochs=3, ckpt_path=str(tmp_path / "stopped/checkpoints/last.ckpt"),
                  seed=123)
    assert len(resumed.steps) == 8
    assert resumed.steps == straight.steps[4:]


def run_cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "i2ibench", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def tiny_fit_args(root: Path, data: Path, max_epochs: int) -> list[str]:
    return ["fit", "--method", "cyclegan", "--data.dataset", str(data), "--data.load_size", "36",
            "--data.crop_size", "32", "--data.num_workers", "0",
            "--model.init_args.generator_args.ngf", "8", "--model.init_args.generator_args.n_blocks", "1",
            "--model.init_args.discriminator_args.ndf", "8",
            "--model.init_args.n_epochs", "1", "--model.init_args.n_epochs_decay", "1",
            "--trainer.max_epochs", str(max_epochs), "--trainer.limit_train_batches", "3",
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.log_every_n_steps", "1",
            "--trainer.default_root_dir", str(root)]


@pytest.mark.slow
def test_cli_fit_logs_to_wandb_offline_and_resumes(builtin_root, tmp_path):
    root = tmp_path / "run"
    run_cli(tiny_fit_args(root, builtin_root, max_epochs=1), cwd=tmp_path)
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_file = next(runs[0].glob("run-*.wandb"))
    assert run_file.stat().st_size > 1000
    assert list((runs[0] / "files" / "media" / "images").glob("samples_*.png"))
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert (root / "samples" / "epoch_0000.png").is_file()
    assert "train/gen_total" in (root / "csv" / "version_0" / "metrics.csv").read_text()
    first_steps = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]

    run_cli(tiny_fit_args(root, builtin_root, max_epochs=2) + ["--ckpt_path", "last"], cwd=tmp_path)
    assert (root / "samples" / "epoch_0001.png").is_file()
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2 * first_steps


@pytest.mark.slow
def test_two_process_cpu_ddp_fit(builtin_root, tmp_path):
    weights = inception_weights()
    if weights is None:
        pytest.skip("the fit evaluates, and the evaluation loads Inception weights at set-up; none here")
    root = tmp_path / "ddp"
    args = tiny_fit_args(root, builtin_root, max_epochs=1) + [
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
        "--wandb.enabled", "false", "--evaluation.weights", str(weights), "--evaluation.lpips", "off"]
    result = run_cli(args, cwd=tmp_path)
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert "max_epochs=1` reached" in result.stdout + result.stderr
