"""DualGAN (Wasserstein critics, clipping or gradient penalty) and CycleGAN's GAN-alone ablation."""

from __future__ import annotations

import copy
import math

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Callback
from torch import nn

from i2ibench.errors import ConfigError
from i2ibench.losses import clip_weights_, gradient_penalty, wasserstein_critic_loss
from i2ibench.methods.cyclegan import CycleGAN, DualGAN, tf1_rmsprop
from i2ibench.registry import DISCRIMINATORS, GENERATORS, METHODS, load_all

from conftest import tiny_datamodule
from test_methods_cyclegan import LossRecorder, cpu_trainer

load_all()
NETS = ("gen_AB", "gen_BA", "disc_A", "disc_B")


def config_args(method: str) -> dict:
    return yaml.safe_load(METHODS.get(method).config_path.read_text())["model"]["init_args"]


def tiny_dualgan(**overrides) -> DualGAN:
    """The dualgan config at 64 px (the critic's smallest: at 32 its last normed map is 1x1, a constant):
    ngf = ndf = 8, 6 U-Net levels, the critic's head sized for 64 px."""
    args = config_args("dualgan")
    args["generator_args"] = {**args["generator_args"], "ngf": 8, "num_downs": 6}
    args["discriminator_args"] = {**args["discriminator_args"], "ndf": 8, "image_size": 64}
    return DualGAN(**{**args, "n_epochs": 1, **overrides})


def datamodule_64(root, **overrides):
    return tiny_datamodule(root, **{"load_size": 72, "crop_size": 64, **overrides})


def snapshot(model) -> dict[str, list[torch.Tensor]]:
    return {name: [p.detach().clone() for p in getattr(model, name).parameters()] for name in NETS}


def changed(before: list[torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


class FirstBatch(Callback):
    """Keeps the first training batch as the module received it."""

    batch: dict | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.batch is None:
            self.batch = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}


# -- registration and configs -----------------------------------------------------------------------
def test_both_methods_are_listed_by_the_cli(capsys):
    from i2ibench.cli import main

    assert main(["methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "dualgan" in lines and "gan-alone" in lines
    assert METHODS.get("gan-alone").module_class is CycleGAN and METHODS.get("dualgan").module_class is DualGAN


def test_gan_alone_config_is_cyclegan_without_cycle_and_identity_terms():
    cyclegan, alone = config_args("cyclegan"), config_args("gan-alone")
    assert alone["lambda_A"] == alone["lambda_B"] == alone["lambda_identity"] == 0
    differing = {k for k in cyclegan if cyclegan[k] != alone.get(k)}
    assert differing == {"lambda_A", "lambda_B", "lambda_identity"}


def test_wasserstein_modes_are_refused_by_cyclegan_and_plain_modes_by_dualgan():
    with pytest.raises(ConfigError, match="gan_mode"):
        CycleGAN(gan_mode="wgan-gp", generator_args={"ngf": 8, "n_blocks": 1}, discriminator_args={"ndf": 8})
    with pytest.raises(ConfigError, match="gan_mode"):
        tiny_dualgan(gan_mode="lsgan")


# -- the shared Wasserstein helpers ---------------------------------------------------------------
def test_gradient_penalty_of_a_linear_critic_is_known_in_closed_form():
    """D(x) = <w, x> + b has gradient w everywhere: the penalty is (sqrt(|w|^2 + 1e-8) - 1)^2 for any x."""
    critic = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 1))
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    expected = (math.sqrt(critic[1].weight.pow(2).sum().item() + 1e-8) - 1) ** 2
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(expected, rel=1e-5)


def test_gradient_penalty_matches_a_plain_autograd_computation_on_a_conv_critic():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3))
    real, fake = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    eps = torch.rand(3, 1, 1, 1)
    penalty = gradient_penalty(critic, real, fake, epsilon=eps)
    # Independently: one sample at a time, its own interpolate, norm over all its pixels.
    expected = []
    for i in range(3):
        x = (eps[i] * fake[i] + (1 - eps[i]) * real[i]).unsqueeze(0).requires_grad_()
        (g,) = torch.autograd.grad(critic(x).sum(), x)
        expected.append((g.norm() - 1) ** 2)
    assert penalty.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-4)
    penalty.backward()  # the graph is kept: the penalty trains the critic's weights (biases do not enter a gradient)
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in (critic[0], critic[2]))


