"""DRIT++ and MSGAN: the reference's parameter counts, the mode-seeking term, one training step, the
content discriminator's schedule, latent / reference plumbing and the set-up checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from conftest import assert_outputs_follow_latents, tiny_datamodule

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "methods"
# 32 px: content codes 8 x 8 (one 3x3 stride-2 conv in the content discriminator), 3 attribute
# halvings, 2 discriminator scales of 3 halvings (32 -> 4, 16 -> 2).
TINY = dict(content_encoder_args={"dim": 4, "n_res": 1}, attribute_encoder_args={"ndf": 4, "n_blocks": 3},
            generator_args={"n_res": 1}, discriminator_args={"ch": 4, "n_layers": 3, "n_scales": 2},
            content_discriminator_args={"n_layers": 1, "kernel_size": 3}, n_epochs=1, n_epochs_decay=1)


def tiny_drit(**overrides):
    from i2ibench.methods.drit import DRIT

    return DRIT(**{**TINY, **overrides})


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- parameter counts against the reference ---------------------------------------------------------
def test_parameter_counts_match_the_reference():
    """The literals are the reference's own modules (HsinYingLee/DRIT master, src/networks.py) built at
    its defaults: E_content(3, 3), E_attr_concat(3, 3, 8, None, lrelu), G_concat(3, 3, nz=8),
    MultiScaleDis(3, 3) and Dis_content(), counted with the same sum over parameters. (Loading those
    modules' weights into ours also gave equal outputs on 216 px inputs, checked once outside the repo.)"""
    from i2ibench.methods.drit import DRIT

    model = DRIT()
    assert count(model.enc_c) == 9_018_112
    assert count(model.enc_c.shared) == 1_180_160  # E_content.conv_share: one block for both domains
    assert count(model.enc_a) == 2_688_160
    assert count(model.gen) == 9_564_710
    assert count(model.gen.shared) == 1_180_160  # G_concat.dec_share
    for dis in model.domain_discriminators:
        assert count(dis) == 8_271_171
    assert count(model.dis_content) == 10_683_649
    # no norm layer in either discriminator (the reference's LeakyReLUConv2d never adds one)
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in model.dis_content.modules())


def test_both_methods_share_one_class_and_differ_only_in_the_mode_seeking_weight():
    from i2ibench.methods.drit import DRIT
    from i2ibench.registry import METHODS

    drit, msgan = METHODS.get("drit"), METHODS.get("msgan")
    assert drit.module_class is msgan.module_class is DRIT
    assert drit.dataset_mode == msgan.dataset_mode == "two-domain"
    configs = {name: yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()) for name in ("drit", "msgan")}
    drit_args, msgan_args = (configs[n]["model"]["init_args"] for n in ("drit", "msgan"))
    assert drit_args.pop("lambda_ms") == 0.0 and msgan_args.pop("lambda_ms") == 1.0
    assert drit_args == msgan_args
    assert configs["drit"]["data"] == configs["msgan"]["data"]
    assert configs["drit"]["data"]["latent_dim"] == drit_args["nz"] == 8
    assert (configs["drit"]["data"]["load_size"], configs["drit"]["data"]["crop_size"]) == (256, 216)
    assert configs["drit"]["trainer"]["max_epochs"] == 1200


def test_learning_rate_schedule_is_the_references_lambda_rule():
    """--n_ep 1200 --n_ep_decay 600: lr factor after epoch ep is 1 - max(0, ep - 600) / 601."""
    config = yaml.safe_load((CONFIGS / "drit.yaml").read_text())["model"]["init_args"]
    from i2ibench.methods.schedules import linear_decay

    factor = linear_decay(config["n_epochs"], config["n_epochs_decay"])
    for epoch in (0, 599, 600, 601, 900, 1199):
        assert factor(epoch) == pytest.approx(1.0 - max(0, epoch - 600) / 601)


