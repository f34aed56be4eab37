"""Every speed option keeps a few training steps numerically close to the plain float32 path."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from i2ibench.methods.speed import SpeedOptions

from conftest import tiny_cyclegan, tiny_datamodule
from test_methods_cyclegan import LossRecorder, cpu_trainer

STEPS = 3


def run(builtin_root, tmp_path, precision: str = "32-true", **speed) -> tuple[list[dict], dict]:
    pl.seed_everything(0)
    recorder = LossRecorder()
    model = tiny_cyclegan()
    options = SpeedOptions(**{"channels_last": False, "fused_adam": False, **speed})
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=STEPS, precision=precision,
                          deterministic=False, callbacks=[recorder, options])
    trainer.fit(model, tiny_datamodule(builtin_root, batch_size=2))
    probe = torch.linspace(-1, 1, 2 * 3 * 32 * 32).view(2, 3, 32, 32)
    with torch.no_grad():
        outputs = {"A2B": model.translate({"A": probe}, "A2B").float(), "B2A": model.translate({"B": probe}, "B2A").float()}
    return recorder.steps, outputs


@pytest.fixture(scope="module")
def float32_run(builtin_root, tmp_path_factory):
    return run(builtin_root, tmp_path_factory.mktemp("fp32"))


def assert_close(run_a, run_b, rtol: float) -> None:
    """Same losses at every step and the same translations afterwards (not raw parameters: a conv
    bias before an instance norm gets pure rounding-noise gradients, which Adam turns into
    full-size steps of random sign, with no effect on any output)."""
    (losses_a, outputs_a), (losses_b, outputs_b) = run_a, run_b
    assert len(losses_a) == len(losses_b) == STEPS
    for step_a, step_b in zip(losses_a, losses_b):
        for name, value in step_a.items():
            assert step_b[name] == pytest.approx(value, rel=rtol, abs=rtol), name
    for task, value in outputs_a.items():
        torch.testing.assert_close(outputs_b[task], value, rtol=rtol, atol=rtol, msg=task)


@pytest.mark.parametrize("flag", ["channels_last", "fused_adam"])
def test_float32_speed_flags_keep_the_numbers(flag, float32_run, builtin_root, tmp_path):
    assert_close(float32_run, run(builtin_root, tmp_path, **{flag: True}), rtol=1e-4)


def test_fused_adam_is_used_when_asked(builtin_root, tmp_path):
    model = tiny_cyclegan()
    SpeedOptions(channels_last=False, fused_adam=True).setup(None, model, "fit")
    optimizers, _ = model.configure_optimizers()
    assert all(o.defaults.get("fused") for o in optimizers)


def test_channels_last_by_default_only_on_cuda(builtin_root, tmp_path):
    options = SpeedOptions()
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[options])
    model = tiny_cyclegan()
    trainer.fit(model, tiny_datamodule(builtin_root, batch_size=2))
    assert options.channels_last is False  # NHWC was slower on CPU (benchmarks/train_speed.py)
    conv = next(m for m in model.gen_AB.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous()


def test_bf16_autocast_stays_close(float32_run, builtin_root, tmp_path):
    """bf16 keeps 8 bits of mantissa: the losses stay within 5% at every step; the translations move,
    because early Adam steps are about +-lr whatever a gradient's size and bf16 flips the sign of the
    smallest ones, but on average by less than a quarter of their own magnitude. (Whether bf16 trains
    as well is the loss-curve comparison of benchmarks/train_speed.py --quality.)"""
    (losses_a, outputs_a), (losses_b, outputs_b) = float32_run, run(builtin_root, tmp_path, precision="bf16-mixed")
    for step_a, step_b in zip(losses_a, losses_b):
        for name, value in step_a.items():
            assert step_b[name] == pytest.approx(value, rel=5e-2), name
    for task, value in outputs_a.items():
        assert torch.isfinite(outputs_b[task]).all()
        assert (outputs_b[task] - value).abs().mean() < 0.25 * value.abs().mean(), task


@pytest.mark.slow
def test_torch_compile_keeps_the_numbers(float32_run, builtin_root, tmp_path):
    assert_close(float32_run, run(builtin_root, tmp_path, compile=True), rtol=1e-3)


def test_decoded_image_cache_gives_the_same_batches(builtin_root):
    plain, cached = (tiny_datamodule(builtin_root, batch_size=4, cache_mb=mb) for mb in (0, 64))
    for datamodule in (plain, cached):
        datamodule.setup("fit")
    for epoch in range(2):  # the second epoch reads from the cache
        for a, b in zip(plain.train_dataloader(), cached.train_dataloader()):
            torch.testing.assert_close(a["A"], b["A"])
            torch.testing.assert_close(a["B"], b["B"])


def test_channels_last_reaches_networks_a_method_builds_in_its_own_setup(builtin_root, tmp_path):
    """StarGAN v2 with num_domains from the dataset builds its networks in `setup`, which Lightning calls
    after the callbacks' `setup`: the layout must still reach them (it did not when applied in `setup`)."""
    from i2ibench.methods.stargan_v2 import StarGANv2

    model = StarGANv2(img_size=32, base_dim=8, max_conv_dim=16, num_domains=None)
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1,
                          callbacks=[SpeedOptions(channels_last=True, fused_adam=False)])
    trainer.fit(model, tiny_datamodule(builtin_root, mode="multi-domain", batch_size=2, samples_per_epoch=2))
    conv = next(m for m in model.generator.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
