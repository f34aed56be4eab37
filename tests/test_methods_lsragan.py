"""LSRAGAN: parameter counts by hand, z reaches the output, MSGAN's mode-seeking term by hand, one
training step of every network, paired data only."""

from __future__ import annotations

import math
import shutil

import pytest
import pytorch_lightning as pl
import torch
import yaml

from conftest import assert_outputs_follow_latents, inception_weights, tiny_datamodule
from test_methods_bicyclegan import changed, fit_one_step, snapshot
from test_methods_pix2pix import paired_folder

from i2ibench.losses import mode_seeking_loss
from i2ibench.methods.lsragan import LSRAGAN

WEIGHTS = inception_weights()
needs_inception = pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights for the offline perceptual network")
OFFLINE = dict(perceptual_network="inception", perceptual_weights=str(WEIGHTS))
# 32 px: 1 latent CBAM block at 4 * 4 = 16 channels, an encoder with 4 halvings, 2-layer PatchGANs at 2 scales.
TINY = dict(generator_args={"ngf": 4, "n_blocks": 1}, encoder_args={"nef": 4, "n_blocks": 4},
            discriminator_args={"ndf": 4, "n_layers": 2}, n_epochs=1, n_epochs_decay=1)


def tiny_lsragan(**overrides) -> LSRAGAN:
    settings = {**TINY, "lambda_perceptual": 0.0, **overrides}
    return LSRAGAN(**settings)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- sizes -----------------------------------------------------------------------------------------
def test_parameter_counts_by_hand():
    """Counted by hand from the layer shapes (instance norm: no norm parameters; every conv and linear
    layer with a bias; a k x k conv cin -> cout has cin*cout*k*k + cout).

    Generator at the config (ngf 64, 9 blocks, nz 8; blocks at C = 256 channels):
      encoder  7x7 3->64: 9,472; 3x3 64->128: 73,856; 3x3 128->256: 295,168            =    378,496
      block    two 3x3 256->256: 2 x 590,080 = 1,180,160; CBAM MLP 256->16->256: 4,112 + 4,352
               = 8,464; spatial 7x7 2->1: 99; z fusion 1x1 (256 + 8)->256: 67,840     =  1,256,563
      decoder  3x3 transposed 256->128: 295,040; 128->64: 73,792; 7x7 64->3: 9,411       =    378,243
      total    378,496 + 9 x 1,256,563 + 378,243                                        = 12,065,806
      (SRAGAN's generator is the same without the 9 fusions: 12,065,806 - 9 x 67,840 = 11,455,246.)
    Tiny generator (ngf 4, 1 block, nz 8; C = 16, CBAM hidden max(1, 16 // 16) = 1):
      encoder 592 + 296 + 1,168 = 2,056; block 2 x 2,320 + (17 + 32) + 99 + (24 x 16 + 16 = 400) = 5,188;
      decoder 1,160 + 292 + 591 = 2,043; total 9,287.
    Encoder: BicycleGAN's E_ResNet, 2,590,032 at the config (the reference's count, test_methods_bicyclegan);
    tiny (nef 4, 4 blocks: widths 4, 8, 12, 16): 4x4 3->4: 196; blocks 4->8: 148 + 296 + 40 = 484,
      8->12: 584 + 876 + 108 = 1,568, 12->16: 1,308 + 1,744 + 208 = 3,260; heads 2 x (16 x 8 + 8) = 272;
      total 5,780.
    """
    model = LSRAGAN(lambda_perceptual=0.0)
    assert count(model.gen) == 12_065_806
    assert count(model.encoder) == 2_590_032
    assert count(model.disc) == count(model.disc2) == 3_458_978  # BicycleGAN's basic_256_multi, unchanged
    tiny = tiny_lsragan()
    assert count(tiny.gen) == 9_287
    assert count(tiny.encoder) == 5_780
    assert tiny.perceptual is None


def test_registered_as_a_paired_method_whose_config_needs_pairs_and_latents_of_size_nz():
    from i2ibench.registry import METHODS

    spec = METHODS.get("lsragan")
    assert spec.module_class is LSRAGAN and spec.dataset_mode == "paired" and spec.description
    config = yaml.safe_load(spec.config_path.read_text())
    args = config["model"]["init_args"]
    assert config["data"]["mode"] == "paired" and config["data"]["batch_size"] == 2
    assert config["data"]["latent_dim"] == args["nz"] == 8
    assert args["lambda_kl"] == 0.01 and args["lambda_ms"] == 1.0 and args["lambda_perceptual"] > 0
    assert args["perceptual_network"] == "vgg16"  # VGG where ImageNet weights can be had, as sragan


# -- z reaches the output --------------------------------------------------------------------------
def test_latent_outputs_differ_for_different_z_and_match_for_equal_z():
    """At the generator's own N(0, 0.02) init. z concatenated to the input would fail this: the stem's
    instance norm removes a constant plane exactly (test below)."""
    torch.manual_seed(0)
    model = tiny_lsragan().eval()
    x, z, out = assert_outputs_follow_latents(model, "A->B@latent")
    refs = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    guided = model.translate({"x": x, "x_ref": refs}, "A->B@reference")
    torch.testing.assert_close(guided[:, 1], model.gen(x, model.encoder(refs[:, 1])[0]))
    with pytest.raises(ValueError, match="LSRAGAN translates A->B only"):
        model.translate({"x": x, "z": z}, "B->A@latent")


