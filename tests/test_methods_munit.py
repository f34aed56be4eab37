"""MUNIT: the reference's parameter counts, its schedule, style plumbing (@latent / @reference), one
training step, the set-up checks, and validation through the datamodule on a two-domain folder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from conftest import assert_outputs_follow_latents, cpu_trainer, tiny_datamodule

# 32 px: a 4-wide auto-encoder with one residual block; 2-scale discriminators of 2 layers (the
# reference's 3 scales x 4 layers need 61 px at least).
TINY_GEN = {"dim": 4, "mlp_dim": 8, "n_res": 1}
TINY_DIS = {"dim": 4, "n_layer": 2, "num_scales": 2}
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "methods" / "munit.yaml"


def tiny_munit(**overrides):
    from i2ibench.methods.munit import MUNIT

    return MUNIT(**{"generator_args": TINY_GEN, "discriminator_args": TINY_DIS, **overrides})


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- the reference's networks ----------------------------------------------------------------------
def test_parameter_counts_match_the_reference():
    """Literals from instantiating NVlabs/MUNIT networks.py (AdaINGen, MsImageDis) with
    configs/edges2handbags_folder.yaml (and with gen dim 8 / mlp_dim 16 / n_res 1, dis dim 8 /
    n_layer 2 / num_scales 2): 15,026,187 per auto-encoder (style encoder 2,764,936, content encoder
    5,385,856, decoder 5,754,627, MLP 1,120,768) and 8,271,171 per discriminator."""
    from i2ibench.methods.munit import MUNIT
    from i2ibench.nets.munit import AdaINAutoEncoder, MultiScaleDiscriminator

    model = MUNIT()
    for gen in (model.gen_a, model.gen_b):
        assert count(gen) == 15_026_187
        assert (count(gen.enc_style), count(gen.enc_content), count(gen.dec), count(gen.mlp)) == (
            2_764_936, 5_385_856, 5_754_627, 1_120_768)
    assert count(model.dis_a) == count(model.dis_b) == 8_271_171
    assert count(AdaINAutoEncoder(dim=8, mlp_dim=16, n_res=1)) == 112_875
    assert count(MultiScaleDiscriminator(dim=8, n_layer=2, num_scales=2)) == 4_946
    assert model.gen_a.dec.num_adain_params == 4 * 2 * 2 * 256  # 4 blocks x 2 AdaIN x (mean, std) x 256


def test_config_is_the_references_default_recipe():
    from i2ibench.methods.munit import MUNIT
    from i2ibench.registry import METHODS

    config = yaml.safe_load(CONFIG.read_text())
    args = config["model"]["init_args"]
    assert config["data"]["latent_dim"] == args["generator_args"]["style_dim"] == 8
    assert config["data"]["mode"] == "unaligned" and config["data"]["batch_size"] == 1
    assert config["data"]["samples_per_epoch"] * config["trainer"]["max_epochs"] == 1_000_000  # max_iter
    assert METHODS.get("munit").dataset_mode == "two-domain"
    model = MUNIT(**args)
    assert count(model.gen_a) == 15_026_187 and count(model.dis_a) == 8_271_171


def test_learning_rate_halves_every_100k_iterations_counted_as_the_references_steplr():
    """The reference steps StepLR before each update, so 0-based iteration 99,999 is the first at half rate."""
    model = tiny_munit()
    assert [model.lr_factor(i) for i in (0, 99_998, 99_999, 199_998, 199_999, 999_999)] == [
        1.0, 1.0, 0.5, 0.5, 0.25, 0.5**10]


def test_initialisation_is_kaiming_for_the_auto_encoders_and_gaussian_for_the_discriminators():
    torch.manual_seed(0)
    model = tiny_munit(generator_args={"dim": 64, "mlp_dim": 256, "n_res": 1})
    first = model.gen_a.enc_content.model[0][1]  # 7x7 conv, 3 -> 64: kaiming std sqrt(2 / (3 * 49))
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / 147), rel=0.05)
    assert torch.count_nonzero(first.bias) == 0
    dis_conv = model.dis_a.scales[0][0][1]
    assert dis_conv.weight.std().item() == pytest.approx(0.02, rel=0.1)


# -- styles: @latent and @reference ------------------------------------------------------------------
def test_eval_tasks_are_both_directions_latent_and_reference():
    assert tiny_munit().eval_tasks(("A", "B")) == ["A->B@latent", "A->B@reference", "B->A@latent", "B->A@reference"]


def test_latent_outputs_differ_for_different_styles_and_match_for_equal_styles():
    torch.manual_seed(0)
    model = tiny_munit().eval()
    x, z, out = assert_outputs_follow_latents(model, "A->B@latent")  # z: the style codes
    assert out.abs().max() <= 1
    # A->B decodes A's content with B's decoder; B->A the other pair
    content = model.gen_a.enc_content(x)
    torch.testing.assert_close(out[:, 1], model.gen_b.decode(content, z[:, 1]))
    back = model.translate({"x": x, "z": z}, "B->A@latent")
    torch.testing.assert_close(back[:, 1], model.gen_a.decode(model.gen_b.enc_content(x), z[:, 1]))


def test_reference_guided_outputs_use_the_target_domains_style_encoder():
    torch.manual_seed(0)
    model = tiny_munit().eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    refs = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    out = model.translate({"x": x, "x_ref": refs}, "A->B@reference")
    content = model.gen_a.enc_content(x)
    for k in range(2):
        torch.testing.assert_close(out[:, k], model.gen_b.decode(content, model.gen_b.enc_style(refs[:, k])))
        # not the source domain's style encoder
        assert not torch.allclose(out[:, k], model.gen_b.decode(content, model.gen_a.enc_style(refs[:, k])))
    assert not torch.allclose(out[:, 0], out[:, 1])
    back = model.translate({"x": x, "x_ref": refs}, "B->A@reference")
    expected = model.gen_a.decode(model.gen_b.enc_content(x), model.gen_a.enc_style(refs[:, 0]))
    torch.testing.assert_close(back[:, 0], expected)


def test_unknown_tasks_and_wrong_style_sizes_are_refused():
    model = tiny_munit().eval()
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="between A and B"):
        model.translate({"x": x, "z": torch.randn(1, 2, 8)}, "A->C@latent")
    with pytest.raises(ValueError, match="style_dim 8"):
        model.translate({"x": x, "z": torch.randn(1, 2, 4)}, "A->B@latent")


# -- set-up checks (before training) -----------------------------------------------------------------
@pytest.mark.parametrize("overrides, data, message", [
    ({}, {"latent_dim": 16}, "data.latent_dim .16. must equal"),
    ({"discriminator_args": {"dim": 4}}, {}, r"data.crop_size 32 is too small .*\(at least 61 px\)"),
    ({}, {"crop_size": 30, "load_size": 34}, "data.crop_size 30 must be a multiple of 4"),
    ({}, {"mode": "multi-domain"}, "data.mode: unaligned"),
])
def test_bad_settings_are_refused_before_training(builtin_root, tmp_path, overrides, data, message):
    from i2ibench.errors import ConfigError

    model = tiny_munit(**overrides)
    with pytest.raises(ConfigError, match=message):
        cpu_trainer(tmp_path, max_steps=1).fit(model, tiny_datamodule(builtin_root, **{"latent_dim": 8, **data}))
    assert model.iterations == 0


def test_perceptual_loss_is_refused_with_the_reason():
    from i2ibench.errors import ConfigError

    with pytest.raises(ConfigError, match="vgg_w"):
        tiny_munit(vgg_w=1.0)


# -- training ------------------------------------------------------------------------------------------
class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k.removeprefix("train/"): float(v) for k, v in trainer.callback_metrics.items()
                           if k.startswith("train/")})


NETWORKS = ("gen_a", "gen_b", "dis_a", "dis_b")
TERMS = ("gen_adv_a", "gen_adv_b", "gen_recon_x_a", "gen_recon_x_b", "gen_recon_s_a", "gen_recon_s_b",
         "gen_recon_c_a", "gen_recon_c_b")


@pytest.mark.slow
@pytest.mark.parametrize("cycle", [0.0, 10.0])
def test_one_training_step_updates_every_network_with_finite_losses(builtin_root, tmp_path, cycle):
    pl.seed_everything(0)
    model = tiny_munit(recon_x_cyc_w=cycle, lr_step_size=1)
    before = {name: [p.detach().clone() for p in getattr(model, name).parameters()] for name in NETWORKS}
    recorder = LossRecorder()
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[recorder]).fit(
        model, tiny_datamodule(builtin_root, latent_dim=8))
    for name, params in before.items():
        changed = [not torch.equal(old, new) for old, new in zip(params, getattr(model, name).parameters())]
        assert all(changed), f"{name}: {changed.count(False)} of {len(changed)} parameter tensors did not change"
    losses = recorder.steps[0]
    terms = TERMS + (("gen_cycrecon_x_a", "gen_cycrecon_x_b") if cycle else ())
    assert set(losses) == {*terms, "gen_total", "dis_a", "dis_b"}
    assert all(math.isfinite(v) for v in losses.values())
    assert losses["gen_total"] == pytest.approx(sum(losses[t] for t in terms), rel=1e-5)
    assert model.iterations == 1
    # lr_step_size 1: the reference's StepLR has already stepped once before the first update
    assert [opt.param_groups[0]["lr"] for opt in model.optimizers()] == [pytest.approx(0.5e-4)] * 2


# -- evaluation through the datamodule ----------------------------------------------------------------
class EvalRecorder(pl.Callback):
    def __init__(self) -> None:
        self.seen = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        style = batch["z"] if "z" in batch else batch["x_ref"]
        self.seen.append((batch["task"][0], tuple(outputs.shape), tuple(style.shape), list(batch["x_path"])))


@pytest.mark.slow
def test_validate_on_an_unaligned_folder_translates_every_task_with_k_styles(builtin_root, tmp_path):
    """A real Trainer `validate` on a two-domain folder: the datamodule builds MultiDomainEvalSet for the
    four `@` tasks (domains A, B), with latents of the style size or target-domain references, and
    `translate` returns N x K images for each (the EvaluationCallback's input; its metrics are tested
    elsewhere, here they would only add an Inception pass)."""
    model = tiny_munit()
    recorder = EvalRecorder()
    cpu_trainer(tmp_path, limit_val_batches=1, callbacks=[recorder]).validate(
        model, tiny_datamodule(builtin_root, latent_dim=8, outputs_per_source=3, eval_batch_size=2))
    assert [task for task, *_ in recorder.seen] == ["A->B@latent", "A->B@reference", "B->A@latent", "B->A@reference"]
    for task, out_shape, style_shape, paths in recorder.seen:
        assert out_shape == (2, 3, 3, 32, 32)
        assert style_shape == ((2, 3, 8) if task.endswith("@latent") else (2, 3, 3, 32, 32))
        assert all(Path(p).parent.name == f"val{task[0]}" for p in paths)  # sources from the task's source domain
