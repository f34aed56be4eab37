"""Shared fixtures: an isolated cache, tiny built-in data, the real shared data and weights when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATASETS = SHARED / "datasets"
SHARED_WEIGHTS = SHARED / "weights" / "inception-2015-12-05-pool3-noclassifier.pth"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def inception_weights() -> Path | None:
    """The Inception weights the metric tests can use offline: the env override, else ../shared."""
    configured = os.environ.get("I2IBENCH_INCEPTION_WEIGHTS")
    if configured and Path(configured).is_file():
        return Path(configured)
    return SHARED_WEIGHTS if SHARED_WEIGHTS.is_file() else None


needs_shared_data = pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason="../shared/datasets not present")


@pytest.fixture(scope="session", autouse=True)
def i2ibench_home(tmp_path_factory) -> Path:
    """Every test session gets its own cache, so tests never see a user's cached datasets or statistics."""
    home = tmp_path_factory.mktemp("i2ibench-home")
    os.environ["I2IBENCH_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def builtin_root(i2ibench_home) -> Path:
    """The built-in photo/sketch set at 32 px (generated once per session)."""
    from i2ibench.data.embedded import materialize

    return materialize("builtin", size=32)


def tiny_datamodule(root: Path | str, **overrides):
    """A datamodule for 32 px CPU tests: no workers (deterministic and fast to start)."""
    from i2ibench.data import I2IDataModule

    settings = dict(dataset=str(root), load_size=36, crop_size=32, batch_size=1, eval_batch_size=8, num_workers=0)
    settings.update(overrides)
    return I2IDataModule(**settings)


def assert_outputs_follow_latents(model, task: str, nz: int = 8, min_change: float = 1e-3, x=None, z=None):
    """What every latent-guided method must do, on 2 sources at 32 px under K = 3 latents (the third equal
    to the first): N x K outputs; equal latents give equal outputs; different ones change every source by
    more than `min_change`; translating again gives the same tensor. Returns (x, z, outputs)."""
    import torch

    if x is None:
        x = torch.rand(2, 3, 32, 32) * 2 - 1
    if z is None:
        z = torch.randn(2, 3, nz)
        z[:, 2] = z[:, 0]
    out = model.translate({"x": x, "z": z}, task)
    assert out.shape == (2, 3, 3, 32, 32)
    assert torch.equal(out[:, 0], out[:, 2])
    assert (out[:, 0] - out[:, 1]).abs().amax(dim=(1, 2, 3)).min() > min_change  # every source changes with z
    assert torch.equal(out, model.translate({"x": x, "z": z}, task))
    return x, z, out


def tiny_cyclegan(**overrides):
    """CycleGAN with the reference architecture at a tiny width (ngf=ndf=8, 1 residual block)."""
    from i2ibench.methods.cyclegan import CycleGAN

    settings = dict(generator_args={"ngf": 8, "n_blocks": 1}, discriminator_args={"ndf": 8},
                    n_epochs=1, n_epochs_decay=1)
    settings.update(overrides)
    return CycleGAN(**settings)


def cpu_trainer(root: Path, **overrides):
    """A bare single-process CPU Trainer for driving a method's steps (no logger, checkpoints or validation)."""
    import pytorch_lightning as pl

    settings = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                    default_root_dir=str(root), num_sanity_val_steps=0, limit_val_batches=0)
    settings.update(overrides)
    return pl.Trainer(**settings)
