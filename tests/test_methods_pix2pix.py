"""Pix2Pix: the reference's parameter counts, one training step, repeatable test-time noise, a CLI fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import inception_weights, tiny_datamodule

TINY = dict(generator_args={"ngf": 4, "num_downs": 5}, discriminator_args={"ndf": 4}, n_epochs=1, n_epochs_decay=1)


def tiny_pix2pix(**overrides):
    from i2ibench.methods.paired import Pix2Pix

    return Pix2Pix(**{**TINY, **overrides})


def paired_folder(root: Path, builtin_root: Path, count: int = 6) -> Path:
    """A small paired set from the built-in photo/sketch pairs: val pairs train, test pairs evaluate.

    (The built-in set's own trainA/ trainB/ share file names but are different crops: not pairs.)"""
    for split, source in (("train", "val"), ("test", "test")):
        for domain in ("A", "B"):
            (root / f"{split}{domain}").mkdir(parents=True)
            for path in sorted((builtin_root / f"{source}{domain}").iterdir())[:count]:
                shutil.copy(path, root / f"{split}{domain}" / path.name)
    return root


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- parameter counts against the reference's definition ------------------------------------------
def reference_unet_parameters(num_downs: int, ngf: int = 64, channels: int = 3) -> int:
    """Parameters of junyanz/pytorch-CycleGAN-and-pix2pix's UnetGenerator with norm=batch, written from
    its layer list (UnetSkipConnectionBlock): convs 4x4 without bias when batch norm follows (use_bias
    False), except the outermost transposed conv; batch norm has 2 parameters per channel."""
    def conv(cin: int, cout: int, bias: bool = False) -> int:
        return cin * cout * 16 + (cout if bias else 0)

    outer = conv(channels, ngf) + conv(ngf * 2, channels, bias=True)  # no norm; tanh
    middle = lambda o, i: conv(o, i) + 2 * i + conv(2 * i, o) + 2 * o  # down+norm, up+norm
    levels = middle(ngf, 2 * ngf) + middle(2 * ngf, 4 * ngf) + middle(4 * ngf, 8 * ngf)
    levels += (num_downs - 5) * middle(8 * ngf, 8 * ngf)  # the dropout levels
    innermost = conv(8 * ngf, 8 * ngf) + conv(8 * ngf, 8 * ngf) + 2 * 8 * ngf  # no down norm
    return outer + levels + innermost


def reference_patchgan_parameters(in_channels: int = 6, ndf: int = 64) -> int:
    """NLayerDiscriminator(n_layers=3, norm=batch): first and last conv with bias, the rest without, + BN."""
    first = in_channels * ndf * 16 + ndf
    middle = sum(a * b * 16 + 2 * b for a, b in ((ndf, 2 * ndf), (2 * ndf, 4 * ndf), (4 * ndf, 8 * ndf)))
    return first + middle + 8 * ndf * 16 + 1


def test_parameter_counts_match_the_reference():
    """unet_256 and the conditional 70x70 PatchGAN of the Pix2Pix defaults. The reference prints them as
    54.414 M and 2.769 M ([Network G] / [Network D] at the start of a pix2pix run)."""
    from i2ibench.methods.paired import Pix2Pix
    from i2ibench.nets.unet import UnetGenerator

    model = Pix2Pix()
    assert count(model.gen) == reference_unet_parameters(8) == 54_413_955
    assert count(model.disc) == reference_patchgan_parameters() == 2_768_705
    assert count(UnetGenerator(num_downs=7)) == reference_unet_parameters(7)  # unet_128
    assert count(UnetGenerator(num_downs=6, ngf=8)) == reference_unet_parameters(6, ngf=8)
    dropouts = [m for m in model.gen.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 3 and all(m.p == 0.5 for m in dropouts)


def test_a_crop_the_unet_cannot_take_is_refused_with_the_fix(builtin_root, tmp_path):
    from i2ibench.errors import ConfigError

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         max_epochs=1, default_root_dir=str(tmp_path))
    model = tiny_pix2pix(generator_args={"ngf": 4, "num_downs": 8})
    with pytest.raises(ConfigError, match=r"data.crop_size 32 .* num_downs 8.*set model.init_args.generator_args"
                                          r".num_downs to 5"):
        trainer.fit(model, tiny_datamodule(paired_folder(tmp_path / "data", builtin_root), mode="paired"))


# -- training ------------------------------------------------------------------------------------
class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


@pytest.mark.slow
def test_one_training_step_updates_generator_and_discriminator(builtin_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_pix2pix()
    before = {name: [p.detach().clone() for p in getattr(model, name).parameters()] for name in ("gen", "disc")}
    recorder = LossRecorder()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         num_sanity_val_steps=0, limit_val_batches=0, max_epochs=1, limit_train_batches=1,
                         callbacks=[recorder])
    trainer.fit(model, tiny_datamodule(paired_folder(tmp_path / "data", builtin_root), mode="paired"))
    for name, params in before.items():
        assert all(not torch.equal(a, b) for a, b in zip(params, getattr(model, name).parameters())
                   if a.ndim > 1), f"{name} was not updated"
    losses = recorder.steps[0]
    assert set(losses) == {f"train/{k}" for k in ("gen_adv", "gen_l1", "gen_total", "disc")}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses["train/gen_total"] == pytest.approx(losses["train/gen_adv"] + losses["train/gen_l1"], rel=1e-5)


# -- test-time noise -------------------------------------------------------------------------------
def test_test_time_dropout_and_statistics_are_per_image_and_repeatable():
    """The paper's inference (dropout on, batch statistics) made deterministic: an image's translation
    depends on its index, not on the batch it is in; running statistics are left alone."""
    torch.manual_seed(0)
    model = tiny_pix2pix(generator_args={"ngf": 4, "num_downs": 6}).eval()  # 6 downs: one dropout level
    images = torch.rand(4, 3, 64, 64) * 2 - 1
    running = [b.clone() for b in model.gen.buffers()]
    whole = model.translate({"A": images, "index": torch.arange(4)}, "A2B")
    alone = torch.cat([model.translate({"A": images[k:k + 1], "index": torch.tensor([k])}, "A2B") for k in range(4)])
    assert torch.equal(whole, alone)
    assert torch.equal(whole, model.translate({"A": images, "index": torch.arange(4)}, "A2B"))
    renumbered = model.translate({"A": images, "index": torch.arange(4) + 10}, "A2B")
    assert not torch.allclose(whole, renumbered)  # other dropout masks: the noise is really on
    assert all(torch.equal(a, b) for a, b in zip(running, model.gen.buffers()))
    assert all(not m.training for m in model.gen.modules())  # the contexts restored eval mode

    eval_model = tiny_pix2pix(generator_args={"ngf": 4, "num_downs": 6}, inference="eval")
    eval_model.load_state_dict(model.state_dict())
    eval_model.eval()
    plain = eval_model.translate({"A": images, "index": torch.arange(4)}, "A2B")
    assert torch.equal(plain, eval_model.gen(images)) and not torch.allclose(plain, whole)
    with pytest.raises(ValueError, match="A2B only"):
        model.translate({"B": images}, "B2A")


# -- the command line ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(inception_weights() is None, reason="no Inception weights")
def test_cli_fit_writes_a_record_with_ssim_and_psnr_against_the_ground_truth(builtin_root, tmp_path):
    from i2ibench.cli import main

    data = paired_folder(tmp_path / "data", builtin_root)
    out = tmp_path / "run"
    status = main(["fit", "--method", "pix2pix", "--data.dataset", str(data),
                   "--model.init_args.generator_args.ngf", "4", "--model.init_args.generator_args.num_downs", "5",
                   "--model.init_args.discriminator_args.ndf", "4", "--model.init_args.n_epochs", "1",
                   "--model.init_args.n_epochs_decay", "1", "--data.load_size", "36", "--data.crop_size", "32",
                   "--data.num_workers", "0", "--data.eval_batch_size", "8", "--trainer.max_epochs", "1",
                   "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                   "--trainer.num_sanity_val_steps", "0", "--trainer.accelerator", "cpu",
                   "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(out),
                   "--wandb.enabled", "false", "--evaluation.lpips", "off",
                   "--evaluation.weights", str(inception_weights())])
    assert status == 0
    records = sorted((out / "eval").glob("*.json"))
    assert records, f"no evaluation record in {out / 'eval'}"
    metrics = json.loads(records[-1].read_text())["metrics"]
    assert list(metrics) == ["A2B"]  # one direction
    assert 0 < metrics["A2B"]["ssim_gt"] < 1 and 0 < metrics["A2B"]["psnr_gt"] < 60


def test_cli_refuses_pix2pix_on_unpaired_data_in_one_line(builtin_root, tmp_path, capsys):
    from i2ibench.cli import main

    root = tmp_path / "unpaired"
    for split in ("train", "test"):
        for domain in ("A", "B"):
            shutil.copytree(builtin_root / f"test{domain}", root / f"{split}{domain}")
    (root / "trainB" / "0000.png").rename(root / "trainB" / "other.png")
    status = main(["fit", "--method", "pix2pix", "--data.dataset", str(root), "--data.num_workers", "0",
                   "--data.load_size", "36", "--data.crop_size", "32", "--trainer.max_epochs", "1",
                   "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
                   "--wandb.enabled", "false"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("i2ibench: error: ")]
    assert len(lines) == 1 and "paired training needs trainA/ and trainB/" in lines[0] and "other" in lines[0]
