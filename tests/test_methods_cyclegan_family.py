"""The CycleGAN family: each variant from its own config, its loss terms, updates and sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from PIL import Image
from skimage.metrics import structural_similarity

from i2ibench.losses import ssim_loss
from i2ibench.methods.cyclegan import CycleGAN
from i2ibench.registry import METHODS, load_all

from conftest import SHARED_DATASETS, inception_weights, needs_shared_data, tiny_datamodule
from test_methods_cyclegan import LossRecorder, cpu_trainer

load_all()
FAMILY = ("cyclegan", "ssim-lsgan", "densenet-cyclegan", "inception-cyclegan")
WEIGHTS = inception_weights()


def config_args(method: str) -> dict:
    return yaml.safe_load(METHODS.get(method).config_path.read_text())["model"]["init_args"]


def tiny_variant(method: str) -> CycleGAN:
    """The method's own config, at a tiny width; the perceptual net (if any) is the offline Inception."""
    args = config_args(method)
    args["generator_args"] = {**args["generator_args"], "ngf": 8, "n_blocks": 1}
    args["discriminator_args"] = {**args["discriminator_args"], "ndf": 8}
    if args.get("lambda_perceptual", 0) > 0:
        if WEIGHTS is None:
            pytest.skip("no Inception weights for the offline perceptual network")
        args.update(perceptual_network="inception", perceptual_weights=str(WEIGHTS))
    return CycleGAN(**{**args, "n_epochs": 1, "n_epochs_decay": 1})


def test_every_family_member_is_registered_with_a_description():
    for method in FAMILY:
        spec = METHODS.get(method)
        assert spec.module_class is CycleGAN and spec.description and spec.config_path.is_file()


@pytest.mark.parametrize("method", FAMILY)
def test_one_step_updates_every_network_with_finite_terms(method, builtin_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_variant(method)
    nets = ("gen_AB", "gen_BA", "disc_A", "disc_B")
    before = {n: [p.detach().clone() for p in getattr(model, n).parameters()] for n in nets}
    recorder = LossRecorder()
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[recorder]).fit(
        model, tiny_datamodule(builtin_root))
    for name, params in before.items():
        assert any(not torch.equal(a, b) for a, b in zip(params, getattr(model, name).parameters())), name
    losses = {k.removeprefix("train/"): v for k, v in recorder.steps[0].items()}
    assert all(math.isfinite(v) for v in losses.values())
    args = config_args(method)
    expected = {"gen_adv_A2B", "gen_adv_B2A", "gen_cycle_A", "gen_cycle_B", "gen_total", "disc_A", "disc_B"}
    if args["lambda_identity"] > 0:
        expected |= {"gen_idt_A2B", "gen_idt_B2A"}
    if args.get("lambda_perceptual", 0) > 0:
        expected |= {"gen_perceptual_A", "gen_perceptual_B"}
    assert set(losses) == expected


def test_ssim_lsgan_uses_ssim_reconstruction_and_its_learning_rates():
    model = tiny_variant("ssim-lsgan")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert model.reconstruction_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    optimizers, _ = model.configure_optimizers()
    assert [o.param_groups[0]["lr"] for o in optimizers] == [2e-4, 1e-4]
    assert model.hparams.lambda_A == 4.0 and model.hparams.lambda_identity == 0.0


@needs_shared_data
def test_ssim_loss_matches_scikit_image_on_real_images():
    """CUFS photos against their own sketches: 1 - loss equals scikit-image's SSIM to 1e-3."""
    raw = SHARED_DATASETS / "cufs-student" / "CUHK_student_test"
    names = sorted(p.name for p in (raw / "photos").iterdir())[:4]
    for name in names:
        a = np.asarray(Image.open(raw / "photos" / name).convert("RGB"), dtype=np.float64) / 255
        b = np.asarray(Image.open(raw / "sketches" / name).convert("RGB"), dtype=np.float64) / 255
        reference = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1.0)
        to_tensor = lambda arr: torch.from_numpy(arr).permute(2, 0, 1)[None].float() * 2 - 1  # noqa: E731
        loss = ssim_loss(to_tensor(a), to_tensor(b))
        assert 1.0 - loss.item() == pytest.approx(reference, abs=1e-3)
        assert 0.05 < reference < 0.95  # a real comparison, not a trivial 0 or 1


def test_ssim_loss_is_differentiable():
    x = (torch.rand(1, 3, 24, 24) * 2 - 1).requires_grad_()
    ssim_loss(x, torch.zeros_like(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("method, generator, discriminator", [
    ("cyclegan", 11_378_179, 2_764_737), ("ssim-lsgan", 11_378_179, 2_764_737),
    ("densenet-cyclegan", 9_240_067, 2_764_737), ("inception-cyclegan", 2_359_315, 2_764_737)])
def test_parameter_counts_at_the_configured_sizes(method, generator, discriminator):
    from i2ibench.registry import DISCRIMINATORS, GENERATORS

    args = config_args(method)
    gen = GENERATORS.get(args["generator"])(**args["generator_args"])
    disc = DISCRIMINATORS.get(args["discriminator"])(**args["discriminator_args"])
    assert sum(p.numel() for p in gen.parameters()) == generator
    assert sum(p.numel() for p in disc.parameters()) == discriminator
