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
