"""BicycleGAN: the reference's parameter counts, one training step, z plumbing, batch halving, a CLI fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from conftest import assert_outputs_follow_latents, inception_weights, tiny_datamodule
from test_methods_pix2pix import paired_folder

# 32 px: a 5-level U-Net (32 -> 1x1), an encoder with 4 halvings, 2-layer PatchGANs at 2 scales.
TINY = dict(generator_args={"ngf": 4, "num_downs": 5}, encoder_args={"nef": 4, "n_blocks": 4},
            discriminator_args={"ndf": 4, "n_layers": 2}, n_epochs=1, n_epochs_decay=1)
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "methods" / "bicyclegan.yaml"


def tiny_bicyclegan(**overrides):
    from i2ibench.methods.bicyclegan import BicycleGAN

    return BicycleGAN(**{**TINY, **overrides})


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(cin: int, cout: int, k: int = 4) -> int:
    """A k x k conv (or transposed conv) with bias: the reference never drops biases in these nets."""
    return cin * cout * k * k + cout


# -- parameter counts against the reference's definition ------------------------------------------
def reference_generator_parameters(num_downs: int = 8, ngf: int = 64, nz: int = 8) -> int:
    """junyanz/BicycleGAN G_Unet_add_all with --upsample basic and --norm instance (no norm parameters),
    from its UnetBlock_with_z list: each level's down conv takes its input + nz channels."""
    outer = conv(3 + nz, ngf) + conv(2 * ngf, 3)
    middle = sum(conv(o + nz, 2 * o) + conv(4 * o, o) for o in (ngf, 2 * ngf, 4 * ngf))
    deep = (num_downs - 5) * (conv(8 * ngf + nz, 8 * ngf) + conv(16 * ngf, 8 * ngf))
    innermost = conv(8 * ngf + nz, 8 * ngf) + conv(8 * ngf, 8 * ngf)
    return outer + middle + deep + innermost


def reference_encoder_parameters(n_blocks: int = 5, nef: int = 64, nz: int = 8) -> int:
    """E_ResNet(vaeLike): a 4x4 conv, BasicBlocks (two 3x3 convs, a 1x1 shortcut conv), two linear heads."""
    widths = [nef * min(4, n) for n in range(1, n_blocks + 1)]
    blocks = sum(conv(i, i, 3) + conv(i, o, 3) + conv(i, o, 1) for i, o in zip(widths, widths[1:]))
    return conv(3, nef) + blocks + 2 * (widths[-1] * nz + nz)


def reference_discriminator_parameters(ndf: int = 64, n_layers: int = 3, num_d: int = 2) -> int:
    """D_NLayersMulti: num_D PatchGANs of round(ndf / 2**i) channels, every conv with bias, instance norm."""
    total = 0
    for i in range(num_d):
        width = int(round(ndf / 2**i))
        mults = [min(2**n, 8) for n in range(n_layers + 1)]
        total += conv(3, width) + sum(conv(width * a, width * b) for a, b in zip(mults, mults[1:]))
        total += conv(width * mults[-1], 1)
    return total


def test_parameter_counts_match_the_reference():
    """At the reference's defaults (unet_256, resnet_256, basic_256_multi with 2 scales, nz 8, 64 wide).
    The formulas were also checked against the reference's own modules built from its networks.py:
    54,794,627 / 2,590,032 / 3,458,978 (and unet_128 / resnet_128 / basic_128_multi at width 16)."""
    from i2ibench.methods.bicyclegan import BicycleGAN
    from i2ibench.nets.bicyclegan import LatentEncoder, LatentUnetGenerator, MultiScalePatchDiscriminator

    model = BicycleGAN()
    assert count(model.gen) == reference_generator_parameters() == 54_794_627
    assert count(model.encoder) == reference_encoder_parameters() == 2_590_032
    assert count(model.disc) == count(model.disc2) == reference_discriminator_parameters() == 3_458_978
    assert count(LatentUnetGenerator(num_downs=7, ngf=16)) == reference_generator_parameters(7, 16)
    assert count(LatentEncoder(nef=16, n_blocks=4)) == reference_encoder_parameters(4, 16)
    assert count(MultiScalePatchDiscriminator(ndf=16, n_layers=2)) == reference_discriminator_parameters(16, 2)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.gen.modules())  # --use_dropout is off
    assert BicycleGAN(use_same_D=True).disc2 is None


def test_config_needs_pairs_and_latents_of_size_nz():
    from i2ibench.registry import METHODS

    config = yaml.safe_load(CONFIG.read_text())
    assert config["data"]["mode"] == "paired"  # the datamodule then refuses unpaired folders (tested for pix2pix)
    assert config["data"]["latent_dim"] == config["model"]["init_args"]["nz"] == 8
    assert config["data"]["batch_size"] == 2
    assert METHODS.get("bicyclegan").dataset_mode == "paired"


# -- z plumbing ------------------------------------------------------------------------------------
def test_latent_outputs_differ_for_different_z_and_match_for_equal_z():
    torch.manual_seed(0)
    # Unit-gain init: the reference's xavier gain 0.02 makes every output ~0 before training.
    model = tiny_bicyclegan(generator_args={**TINY["generator_args"], "init_gain": 1.0}).eval()
    x, z, out = assert_outputs_follow_latents(model, "A->B@latent")
    with pytest.raises(ValueError, match="A->B only"):
        model.translate({"x": x, "z": z}, "B->A@latent")