def test_wasserstein_critic_loss_and_clipping():
    assert wasserstein_critic_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.5])).item() == pytest.approx(-1.5)
    net = nn.Linear(4, 4)
    with torch.no_grad():
        net.weight.mul_(100)
    clip_weights_(net, 0.05)
    assert all(p.abs().max() <= 0.05 for p in net.parameters())


def test_tf1_rmsprop_first_step_starts_from_an_accumulator_of_one():
    """TF1's RMSProp: ms = 0.9 * 1 + 0.1 g^2, step lr * g / sqrt(ms); PyTorch's would start from 0."""
    p = nn.Parameter(torch.tensor([0.0, 0.0]))
    opt = tf1_rmsprop([p], lr=0.1, decay=0.9)
    g = torch.tensor([2.0, -0.5])
    p.grad = g.clone()
    opt.step()
    expected = -0.1 * g / torch.sqrt(0.9 + 0.1 * g**2)
    assert torch.allclose(p.detach(), expected, atol=1e-7)


# -- the networks ------------------------------------------------------------------------------------
def reference_generator_count(ngf: int = 64, channels: int = 3, levels: int = 8) -> int:
    """Parameters of duxingren14/DualGAN's `fcn`, from its variables: conv/deconv `w` k x k x in x out
    plus `biases` out; `batch_norm` scale + center per channel after every layer but e1 and d8."""
    widths = [ngf * min(2**i, 8) for i in range(levels)]
    count = 5 * 5 * channels * widths[0] + widths[0]  # e1
    for prev, out in zip(widths, widths[1:]):  # e2..e8, each normed
        count += 3 * 3 * prev * out + out + 2 * out
    in_width = widths[-1]
    for out in reversed(widths[:-1]):  # d1..d7, each normed, then concatenated with its skip
        count += 3 * 3 * in_width * out + out + 2 * out
        in_width = 2 * out
    return count + 5 * 5 * in_width * channels + channels  # d8


