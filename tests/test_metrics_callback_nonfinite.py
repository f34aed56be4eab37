"""NaN / inf translations are never scored: the EvaluationCallback refuses them and writes no record.

8-bit quantisation would turn NaN into black pixels and give a normal-looking FID. A real Trainer,
a CycleGAN whose B2A translation returns NaN (A2B stays finite, so the error must name B2A).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from i2ibench.methods.cyclegan import CycleGAN

from conftest import inception_weights, tiny_datamodule
from test_methods_cyclegan import cpu_trainer

WEIGHTS = inception_weights()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights (set I2IBENCH_INCEPTION_WEIGHTS)")]


class DivergedB2A(CycleGAN):
    """CycleGAN whose B2A translations hold NaN (one image also +inf), as after a diverged update."""

    def translate(self, batch: dict, task: str) -> torch.Tensor:
        out = super().translate(batch, task)
        if task == "B2A" and "task" in batch:  # evaluation batches only, not the sample grid
            out = out.clone()
            out[0, 0, 0, 0] = float("inf")
            out[1:] = float("nan")
        return out


def small_set(root: Path, builtin_root: Path) -> Path:
    for folder, count in (("trainA", 2), ("trainB", 2), ("testA", 3), ("testB", 3)):
        (root / folder).mkdir(parents=True)
        for src in sorted((builtin_root / folder).iterdir())[:count]:
            os.symlink(src, root / folder / src.name)
    return root


def tiny(cls=CycleGAN):
    return cls(generator_args={"ngf": 8, "n_blocks": 1}, discriminator_args={"ndf": 8}, n_epochs=1, n_epochs_decay=1)


def test_nan_translations_during_fit_stop_the_evaluation_without_a_record(tmp_path, builtin_root):
    from i2ibench.metrics.callback import EvaluationCallback, NonFiniteOutputError

    callback = EvaluationCallback(method="diverged", weights=str(WEIGHTS), lpips="off", kid_subsets=2)
    trainer = cpu_trainer(tmp_path / "run", max_epochs=1, limit_train_batches=1, limit_val_batches=None,
                          callbacks=[callback])
    with pytest.raises(NonFiniteOutputError) as err:
        trainer.fit(tiny(DivergedB2A), tiny_datamodule(small_set(tmp_path / "data", builtin_root), eval_batch_size=4))
    message = str(err.value)
    assert "task B2A: 3 of 3 translations" in message and "A2B" not in message
    assert f"epoch 1, step {trainer.global_step}" in message and "NaN or infinite" in message
    assert callback.records == [] and not (tmp_path / "run" / "eval").exists()


def test_nan_translations_of_a_checkpoint_name_it(tmp_path, builtin_root):
    from i2ibench.metrics.callback import EvaluationCallback, NonFiniteOutputError

    data = small_set(tmp_path / "data", builtin_root)
    trainer = cpu_trainer(tmp_path / "train", max_epochs=1, limit_train_batches=1)
    trainer.fit(tiny(), tiny_datamodule(data))
    checkpoint = tmp_path / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    callback = EvaluationCallback(method="diverged", weights=str(WEIGHTS), lpips="off", kid_subsets=2,
                                  output_dir=str(tmp_path / "records"))
    tester = cpu_trainer(tmp_path / "test", callbacks=[callback])
    with pytest.raises(NonFiniteOutputError) as err:
        tester.test(tiny(DivergedB2A), tiny_datamodule(data, eval_batch_size=2), ckpt_path=str(checkpoint))
    step = torch.load(checkpoint, weights_only=False)["global_step"]
    assert str(checkpoint) in str(err.value) and "task B2A" in str(err.value) and f"step {step}," in str(err.value)
    assert not (tmp_path / "records").exists()
