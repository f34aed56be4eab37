"""Kill -9 and resume: a resumed run ends with exactly the weights of an uninterrupted one.

Each method family (CycleGAN, InstaGAN, StarGAN v2, StarGAN) trains 2 epochs of 4 batches through the
command line's `fit`, with a data-loading worker and `last.ckpt` also every 3 batches. The
interrupted run is a `python -m i2ibench fit` process killed with SIGKILL twice: at the start of
epoch 1 (its newest checkpoint is the epoch-0 boundary, written by default) and, resumed with
`--ckpt_path last`, in the middle of epoch 1 (its newest is the step checkpoint after 2 of the
epoch's batches); then it is resumed to the end. Every weight, buffer, optimiser state and image
pool tensor at the end must equal the uninterrupted run's bit for bit (CPU, deterministic mode),
and for CycleGAN, which evaluates at the end, so must the evaluation record's metrics.

The uninterrupted run and the final resume run the same `main()` in this process: importing
Lightning takes most of a subprocess's time on a busy 2-core machine. Every run uses one CPU
thread: the same reduction order everywhere, and on a shared, oversubscribed machine it is
several times faster than OpenMP threads waiting for each other.

`KillAt` is the callback the subprocesses load from this file: it sends SIGKILL to its own
process (no cleanup, no atexit: a real kill -9) at the start of a given training batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import Callback

from conftest import REPO, inception_weights

pytestmark = pytest.mark.slow

BATCHES_PER_EPOCH, EPOCHS, STEP_EVERY = 4, 2, 3
KILL_AT_EPOCH_START = BATCHES_PER_EPOCH  # newest checkpoint: the end of epoch 0
KILL_MID_EPOCH = 7  # newest checkpoint: after batch 6 (the 2nd of epoch 1), from last_every_n_batches=3


class KillAt(Callback):
    """SIGKILL this process when training batch number `batch` (0-based, over the run) starts."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.fit_loop.total_batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def datasets(i2ibench_home) -> dict[str, Path]:
    from i2ibench.data.embedded import materialize

    return {name: materialize(name, size=32) for name in ("builtin", "builtin-masks", "builtin-multi")}


def family_args(family: str, datasets: dict[str, Path]) -> list[str]:
    """Tiny networks; a small image pool, so its random swaps (and their RNG) are part of the test."""
    if family == "cyclegan":
        return ["--method", "cyclegan", "--data.dataset", str(datasets["builtin"]),
                "--model.init_args.generator_args.ngf", "8", "--model.init_args.generator_args.n_blocks", "1",
                "--model.init_args.discriminator_args.ndf", "8", "--model.init_args.pool_size", "2",
                "--model.init_args.n_epochs", "1", "--model.init_args.n_epochs_decay", "1",
                "--data.load_size", "36", "--data.crop_size", "32"]
    if family == "instagan":
        return ["--method", "instagan", "--data.dataset", str(datasets["builtin-masks"]),
                "--model.init_args.ngf", "8", "--model.init_args.ndf", "8", "--model.init_args.n_blocks", "1",
                "--model.init_args.pool_size", "2", "--model.init_args.n_epochs", "1",
                "--model.init_args.n_epochs_decay", "1", "--data.load_size", "36", "--data.crop_size", "32"]
    if family == "stargan":  # n_critic 3 and a learning-rate stair every 2 iterations after 4: both cross the kills
        return ["--method", "stargan", "--data.dataset", str(datasets["builtin-multi"]),
                "--model.init_args.image_size", "32", "--model.init_args.d_repeat_num", "4",
                "--model.init_args.g_conv_dim", "8", "--model.init_args.d_conv_dim", "8",
                "--model.init_args.g_repeat_num", "1", "--model.init_args.n_critic", "3",
                "--model.init_args.num_iters", "8", "--model.init_args.num_iters_decay", "4",
                "--model.init_args.lr_update_step", "2", "--data.crop_size", "32", "--data.batch_size", "2",
                "--data.samples_per_epoch", "8"]
    return ["--method", "stargan-v2", "--data.dataset", str(datasets["builtin-multi"]),
            "--model.init_args.img_size", "32", "--model.init_args.base_dim", "8",
            "--model.init_args.max_conv_dim", "16", "--model.init_args.style_dim", "8",
            "--model.init_args.latent_dim", "4", "--model.init_args.ds_iter", "10", "--data.latent_dim", "4",
            "--data.crop_size", "32", "--data.batch_size", "2", "--data.samples_per_epoch", "8"]