def test_reference_guided_outputs_use_the_encoders_mean_of_the_reference():
    torch.manual_seed(0)
    model = tiny_bicyclegan(generator_args={**TINY["generator_args"], "init_gain": 1.0},
                            encoder_args={**TINY["encoder_args"], "init_gain": 1.0}).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    refs = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    out = model.translate({"x": x, "x_ref": refs}, "A->B@reference")
    for k in range(2):
        mu, _ = model.encoder(refs[:, k])
        torch.testing.assert_close(out[:, k], model.gen(x, mu))
    assert not torch.allclose(out[:, 0], out[:, 1])


# -- training --------------------------------------------------------------------------------------
class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def fit_one_step(model, data: Path, root: Path, batch_size: int = 2) -> LossRecorder:
    recorder = LossRecorder()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
                         num_sanity_val_steps=0, limit_val_batches=0, max_epochs=1, limit_train_batches=1,
                         callbacks=[recorder])
    trainer.fit(model, tiny_datamodule(data, mode="paired", batch_size=batch_size, latent_dim=8))
    return recorder


def snapshot(model, names):
    return {name: [p.detach().clone() for p in getattr(model, name).parameters()] for name in names}


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> list[bool]:
    return [not torch.equal(a, b) for a, b in zip(before, module.parameters()) if a.ndim > 1]


@pytest.mark.slow
def test_one_training_step_updates_every_network_with_finite_losses(builtin_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_bicyclegan()
    names = ("gen", "encoder", "disc", "disc2")
    before = snapshot(model, names)
    recorder = fit_one_step(model, paired_folder(tmp_path / "data", builtin_root), tmp_path)
    for name in names:
        assert all(changed(before[name], getattr(model, name))), f"{name} was not updated"
    losses = recorder.steps[0]
    assert set(losses) == {f"train/{k}" for k in ("G_GAN", "G_GAN2", "G_L1", "kl", "z_L1", "G_total", "D", "D2")}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    parts = sum(losses[f"train/{k}"] for k in ("G_GAN", "G_GAN2", "G_L1", "kl", "z_L1"))
    assert losses["train/G_total"] == pytest.approx(parts, rel=1e-5)


@pytest.mark.slow
def test_latent_regression_trains_the_generator_but_not_the_encoder(builtin_root, tmp_path):
    """With every other generator term weighted 0, only |E(G(A, z)) - z| drives G and E: the reference
    freezes E for it (paper sec. 3.4), so G moves and E keeps its weights exactly (zero gradient, Adam step 0)."""
    pl.seed_everything(0)
    model = tiny_bicyclegan(lambda_L1=0.0, lambda_kl=0.0, lambda_GAN=0.0, lambda_GAN2=0.0)
    before = snapshot(model, ("gen", "encoder"))
    fit_one_step(model, paired_folder(tmp_path / "data", builtin_root), tmp_path)
    assert all(changed(before["gen"], model.gen))
    assert not any(changed(before["encoder"], model.encoder))


def test_a_batch_that_cannot_be_halved_is_refused_before_training(builtin_root, tmp_path):
    from i2ibench.errors import ConfigError

    with pytest.raises(ConfigError, match="data.batch_size 1 .*even number per process"):
        fit_one_step(tiny_bicyclegan(), paired_folder(tmp_path / "data", builtin_root), tmp_path, batch_size=1)


# -- the command line ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(inception_weights() is None, reason="no Inception weights")
def test_cli_fit_writes_a_record_with_both_tasks_and_lpips_diversity(builtin_root, tmp_path):
    """LPIPS runs on a randomly initialised AlexNet here (`random-alex`: no ImageNet weights offline), so
    the diversity number tests the plumbing, not its value."""
    from i2ibench.cli import main

    data = paired_folder(tmp_path / "data", builtin_root)
    out = tmp_path / "run"
    args = {"generator_args.ngf": 4, "generator_args.num_downs": 5, "encoder_args.nef": 4,
            "encoder_args.n_blocks": 4, "discriminator_args.ndf": 4, "discriminator_args.n_layers": 2,
            "n_epochs": 1, "n_epochs_decay": 1}
    status = main(["fit", "--method", "bicyclegan", "--data.dataset", str(data),
                   *[part for k, v in args.items() for part in (f"--model.init_args.{k}", str(v))],
                   "--data.load_size", "36", "--data.crop_size", "32", "--data.num_workers", "0",
                   "--data.eval_batch_size", "8", "--data.outputs_per_source", "2", "--trainer.max_epochs", "1",
                   "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                   "--trainer.num_sanity_val_steps", "0", "--trainer.accelerator", "cpu",
                   "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(out),
                   "--wandb.enabled", "false", "--evaluation.lpips", "random-alex",
                   "--evaluation.weights", str(inception_weights())])
    assert status == 0
    records = sorted((out / "eval").glob("*.json"))
    assert records, f"no evaluation record in {out / 'eval'}"
    metrics = json.loads(records[-1].read_text())["metrics"]
    assert list(metrics) == ["A->B@latent", "A->B@reference"]
    for task in metrics.values():
        assert task["lpips_diversity"] is not None and task["lpips_diversity"] > 0
        assert task["fid"] > 0
        # paired data: the first output of each source is scored against its ground truth
        assert 0 < task["psnr_gt"] < 100 and -1 <= task["ssim_gt"] < 1 and task["lpips_gt"] is not None