# -- the mode-seeking term ----------------------------------------------------------------------
def test_mode_seeking_loss_matches_a_hand_computation():
    from i2ibench.losses import mode_seeking_loss

    fake_1 = torch.zeros(1, 1, 2, 2)
    fake_2 = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]])  # mean |difference| = 10 / 4 = 2.5
    z_1, z_2 = torch.tensor([[0.5, 0.0]]), torch.tensor([[1.5, -3.0]])  # mean |difference| = 4 / 2 = 2
    loss = mode_seeking_loss(fake_1, fake_2, z_1, z_2)
    assert float(loss) == pytest.approx(1 / (2.5 / 2 + 1e-5), rel=1e-6)
    # identical outputs: the ratio is 0 and the loss 1 / eps, the collapse it punishes
    assert float(mode_seeking_loss(fake_2, fake_2, z_1, z_2)) == pytest.approx(1e5)
    # minimising it pushes the outputs apart: the gradient on fake_2 points towards fake_1
    fake_2.requires_grad_(True)
    mode_seeking_loss(fake_1, fake_2, z_1, z_2).backward()
    assert torch.all(fake_2.grad * fake_2.detach() < 0)


# -- latent and reference plumbing ----------------------------------------------------------------
def test_latent_outputs_differ_for_different_z_and_match_for_equal_z():
    torch.manual_seed(0)
    model = tiny_drit().eval()
    # eval mode: no noise on the content code, so translating twice gives the same tensor
    x, z, _ = assert_outputs_follow_latents(model, "A->B@latent", min_change=1e-4)
    assert_outputs_follow_latents(model, "B->A@latent", min_change=1e-4, x=x, z=z)
    # the two directions use different decoders
    assert not torch.allclose(model.translate({"x": x, "z": z}, "A->B@latent"),
                              model.translate({"x": x, "z": z}, "B->A@latent"))


def test_reference_guided_outputs_use_the_attribute_mean_of_the_target_domain_reference():
    torch.manual_seed(0)
    model = tiny_drit().eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    refs = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    out = model.translate({"x": x, "x_ref": refs}, "A->B@reference")
    mus = [model.enc_a(refs[:, k], "b")[0] for k in range(2)]
    for k in range(2):
        torch.testing.assert_close(out[:, k], model.gen(model.enc_c(x, "a"), mus[k], "b"))
    assert not torch.equal(mus[0], mus[1]) and not torch.equal(out[:, 0], out[:, 1])
    # the target domain's attribute encoder: B's branch, not A's
    mu_a = model.enc_a(refs[:, 0], "a")[0]
    assert not torch.equal(out[:, 0], model.gen(model.enc_c(x, "a"), mu_a, "b"))


def test_eval_tasks_are_both_directions_in_both_modes():
    from i2ibench.errors import ConfigError

    model = tiny_drit()
    assert model.eval_tasks(("A", "B")) == ["A->B@latent", "A->B@reference", "B->A@latent", "B->A@reference"]
    with pytest.raises(ConfigError, match="two domains"):
        model.eval_tasks(("cat", "dog", "wild"))
    x = torch.zeros(1, 3, 32, 32)
    for task in ("A2B", "A->B", "A->A@latent", "A->C@latent"):
        with pytest.raises(ValueError):
            model.translate({"x": x, "A": x, "z": torch.zeros(1, 1, 8)}, task)


# -- training --------------------------------------------------------------------------------------
class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def fit(model, data: Path, root: Path, batches: int = 1, batch_size: int = 2, **data_args) -> LossRecorder:
    recorder = LossRecorder()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
                         num_sanity_val_steps=0, limit_val_batches=0, max_epochs=1, limit_train_batches=batches,
                         callbacks=[recorder])
    trainer.fit(model, tiny_datamodule(data, batch_size=batch_size, latent_dim=8, **data_args))
    return recorder


NETWORKS = ("enc_c", "enc_a", "gen", "dis_a", "dis_b", "dis_a2", "dis_b2", "dis_content")
EG_TERMS = ("G_adv_A", "G_adv_B", "G_content_A", "G_content_B", "cross_cycle_A", "cross_cycle_B", "self_recon_A",
            "self_recon_B", "kl_attr_A", "kl_attr_B", "kl_content_A", "kl_content_B")
ALONE_TERMS = ("G2_adv_A", "G2_adv_B", "latent_A", "latent_B")
D_TERMS = ("D_A", "D_B", "D_A2", "D_B2", "D_content")