def fit_command(root: Path, args: list[str], kill_at: int | None = None, resume: bool = False,
                evaluate: bool = False) -> list[str]:
    command = ["fit", *args, "--trainer.default_root_dir", str(root), "--trainer.max_epochs", str(EPOCHS),
               "--trainer.limit_train_batches", str(BATCHES_PER_EPOCH), "--trainer.accelerator", "cpu",
               "--trainer.deterministic", "true", "--trainer.num_sanity_val_steps", "0",
               "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
               "--wandb.enabled", "false", "--data.num_workers", "1",
               "--checkpoint.last_every_n_batches", str(STEP_EVERY)]
    if evaluate:  # once, at the end of the last epoch: 4 translations per task, Inception and content metrics
        command += ["--trainer.check_val_every_n_epoch", str(EPOCHS), "--trainer.limit_val_batches", "1",
                    "--data.eval_batch_size", "4", "--evaluation.lpips", "off",
                    "--evaluation.weights", str(inception_weights())]
    else:
        command += ["--trainer.limit_val_batches", "0"]
    if kill_at is not None:
        command += ["--trainer.callbacks+", json.dumps({"class_path": "test_resume.KillAt",
                                                        "init_args": {"batch": kill_at}})]
    if resume:
        command += ["--ckpt_path", "last"]
    return command


def fit_killed(root: Path, args: list[str], kill_at: int, **options) -> subprocess.CompletedProcess:
    """`python -m i2ibench fit ...` that SIGKILLs itself when batch `kill_at` starts."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "i2ibench", *fit_command(root, args, kill_at, **options)],
                            cwd=root.parent, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-4000:]
    return result


def fit_here(root: Path, args: list[str], **options) -> None:
    """The command line's `main()` in this process, leaving no global state behind."""
    from i2ibench.cli import main

    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    argv, environ = sys.argv, dict(os.environ)
    torch.set_num_threads(1)
    try:
        assert main(fit_command(root, args, **options)) == 0
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)


def progress(checkpoint: Path) -> tuple[int, int]:
    """(epochs completed, training batches completed) recorded in a checkpoint."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    batches = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"]
    return state["i2ibench"]["epochs_completed"], batches


def final_tensors(root: Path) -> dict[str, torch.Tensor]:
    """Every weight and buffer, every optimiser state tensor, and the method's extra state."""
    state = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    tensors = {f"state_dict/{k}": v for k, v in state["state_dict"].items()}
    for i, optimizer in enumerate(state["optimizer_states"]):
        for param, slots in optimizer["state"].items():
            tensors |= {f"optimizer{i}/{param}/{k}": torch.as_tensor(v) for k, v in slots.items()}
    for name, pool in state["i2ibench"]["extra"].items():
        if isinstance(pool, dict) and "images" in pool:
            tensors |= {f"{name}/image{j}": image for j, image in enumerate(pool["images"])}
    return tensors


def metrics_of(root: Path) -> list[dict]:
    records = sorted((root / "eval").glob("*.json"))
    assert records, f"no evaluation record in {root / 'eval'}"
    return [json.loads(path.read_text())["metrics"] for path in records]


@pytest.mark.parametrize("family", ["cyclegan", "instagan", "stargan-v2", "stargan"])
def test_killed_twice_and_resumed_equals_uninterrupted(family, datasets, tmp_path):
    evaluate = family == "cyclegan" and inception_weights() is not None
    args = family_args(family, datasets)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    fit_here(straight, args, evaluate=evaluate)

    # 1. Killed when epoch 1 starts. `--ckpt_path last` on a fresh folder says so and starts fresh.
    first = fit_killed(killed, args, kill_at=KILL_AT_EPOCH_START, resume=True, evaluate=evaluate)
    assert f"no checkpoint in {killed / 'checkpoints'}; starting fresh" in first.stderr
    assert progress(killed / "checkpoints" / "last.ckpt") == (1, BATCHES_PER_EPOCH)  # the epoch-end save
    # 2. Resumed from the epoch boundary, killed in the middle of epoch 1.
    fit_killed(killed, args, kill_at=KILL_MID_EPOCH, resume=True, evaluate=evaluate)
    assert progress(killed / "checkpoints" / "last.ckpt") == (1, 6)  # the step save, 2 batches into epoch 1
    # 3. Resumed mid-epoch, to the end.
    fit_here(killed, args, resume=True, evaluate=evaluate)

    expected, resumed = final_tensors(straight), final_tensors(killed)
    assert progress(killed / "checkpoints" / "last.ckpt") == (EPOCHS, EPOCHS * BATCHES_PER_EPOCH)
    assert expected.keys() == resumed.keys()
    differing = {name: float((expected[name].double() - resumed[name].double()).abs().max())
                 for name in expected if not torch.equal(expected[name], resumed[name])}
    assert not differing, f"{len(differing)} of {len(expected)} tensors differ, e.g. {list(differing.items())[:5]}"
    if evaluate:
        assert metrics_of(killed) == metrics_of(straight)