def test_a_latent_at_the_input_would_be_erased_by_the_stems_instance_norm():
    """Why z joins after a norm (nets/lsragan.py): planes of a constant, convolved with reflection padding
    and instance-normalised, leave the stem's output unchanged, whatever the constant."""
    from i2ibench.nets.resnet import resnet_encoder

    torch.manual_seed(0)
    stem = resnet_encoder(3 + 8, 4, "instance")[:4]  # pad, 7x7 conv, instance norm, ReLU
    x = torch.rand(1, 3, 16, 16)
    planes = [torch.randn(1, 8, 1, 1).expand(-1, -1, 16, 16) for _ in range(2)]
    outputs = [stem(torch.cat([x, p], 1)) for p in planes]
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=0)


# -- the mode-seeking term -------------------------------------------------------------------------
def test_mode_seeking_term_against_a_hand_computation():
    """MSGAN: 1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| + 1e-5), means over all elements (the shared
    losses.mode_seeking_loss, which LSRAGAN's step uses)."""
    fake1 = torch.tensor([[[[0.5, -0.5], [0.25, 1.0]]]])
    fake2 = torch.tensor([[[[0.0, 0.5], [0.25, -1.0]]]])
    z1, z2 = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, 2.0]])
    # image distance: (0.5 + 1.0 + 0 + 2.0) / 4 = 0.875; latent distance: (1 + 4) / 2 = 2.5; ratio 0.35
    expected = 1.0 / (0.35 + 1e-5)
    assert mode_seeking_loss(fake1, fake2, z1, z2).item() == pytest.approx(expected, rel=1e-6)
    assert mode_seeking_loss(fake2, fake1, z2, z1).item() == pytest.approx(expected, rel=1e-6)  # symmetric
    assert mode_seeking_loss(fake1, fake1, z1, z2).item() == pytest.approx(1e5, rel=1e-6)  # collapse: 1 / eps


# -- training --------------------------------------------------------------------------------------
@pytest.mark.slow
@needs_inception
def test_one_training_step_updates_every_network_with_finite_losses(builtin_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_lsragan(lambda_perceptual=1.0, **OFFLINE)
    names = ("gen", "encoder", "disc", "disc2")
    before = snapshot(model, names)
    frozen = [p.detach().clone() for p in model.perceptual.parameters()]
    recorder = fit_one_step(model, paired_folder(tmp_path / "data", builtin_root), tmp_path)
    for name in names:
        assert all(changed(before[name], getattr(model, name))), f"{name} was not updated"
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.perceptual.parameters()))  # the loss net stays fixed
    losses = {k.removeprefix("train/"): v for k, v in recorder.steps[0].items()}
    terms = ("G_GAN", "G_GAN2", "G_L1", "kl", "z_L1", "G_perceptual", "G_ms")
    assert set(losses) == {*terms, "G_total", "D", "D2"}
    assert all(math.isfinite(v) for v in losses.values())
    assert losses["G_perceptual"] > 0 and losses["G_ms"] > 0
    assert losses["G_total"] == pytest.approx(sum(losses[k] for k in terms), rel=1e-5)


@pytest.mark.slow
def test_the_mode_seeking_term_alone_trains_the_generator_only(builtin_root, tmp_path):
    """With every other generator term weighted 0, only 1 / ratio drives G and E: it involves G alone, so
    G moves and E keeps its weights exactly."""
    pl.seed_everything(0)
    model = tiny_lsragan(lambda_L1=0.0, lambda_kl=0.0, lambda_z=0.0, lambda_GAN=0.0, lambda_GAN2=0.0)
    before = snapshot(model, ("gen", "encoder"))
    recorder = fit_one_step(model, paired_folder(tmp_path / "data", builtin_root), tmp_path)
    assert all(changed(before["gen"], model.gen))
    assert not any(changed(before["encoder"], model.encoder))
    assert recorder.steps[0]["train/G_total"] == pytest.approx(recorder.steps[0]["train/G_ms"], rel=1e-6)


# -- bad input -------------------------------------------------------------------------------------
def test_unpaired_data_is_refused_before_training(builtin_root, tmp_path):
    from i2ibench.data.images import DataError

    root = tmp_path / "unpaired"
    for split in ("train", "test"):
        for domain in ("A", "B"):
            shutil.copytree(builtin_root / f"test{domain}", root / f"{split}{domain}")
    (root / "trainB" / "0000.png").rename(root / "trainB" / "other.png")
    model = tiny_lsragan()
    with pytest.raises(DataError, match="paired training needs trainA/ and trainB/.*other"):
        fit_one_step(model, root, tmp_path)


def test_a_crop_the_generator_cannot_take_is_refused_before_training(builtin_root, tmp_path):
    from i2ibench.errors import ConfigError

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         max_epochs=1, default_root_dir=str(tmp_path))
    data = tiny_datamodule(paired_folder(tmp_path / "data", builtin_root), mode="paired", load_size=34, crop_size=30,
                           batch_size=2, latent_dim=8)
    with pytest.raises(ConfigError, match="data.crop_size 30 does not fit LSRAGAN's generator.*multiple of 4"):
        trainer.fit(tiny_lsragan(), data)