@pytest.mark.slow
@pytest.mark.parametrize("lambda_ms", [0.0, 1.0], ids=["drit", "msgan"])
def test_one_training_step_updates_every_network_with_finite_losses(builtin_root, tmp_path, lambda_ms):
    pl.seed_everything(0)
    model = tiny_drit(lambda_ms=lambda_ms)
    before = {name: [p.detach().clone() for p in getattr(model, name).parameters()] for name in NETWORKS}
    recorder = fit(model, builtin_root, tmp_path)  # 1 batch: the epoch's last, so a full step
    for name in NETWORKS:
        after = list(getattr(model, name).parameters())
        unchanged = [i for i, (a, b) in enumerate(zip(before[name], after)) if torch.equal(a, b)]
        assert not unchanged, f"{name}: parameters {unchanged} were not updated"
    losses = recorder.steps[0]
    ms_terms = ("mode_seeking_AB", "mode_seeking_BA") if lambda_ms else ()
    expected = {*EG_TERMS, *ALONE_TERMS, *ms_terms, *D_TERMS, "EG_total", "G_alone_total"}
    assert set(losses) == {f"train/{k}" for k in expected}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses["train/EG_total"] == pytest.approx(sum(losses[f"train/{k}"] for k in EG_TERMS), rel=1e-5)
    alone = sum(losses[f"train/{k}"] for k in (*ALONE_TERMS, *ms_terms))
    assert losses["train/G_alone_total"] == pytest.approx(alone, rel=1e-5)
    if lambda_ms:  # 1 / (ratio + eps) of two outputs of one content code: positive, finite
        assert losses["train/mode_seeking_AB"] > 0 and losses["train/mode_seeking_BA"] > 0


@pytest.mark.slow
def test_content_discriminator_steps_alone_on_all_but_every_d_iter_th_batch(builtin_root, tmp_path):
    """4 batches at d_iter 3 (the reference's train.py): batches 0 and 1 update the content discriminator
    alone; batch 2 (the 3rd) and batch 3 (one of the epoch's last two) are full steps, each updating it
    once more, the domain discriminators and E_attr once, and E_c and G twice (update_EG's two steps)."""
    pl.seed_everything(0)
    model = tiny_drit()
    recorder = fit(model, builtin_root, tmp_path, batches=4)
    from i2ibench.methods.drit import OPTIMIZERS

    steps = {name: int(opt.state_dict()["state"][0]["step"]) for name, opt in zip(OPTIMIZERS, model.trainer.optimizers)}
    assert steps == {"dis_a": 2, "dis_b": 2, "dis_a2": 2, "dis_b2": 2, "dis_content": 4, "enc_c": 4, "enc_a": 2,
                     "gen": 4}
    assert [set(s) == {"train/D_content"} for s in recorder.steps] == [True, True, False, False]
    lrs = [opt.param_groups[0]["initial_lr"] for opt in model.trainer.optimizers]
    assert lrs == [pytest.approx(1e-4)] * 4 + [pytest.approx(1e-4 / 2.5)] + [pytest.approx(1e-4)] * 3
    assert all(opt.param_groups[0]["weight_decay"] == 1e-4 for opt in model.trainer.optimizers)


def test_setup_refuses_bad_latent_size_odd_batch_and_small_images(builtin_root, tmp_path):
    from i2ibench.errors import ConfigError

    with pytest.raises(ConfigError, match="data.latent_dim .16. must equal model.init_args.nz .8."):
        pl.Trainer(accelerator="cpu", logger=False, max_epochs=1).fit(
            tiny_drit(), tiny_datamodule(builtin_root, batch_size=2))
    with pytest.raises(ConfigError, match="data.batch_size 1 .*even number per process"):
        fit(tiny_drit(), builtin_root, tmp_path, batch_size=1)
    with pytest.raises(ConfigError, match="content discriminator"):
        fit(tiny_drit(content_discriminator_args={"n_layers": 3, "kernel_size": 7}), builtin_root, tmp_path)
    with pytest.raises(ConfigError, match="multiple of 4"):
        fit(tiny_drit(), builtin_root, tmp_path, load_size=32, crop_size=30)
