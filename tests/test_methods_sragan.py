"""SRAGAN: registered as a paired method, its config builds the sizes it states, one training step
with the perceptual term, and a crop its generator cannot take refused before training."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import yaml

from conftest import inception_weights, tiny_datamodule
from test_methods_pix2pix import LossRecorder, paired_folder
from test_nets_attention import attention_generator_parameters, count

from i2ibench.methods.paired import Pix2Pix
from i2ibench.registry import METHODS, load_all

load_all()
WEIGHTS = inception_weights()
needs_inception = pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights for the offline perceptual network")


def config_args() -> dict:
    return yaml.safe_load(METHODS.get("sragan").config_path.read_text())["model"]["init_args"]


def offline(args: dict) -> dict:
    """The config with the offline Inception as its perceptual network (VGG-16 needs a download)."""
    return {**args, "perceptual_network": "inception", "perceptual_weights": str(WEIGHTS)}


def tiny_sragan() -> Pix2Pix:
    args = offline(config_args())
    args["generator_args"] = {**args["generator_args"], "ngf": 4, "n_blocks": 1}
    args["discriminator_args"] = {**args["discriminator_args"], "ndf": 4}
    return Pix2Pix(**{**args, "n_epochs": 1, "n_epochs_decay": 1})


def test_registered_as_a_paired_method_with_its_config():
    spec = METHODS.get("sragan")
    assert spec.module_class is Pix2Pix and spec.dataset_mode == "paired" and spec.description
    assert spec.config_path.is_file()
    args = config_args()
    assert args["generator"] == "attention-resnet" and args["lambda_perceptual"] > 0
    assert args["perceptual_network"] == "vgg16"  # VGG where ImageNet weights can be had


@needs_inception
def test_the_config_builds_the_stated_networks():
    """ngf 64, 9 CBAM blocks (counted by formula); D is Pix2Pix's conditional 70x70 PatchGAN; Pix2Pix
    itself keeps no perceptual network."""
    model = Pix2Pix(**offline(config_args()))
    assert count(model.gen) == attention_generator_parameters(64, 9) == 11_455_246
    assert count(model.disc) == 2_768_705  # the Pix2Pix reference's [Network D]
    assert model.perceptual is not None and model.perceptual.network == "inception"
    assert Pix2Pix().perceptual is None


@pytest.mark.slow
@needs_inception
def test_one_training_step_updates_g_and_d_with_a_finite_perceptual_term(builtin_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_sragan()
    before = {name: [p.detach().clone() for p in getattr(model, name).parameters()] for name in ("gen", "disc")}
    frozen = [p.detach().clone() for p in model.perceptual.parameters()]
    recorder = LossRecorder()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         num_sanity_val_steps=0, limit_val_batches=0, max_epochs=1, limit_train_batches=1,
                         callbacks=[recorder])
    trainer.fit(model, tiny_datamodule(paired_folder(tmp_path / "data", builtin_root), mode="paired"))
    for name, params in before.items():
        changed = [not torch.equal(a, b) for a, b in zip(params, getattr(model, name).parameters()) if a.ndim > 1]
        assert all(changed), f"{name}: {changed.count(False)} weight tensors not updated"
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.perceptual.parameters()))  # the loss net stays fixed
    losses = {k.removeprefix("train/"): v for k, v in recorder.steps[0].items()}
    assert set(losses) == {"gen_adv", "gen_l1", "gen_perceptual", "gen_total", "disc"}
    assert all(math.isfinite(v) for v in losses.values()) and losses["gen_perceptual"] > 0
    assert losses["gen_total"] == pytest.approx(losses["gen_adv"] + losses["gen_l1"] + losses["gen_perceptual"],
                                                rel=1e-5)


@needs_inception
def test_a_crop_the_generator_cannot_take_is_refused_before_training(builtin_root, tmp_path):
    from i2ibench.errors import ConfigError

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         max_epochs=1, default_root_dir=str(tmp_path))
    data = tiny_datamodule(paired_folder(tmp_path / "data", builtin_root), mode="paired", load_size=34, crop_size=30)
    with pytest.raises(ConfigError, match=r"data.crop_size 30 does not fit generator 'attention-resnet'.*"
                                          r"multiple of 4"):
        trainer.fit(tiny_sragan(), data)
