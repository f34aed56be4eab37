"""StarGAN (v1): the reference's sizes, its critic loss by hand, n_critic, the schedule, label-guided evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from i2ibench.errors import ConfigError
from i2ibench.methods.stargan import StarGAN
from i2ibench.nets.stargan import Discriminator, Generator

from conftest import cpu_trainer, tiny_datamodule


def tiny_stargan(**overrides) -> StarGAN:
    """32 px: 4 stride-2 convolutions leave a 2 x 2 map, so the classifier kernel is 2 (the reference's 128 / 64)."""
    settings = dict(image_size=32, num_domains=3, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=4,
                    num_iters=100, num_iters_decay=50)
    return StarGAN(**{**settings, **overrides})


@pytest.fixture(scope="module")
def multi_root(i2ibench_home) -> Path:
    from i2ibench.data.embedded import materialize

    return materialize("builtin-multi", size=32)


def multi_datamodule(root: Path, **overrides):
    settings = dict(load_size=32, crop_size=32, mode="multi-domain", samples_per_epoch=8, batch_size=2)
    return tiny_datamodule(root, **{**settings, **overrides})


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("c_dim, generator, discriminator", [(5, 8_430_528, 44_762_048), (3, 8_424_256, 44_745_664)])
def test_parameter_counts_match_the_reference_at_128px(c_dim, generator, discriminator):
    # Literals from instantiating yunjey/stargan model.py's Generator(64, c_dim, 6) and
    # Discriminator(128, 64, c_dim, 6) (its defaults; c_dim 5 is its CelebA default).
    with torch.device("meta"):
        assert count(Generator(64, c_dim, 6)) == generator
        assert count(Discriminator(128, 64, c_dim, 6)) == discriminator


def test_discriminator_outputs_a_patch_map_and_domain_logits_at_128px():
    src, cls = Discriminator(128, 4, 5, 6)(torch.zeros(2, 3, 128, 128))
    assert src.shape == (2, 1, 2, 2) and cls.shape == (2, 5)


def test_generator_uses_per_image_statistics_in_eval_mode_and_evaluation_leaves_its_state():
    """As the reference, which never calls G.eval(): plain InstanceNorm2d(track_running_stats=True)
    would normalise by the running averages in eval mode and give other images."""
    torch.manual_seed(0)
    generator = Generator(8, 3, 1)
    x, c = torch.randn(2, 3, 16, 16) * 3 + 1, torch.eye(3)[[0, 2]]
    train_output = generator(x, c)  # also advances the running averages once
    buffers = [b.clone() for b in generator.buffers()]
    generator.eval()
    assert torch.equal(generator(x, c), train_output)
    assert all(torch.equal(a, b) for a, b in zip(buffers, generator.buffers()))


def test_critic_loss_equals_the_reference_formula_by_hand():
    """solver.py's D loss, computed here from its formulas, with the same RNG draws."""
    torch.manual_seed(0)
    model = tiny_stargan()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    y_org, y_trg = torch.tensor([0, 1, 2, 0]), torch.tensor([2, 0, 1, 1])
    torch.manual_seed(1)
    losses = model.critic_losses(x, y_org, y_trg)

    torch.manual_seed(1)
    D, G = model.discriminator, model.generator
    out_src, out_cls = D(x)
    real = -out_src.mean()
    cls = torch.nn.functional.cross_entropy(out_cls, y_org)
    x_fake = G(x, torch.eye(3)[y_trg])
    fake = D(x_fake.detach())[0].mean()
    alpha = torch.rand(4, 1, 1, 1)
    x_hat = (alpha * x + (1 - alpha) * x_fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat)[0], x_hat, torch.ones_like(D(x_hat)[0]))
    gp = ((grad.flatten(1).pow(2).sum(1).sqrt() - 1) ** 2).mean()

    for name, expected in (("real", real), ("fake", fake), ("cls", cls), ("gp", gp)):
        assert losses[name].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7), name
    assert losses["total"].item() == pytest.approx((real + fake + cls + 10 * gp).item(), rel=1e-5)