def reference_critic_count(ndf: int = 64, channels: int = 3, image_size: int = 256) -> int:
    """Parameters of its `discriminator` with `globalgan`: h0 (5x5), h1..h3_1 (3x3, normed), linear."""
    widths = [ndf, 2 * ndf, 4 * ndf, 8 * ndf, 8 * ndf]
    count = 5 * 5 * channels * ndf + ndf
    for prev, out in zip(widths, widths[1:]):
        count += 3 * 3 * prev * out + out + 2 * out
    return count + widths[-1] * (image_size // 32) ** 2 + 1


def test_parameter_counts_at_the_configured_sizes_match_the_reference():
    args = config_args("dualgan")
    with torch.device("meta"):  # shapes only: no memory, no init time
        gen = GENERATORS.get(args["generator"])(**args["generator_args"])
        critic = DISCRIMINATORS.get(args["discriminator"])(**args["discriminator_args"])
    assert sum(p.numel() for p in gen.parameters()) == reference_generator_count() == 30_627_907
    assert sum(p.numel() for p in critic.parameters()) == reference_critic_count() == 3_949_441


def test_generator_keeps_the_image_size_and_its_innermost_norm_takes_a_1x1_map():
    gen = GENERATORS.get("dualgan-unet")(ngf=4, num_downs=6)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = gen(x)
    assert y.shape == x.shape and y.abs().max() <= 1


# -- training steps ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("gan_mode", ["wgan-gp", "wgan-clip"])
def test_one_step_updates_both_generators_and_both_critics(gan_mode, builtin_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_dualgan(gan_mode=gan_mode)
    before = snapshot(model)
    recorder = LossRecorder()
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[recorder]).fit(
        model, datamodule_64(builtin_root))
    for name in NETS:
        assert changed(before[name], getattr(model, name)), name
    losses = {k.removeprefix("train/"): v for k, v in recorder.steps[0].items()}
    assert all(math.isfinite(v) for v in losses.values())
    expected = {"gen_adv_A2B", "gen_adv_B2A", "gen_cycle_A", "gen_cycle_B", "gen_total", "disc_A", "disc_B"}
    if gan_mode == "wgan-gp":
        expected |= {"disc_gp_A", "disc_gp_B"}
    assert set(losses) == expected
    if gan_mode == "wgan-clip":  # every critic weight, the norms' scales (init ~1) included, within [-c, c]
        c = model.hparams.clip_value
        for name in ("disc_A", "disc_B"):
            assert any(b.abs().max() > c for b in before[name])  # so the clip had something to do
            assert all(p.abs().max() <= c for p in getattr(model, name).parameters())


@pytest.mark.slow
def test_with_n_critic_2_the_first_batch_trains_the_critics_only(builtin_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_dualgan(n_critic=2)
    before = snapshot(model)
    recorder = LossRecorder()
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[recorder]).fit(
        model, datamodule_64(builtin_root))
    assert changed(before["disc_A"], model.disc_A) and changed(before["disc_B"], model.disc_B)
    assert not changed(before["gen_AB"], model.gen_AB) and not changed(before["gen_BA"], model.gen_BA)
    assert not any(k.startswith("train/gen_") for k in recorder.steps[0])


def test_a_crop_size_the_global_critic_was_not_built_for_is_refused_before_training(builtin_root, tmp_path):
    model = tiny_dualgan()
    with pytest.raises(ConfigError, match="image_size is 64 but data.crop_size is 128"):
        cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(
            model, datamodule_64(builtin_root, load_size=128, crop_size=128))
    with pytest.raises(ConfigError, match="crop_size 32 is too small"):
        cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(model, tiny_datamodule(builtin_root))


# -- GAN alone ---------------------------------------------------------------------------------------
def tiny_gan_alone() -> CycleGAN:
    args = config_args("gan-alone")
    args["generator_args"] = {**args["generator_args"], "ngf": 8, "n_blocks": 1}
    args["discriminator_args"] = {**args["discriminator_args"], "ndf": 8}
    return CycleGAN(**{**args, "n_epochs": 1, "n_epochs_decay": 1})


def test_gan_alone_runs_each_generator_once_and_has_adversarial_terms_only():
    torch.manual_seed(0)
    model = tiny_gan_alone()
    calls = {"gen_AB": 0, "gen_BA": 0}
    for name in calls:
        getattr(model, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    batch = {"A": torch.rand(1, 3, 32, 32) * 2 - 1, "B": torch.rand(1, 3, 32, 32) * 2 - 1}
    images = model.forward_cycle(batch)
    losses = model.generator_losses(images)
    assert calls == {"gen_AB": 1, "gen_BA": 1}  # no reconstruction, no identity forward
    assert "rec_A" not in images and "rec_B" not in images
    assert set(losses) == {"adv_A2B", "adv_B2A"}


@pytest.mark.slow
def test_gan_alone_generator_update_is_one_adam_step_on_the_lsgan_loss_alone(builtin_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_gan_alone()
    initial = copy.deepcopy(model)
    recorder, first = LossRecorder(), FirstBatch()
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[recorder, first]).fit(
        model, tiny_datamodule(builtin_root))
    losses = {k.removeprefix("train/"): v for k, v in recorder.steps[0].items()}
    assert set(losses) == {"gen_adv_A2B", "gen_adv_B2A", "gen_total", "disc_A", "disc_B"}

    # By hand: LSGAN generator loss (D(G(x)) - 1)^2 of both directions, one Adam step (2e-4, 0.5, 0.999).
    real_A, real_B = first.batch["A"], first.batch["B"]
    gens = [initial.gen_AB, initial.gen_BA]
    hand_loss = ((initial.disc_B(initial.gen_AB(real_A)) - 1) ** 2).mean() \
        + ((initial.disc_A(initial.gen_BA(real_B)) - 1) ** 2).mean()
    assert hand_loss.item() == pytest.approx(losses["gen_total"], rel=1e-5)
    adam = torch.optim.Adam([p for g in gens for p in g.parameters()], lr=2e-4, betas=(0.5, 0.999))
    adam.zero_grad()
    hand_loss.backward()
    adam.step()
    for mine, theirs in ((model.gen_AB, initial.gen_AB), (model.gen_BA, initial.gen_BA)):
        for p, q in zip(mine.parameters(), theirs.parameters()):
            assert torch.allclose(p, q, atol=1e-6, rtol=0)
