"""Weights fail fast: bad Inception (metrics, perceptual loss) or VGG weights stop a run before its first training step.

Real files: a missing path, a truncated copy of the real TF-FID Inception weights, and a state dict
with the wrong keys; a real Trainer, which must not reach a single training batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from i2ibench.errors import UserError
from i2ibench.metrics.inception import WeightsError

from conftest import inception_weights, tiny_cyclegan, tiny_datamodule
from test_methods_cyclegan import cpu_trainer

WEIGHTS = inception_weights()
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights (set I2IBENCH_INCEPTION_WEIGHTS)")


class StepCounter(Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches += 1


def bad_weights(kind: str, folder: Path) -> Path:
    """A missing file, the real weights cut after 4 MiB, or a state dict whose keys are another network's."""
    path = folder / f"{kind}.pth"
    if kind == "truncated":
        with open(WEIGHTS, "rb") as source:
            path.write_bytes(source.read(4 << 20))
    elif kind == "wrong-keys":
        state = {f"renamed.{k}": v for k, v in torch.load(WEIGHTS, weights_only=True).items()}
        state["fc.weight"] = torch.zeros(1008, 2048)  # even with the classifier the checks look for
        torch.save(state, path)
    return path


KINDS = ["missing", "truncated", "wrong-keys"]
EXPECTED = {"missing": "Inception weights file not found (set by evaluation.weights)",
            "truncated": "not a readable PyTorch state dict, truncated or corrupt",
            "wrong-keys": "not a torch-fidelity InceptionV3 state dict"}


@needs_weights
@pytest.mark.parametrize("kind", KINDS)
def test_bad_evaluation_weights_stop_fit_before_the_first_step(kind, tmp_path, builtin_root):
    from i2ibench.metrics.callback import EvaluationCallback

    path = bad_weights(kind, tmp_path)
    counter = StepCounter()
    trainer = cpu_trainer(tmp_path / "run", max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                          callbacks=[EvaluationCallback(weights=str(path), lpips="off"), counter])
    with pytest.raises(WeightsError) as err:
        trainer.fit(tiny_cyclegan(), tiny_datamodule(builtin_root))
    assert counter.batches == 0 and trainer.global_step == 0
    message = str(err.value)
    assert isinstance(err.value, UserError) and str(path) in message and EXPECTED[kind] in message
    assert "\n" not in message


@needs_weights
@pytest.mark.parametrize("kind", KINDS)
def test_bad_perceptual_inception_weights_fail_when_the_method_is_built(kind, tmp_path):
    path = bad_weights(kind, tmp_path)
    with pytest.raises(WeightsError) as err:
        tiny_cyclegan(lambda_perceptual=1.0, perceptual_network="inception", perceptual_weights=str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    if kind == "missing":
        assert "model.init_args.perceptual_weights" in str(err.value)


def test_a_corrupt_cached_vgg_file_is_named(tmp_path):
    """torchvision's cached VGG-16 file, truncated: one WeightsError naming it (no download is attempted)."""
    hub = torch.hub.get_dir()
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04" + b"\0" * 4096)  # a zip header and nothing else: what an interrupted copy leaves
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(WeightsError) as err:
            tiny_cyclegan(lambda_perceptual=1.0, perceptual_network="vgg16")
    finally:
        torch.hub.set_dir(hub)
    assert str(cached) in str(err.value) and "delete it" in str(err.value) and "perceptual_network: inception" in str(err.value)