class ParameterChanges(Callback):
    """Per training batch: which networks' parameters changed, and the logged losses."""

    def __init__(self) -> None:
        self.changed: list[set[str]] = []
        self.losses: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.before = {name: [p.detach().clone() for p in getattr(module, name).parameters()]
                       for name in ("generator", "discriminator")}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.changed.append({name for name, params in self.before.items()
                             if any(not torch.equal(a, b) for a, b in zip(params, getattr(module, name).parameters()))})
        self.losses.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


@pytest.mark.slow
def test_critic_every_step_generator_every_n_critic_th_with_finite_losses(multi_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_stargan(n_critic=3)
    record = ParameterChanges()
    datamodule = multi_datamodule(multi_root, samples_per_epoch=12)  # 6 iterations of batch 2
    cpu_trainer(tmp_path, max_epochs=1, callbacks=[record]).fit(model, datamodule)
    # the reference's (i + 1) % n_critic == 0: iterations 2 and 5 (0-based) also update G
    assert record.changed == [{"discriminator"}, {"discriminator"}, {"discriminator", "generator"}] * 2
    assert model.iterations == 6
    g_terms = {"train/G_fake", "train/G_cls", "train/G_rec", "train/G_total"}
    assert not g_terms & set(record.losses[0]) and not g_terms & set(record.losses[1])  # no G update yet
    assert g_terms <= set(record.losses[2])
    assert all(torch.isfinite(torch.tensor(v)) for losses in record.losses for v in losses.values())
    assert {"train/D_real", "train/D_fake", "train/D_cls", "train/D_gp", "train/G_rec"} <= set(record.losses[-1])


def test_learning_rates_fall_linearly_to_zero_in_lr_update_step_stairs():
    model = tiny_stargan(num_iters=100, num_iters_decay=40, lr_update_step=10)
    # constant through iteration 60; lowered by 10/40 of the rate after iterations 70, 80, 90, 100
    expected = {0: 1.0, 60: 1.0, 69: 1.0, 70: 0.75, 79: 0.75, 80: 0.5, 95: 0.25, 100: 0.0}
    assert {i: model.learning_rate_factor(i) for i in expected} == pytest.approx(expected)


@pytest.mark.slow
def test_the_fit_sets_the_scheduled_rates_and_refuses_a_run_past_num_iters(multi_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_stargan(num_iters=4, num_iters_decay=2, lr_update_step=1, g_lr=2e-4, d_lr=1e-4)
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=4).fit(model, multi_datamodule(multi_root))
    opt_d, opt_g = model.optimizers()
    # the last iteration (index 3) ran after 3 completed: one lowering of 1 / 2 past iteration 2
    assert opt_d.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-4)
    assert opt_g.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="num_iters"):
        cpu_trainer(tmp_path, max_epochs=2, limit_train_batches=4).fit(
            tiny_stargan(num_iters=4, num_iters_decay=2), multi_datamodule(multi_root))


def test_bad_sizes_are_one_clear_error(multi_root, tmp_path):
    with pytest.raises(ConfigError, match="d_repeat_num"):
        tiny_stargan(image_size=40)  # 40 / 2**4 is not whole: no classifier kernel fits
    with pytest.raises(ConfigError, match="data.crop_size"):
        cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(
            tiny_stargan(image_size=64, d_repeat_num=5), multi_datamodule(multi_root))


def test_translate_follows_the_target_label_and_tasks_are_label_pairs():
    model = tiny_stargan().eval()
    assert model.eval_tasks(("cartoon", "photo", "sketch")) == [
        "cartoon->photo", "cartoon->sketch", "photo->cartoon", "photo->sketch", "sketch->cartoon", "sketch->photo"]
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    outputs = {t: model.translate({"x": x, "y_src": torch.zeros(2), "y_trg": torch.full((2,), t), "index": [0, 1],
                                   "task": ["a->b"] * 2}, "a->b") for t in range(3)}
    assert outputs[0].shape == (2, 3, 32, 32) and all(o.abs().max() <= 1 for o in outputs.values())
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[1], outputs[2])
    grid = model.sample_grid({"a": x, "b": x[:1]})
    assert grid.shape == (3, 3 * (32 + 2) + 2, 4 * 32 + 2 * 2)  # 3 rows of input | 3 domains
