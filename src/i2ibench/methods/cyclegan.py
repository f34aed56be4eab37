"""CycleGAN (Zhu, Park, Isola, Efros, ICCV 2017) and its family.

One module; the variants (generator architecture, reconstruction and extra loss terms) are
configuration, each registered under its own method name with its own config file.
Reference implementation: junyanz/pytorch-CycleGAN-and-pix2pix, models/cycle_gan_model.py.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import i2ibench.nets  # noqa: F401  (registers the generators and discriminators)
import i2ibench.nets.dualgan  # noqa: F401  (DualGAN's generator and critic)
from i2ibench.errors import ConfigError
from i2ibench.losses import (GAN_MODES, WGAN_MODES, PerceptualLoss, clip_weights_, discriminator_adversarial_loss,
                             generator_adversarial_loss, gradient_penalty, ssim_loss, wasserstein_critic_loss)
from i2ibench.methods.base import TranslationModule, set_requires_grad
from i2ibench.methods.image_pool import ImagePool
from i2ibench.methods.recipe import BatchSplit, announce, apply_global_batch, epoch_schedule_lines
from i2ibench.methods.schedules import linear_decay
from i2ibench.registry import DISCRIMINATORS, GENERATORS, register_method


RECONSTRUCTION_LOSSES = {"l1": F.l1_loss, "ssim": ssim_loss}


@register_method("inception-cyclegan", description="Ma et al. 2020: residual Inception modules in the generator's "
                                                   "transformer stage")
@register_method("densenet-cyclegan", description="Du et al. 2019: dense blocks replace the residual blocks; "
                                                  "identity + perceptual losses")
@register_method("ssim-lsgan", description="Dong & Zhao 2019: LSGAN with a 1 - SSIM cycle term (weight 4), "
                                           "D lr 1e-4, 128 px")
@register_method("gan-alone", description="CycleGAN's 'GAN alone' ablation (Zhu et al. 2017, tables 4-5): "
                                          "adversarial losses only, no cycle or identity term")
@register_method("cyclegan", description="CycleGAN (Zhu et al. 2017): ResNet generators, 70x70 PatchGAN, "
                                         "LSGAN, cycle + identity losses")
class CycleGAN(TranslationModule):
    """Two generators (A->B, B->A) and two discriminators (judging domain A, domain B).

    Args (defaults are the paper's; `configs/methods/cyclegan.yaml` cites each):
        generator: registered generator name (`resnet`; the family adds others).
        generator_args: its keyword arguments (ngf, n_blocks, norm, ...).
        discriminator: registered discriminator name (`patch`).
        discriminator_args: its keyword arguments (ndf, n_layers, norm, spectral_norm).
        gan_mode: lsgan, vanilla or hinge.
        lambda_A, lambda_B: cycle-consistency weights for A->B->A and B->A->B (0 drops the term and
            its reconstruction forward: the GAN-alone ablation).
        lambda_identity: identity loss weight, as a fraction of the cycle weight (0 disables it).
        pool_size: image history buffer size for the discriminators (0 disables it).
        lr, lr_D: Adam learning rates of generators and discriminators (lr_D defaults to lr).
        beta1, beta2: Adam betas.
        n_epochs, n_epochs_decay: epochs at constant lr, then epochs of linear decay to zero.
        cycle_loss: reconstruction term of the cycle: `l1` (CycleGAN) or `ssim` (1 - SSIM, SSIM+LSGAN).
        lambda_perceptual: weight of a perceptual loss between each image and its reconstruction
            (0 disables it; DenseNet-CycleGAN uses one).
        perceptual_network: `vgg16` (ImageNet, downloaded) or `inception` (the metrics' TF-FID
            Inception, works offline); named in every run record through the config.
        perceptual_weights: Inception weights for `inception` (default: as the metrics resolve them).
    """

    gan_modes: tuple[str, ...] = GAN_MODES  # Wasserstein modes need a critic step with a constraint (DualGAN)

    def __init__(self, generator: str = "resnet", generator_args: dict[str, Any] | None = None,
                 discriminator: str = "patch", discriminator_args: dict[str, Any] | None = None,
                 gan_mode: str = "lsgan", lambda_A: float = 10.0, lambda_B: float = 10.0,
                 lambda_identity: float = 0.5, pool_size: int = 50, lr: float = 2e-4, lr_D: float | None = None,
                 beta1: float = 0.5, beta2: float = 0.999, n_epochs: int = 100, n_epochs_decay: int = 100,
                 cycle_loss: str = "l1", lambda_perceptual: float = 0.0, perceptual_network: str = "vgg16",
                 perceptual_weights: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        if gan_mode not in self.gan_modes:
            raise ConfigError(f"model.init_args.gan_mode: {gan_mode!r} is not one of {', '.join(self.gan_modes)} "
                              f"for {type(self).__name__}")
        if cycle_loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"unknown cycle_loss {cycle_loss!r}; use one of {sorted(RECONSTRUCTION_LOSSES)}")
        # Built here, so a network whose weights cannot be had fails before any training.
        self.perceptual = PerceptualLoss(perceptual_network, perceptual_weights) if lambda_perceptual > 0 else None
        make_generator, make_discriminator = GENERATORS.get(generator), DISCRIMINATORS.get(discriminator)
        self.gen_AB = make_generator(**(generator_args or {}))
        self.gen_BA = make_generator(**(generator_args or {}))
        self.disc_A = make_discriminator(**(discriminator_args or {}))  # judges domain-A images
        self.disc_B = make_discriminator(**(discriminator_args or {}))  # judges domain-B images
        self.pool_A = ImagePool(pool_size, seed=1)
        self.pool_B = ImagePool(pool_size, seed=2)
        self.batch_split: BatchSplit | None = None  # set in setup("fit") from data.batch_size and the process count

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        images = self.forward_cycle(batch)

        # Generators first, with the discriminators frozen (they need no gradients here).
        g_losses, g_total = self.update_generators(opt_g, images)

        # Then the discriminators, on real images and pooled (past) fakes.
        set_requires_grad((self.disc_A, self.disc_B), True)
        mode = self.hparams.gan_mode
        d_loss_B = discriminator_adversarial_loss(self.disc_B(images["real_B"]),
                                                  self.disc_B(self.pool_B.query(images["fake_B"])), mode)
        d_loss_A = discriminator_adversarial_loss(self.disc_A(images["real_A"]),
                                                  self.disc_A(self.pool_A.query(images["fake_A"])), mode)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss_A + d_loss_B)
        opt_d.step()

        self.log_losses({**{f"gen_{k}": v for k, v in g_losses.items()}, "gen_total": g_total,
                         "disc_A": d_loss_A, "disc_B": d_loss_B}, batch_size=images["real_A"].shape[0])

    def map(self, direction: str, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """One generator: `AB` (G_AB) or `BA` (G_BA). `mask` is for mask-guided subclasses."""
        return (self.gen_AB if direction == "AB" else self.gen_BA)(x)

    def forward_cycle(self, batch: dict) -> dict[str, Tensor]:
        """Both translations and both reconstructions of a training batch."""
        real_A, real_B = batch["A"], batch["B"]
        fake_B = self.map("AB", real_A)
        fake_A = self.map("BA", real_B)
        images = {"real_A": real_A, "real_B": real_B, "fake_A": fake_A, "fake_B": fake_B}
        # A reconstruction no loss term reads is not computed (GAN alone: no cycle, no forward).
        if self.uses_reconstruction("A"):
            images["rec_A"] = self.map("BA", fake_B)
        if self.uses_reconstruction("B"):
            images["rec_B"] = self.map("AB", fake_A)
        return images

    def uses_reconstruction(self, domain: str) -> bool:
        """Whether a loss term reads the reconstruction of `domain` (its cycle or perceptual weight > 0)."""
        hp = self.hparams
        return (hp.lambda_A if domain == "A" else hp.lambda_B) > 0 or hp.lambda_perceptual > 0

    def update_generators(self, opt_g: torch.optim.Optimizer, images: dict[str, Tensor]) -> tuple[dict, Tensor]:
        """One step of both generators on their summed losses, the discriminators frozen (left frozen:
        the caller decides when they train again). Returns the loss terms and their total."""
        set_requires_grad((self.disc_A, self.disc_B), False)
        g_losses = self.generator_losses(images)
        g_total = torch.stack(list(g_losses.values())).sum()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_total)
        opt_g.step()
        return g_losses, g_total

    def generator_losses(self, t: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every weighted generator term by name; their sum is the generator objective."""
        hp = self.hparams
        real_A, real_B = t["real_A"], t["real_B"]
        losses = {
            "adv_A2B": generator_adversarial_loss(self.disc_B(t["fake_B"]), hp.gan_mode),
            "adv_B2A": generator_adversarial_loss(self.disc_A(t["fake_A"]), hp.gan_mode),
        }
        # Terms of weight 0 are left out, not added as zeros: no wasted forward, and the logged
        # terms name what was trained (GAN alone logs adversarial terms only).
        if hp.lambda_A > 0:
            losses["cycle_A"] = self.reconstruction_loss(t["rec_A"], real_A) * hp.lambda_A
        if hp.lambda_B > 0:
            losses["cycle_B"] = self.reconstruction_loss(t["rec_B"], real_B) * hp.lambda_B
        # G_AB applied to a B image should leave it unchanged (and G_BA an A image); the weight is
        # a fraction of the cycle weight, as in the reference.
        if hp.lambda_identity * hp.lambda_B > 0:
            idt_A2B = self.map("AB", real_B, t.get("mask_B"))
            losses["idt_A2B"] = F.l1_loss(idt_A2B, real_B) * hp.lambda_B * hp.lambda_identity
        if hp.lambda_identity * hp.lambda_A > 0:
            idt_B2A = self.map("BA", real_A, t.get("mask_A"))
            losses["idt_B2A"] = F.l1_loss(idt_B2A, real_A) * hp.lambda_A * hp.lambda_identity
        if self.perceptual is not None:
            losses["perceptual_A"] = self.perceptual(t["rec_A"], real_A) * hp.lambda_perceptual
            losses["perceptual_B"] = self.perceptual(t["rec_B"], real_B) * hp.lambda_perceptual
        return losses

    def reconstruction_loss(self, reconstructed: Tensor, real: Tensor) -> Tensor:
        return RECONSTRUCTION_LOSSES[self.hparams.cycle_loss](reconstructed, real)

    def configure_optimizers(self):
        hp = self.hparams
        betas = (hp.beta1, hp.beta2)
        opt_g = self.adam(itertools.chain(self.gen_AB.parameters(), self.gen_BA.parameters()), hp.lr, betas)
        opt_d = self.adam(itertools.chain(self.disc_A.parameters(), self.disc_B.parameters()), hp.lr_D or hp.lr, betas)
        factor = linear_decay(hp.n_epochs, hp.n_epochs_decay)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # data.batch_size is the global batch; the paper's batch 1 runs as 1 per process under DDP.
        if stage == "fit":
            self.batch_split = apply_global_batch(self, per_sample_recipe=True)

    def on_train_start(self) -> None:
        super().on_train_start()
        hp = self.hparams
        announce(self.trainer, type(self).__name__,
                 epoch_schedule_lines(self.trainer, self.batch_split, hp.n_epochs, hp.n_epochs_decay,
                                      self.describe_rates()),
                 self.batch_split)

    def describe_rates(self) -> str:
        hp = self.hparams
        return f"G {hp.lr:g}, D {(hp.lr_D or hp.lr):g} (Adam betas {hp.beta1:g}, {hp.beta2:g})"

    # -- evaluation ----------------------------------------------------------------------------
    def translate(self, batch: dict, task: str) -> Tensor:
        if task == "A2B":
            return self.gen_AB(batch["A"])
        if task == "B2A":
            return self.gen_BA(batch["B"])
        raise ValueError(f"CycleGAN translates A2B or B2A, not {task!r}")

    # -- checkpoint extras ---------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"pool_A": self.pool_A.state_dict(), "pool_B": self.pool_B.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.pool_A.load_state_dict(state["pool_A"])
        self.pool_B.load_state_dict(state["pool_B"])


@register_method("dualgan", description="DualGAN (Yi et al. 2017): U-Net generators, Wasserstein critics "
                                        "(gradient penalty or clipping), L1 reconstruction x 500-1000, RMSProp")
class DualGAN(CycleGAN):
    """CycleGAN's two translators and reconstruction terms, trained as Wasserstein GANs.

    Reference: duxingren14/DualGAN at bd64bf97, `model.py` (`build_model`, `train`, `run_optim`)
    and `main.py` (flags). A subclass because its step differs from CycleGAN's, not only its
    losses: each batch trains the critics first, on the current generators' translations (no image
    pool), with a gradient penalty (`wgan-gp`) or followed by weight clipping (`wgan-clip`); the
    generators train against the just-updated critics every `n_critic`-th batch; both optimisers are
    TensorFlow 1's RMSProp at a constant learning rate. Forward passes, generator terms (-D(G(x))
    plus L1 reconstruction x lambda) and translation are CycleGAN's.

    Args (beyond CycleGAN's; `configs/methods/dualgan.yaml` cites each default):
        gan_mode: `wgan-gp` (the reference code's default) or `wgan-clip` (the paper's WGAN).
        lambda_gp: gradient-penalty weight (the reference's `gamma = 10.`), for `wgan-gp`.
        clip_value: every critic parameter clamped to [-c, c] after each critic step (`--clip_value`), for `wgan-clip`.
        n_critic: critic steps per generator step (`--n_critic`).
        rmsprop_decay: RMSProp's moving-average decay (`RMSPropOptimizer(lr, decay=0.9)`).
    CycleGAN's `beta1`, `beta2`, `lr_D`, `pool_size` and `n_epochs_decay` do not apply (pool 0,
    decay 0 in the config).
    """

    gan_modes = WGAN_MODES

    def __init__(self, *args, gan_mode: str = "wgan-gp", lambda_gp: float = 10.0, clip_value: float = 0.01,
                 n_critic: int = 1, rmsprop_decay: float = 0.9, **kwargs) -> None:
        kwargs.setdefault("generator", "dualgan-unet")
        kwargs.setdefault("discriminator", "dualgan-critic")
        for name, default in (("lambda_A", 500.0), ("lambda_B", 500.0), ("lambda_identity", 0.0), ("pool_size", 0),
                              ("lr", 5e-5), ("n_epochs", 50), ("n_epochs_decay", 0)):
            kwargs.setdefault(name, default)
        if n_critic < 1:
            raise ConfigError(f"model.init_args.n_critic must be at least 1, got {n_critic}")
        super().__init__(*args, gan_mode=gan_mode, **kwargs)
        self.save_hyperparameters()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        hp = self.hparams
        train_generators = (self.trainer.fit_loop.total_batch_idx + 1) % hp.n_critic == 0
        with torch.set_grad_enabled(train_generators):
            images = self.forward_cycle(batch)

        # The critics first, on the current translations (the reference runs d_optim, then g_optim).
        set_requires_grad((self.disc_A, self.disc_B), True)
        critic_losses = {"disc_A": self.critic_loss(self.disc_A, images["real_A"], images["fake_A"]),
                         "disc_B": self.critic_loss(self.disc_B, images["real_B"], images["fake_B"])}
        if hp.gan_mode == "wgan-gp":
            critic_losses["disc_gp_A"] = gradient_penalty(self.disc_A, images["real_A"], images["fake_A"]) * hp.lambda_gp
            critic_losses["disc_gp_B"] = gradient_penalty(self.disc_B, images["real_B"], images["fake_B"]) * hp.lambda_gp
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(torch.stack(list(critic_losses.values())).sum())
        opt_d.step()
        if hp.gan_mode == "wgan-clip":
            clip_weights_(self.disc_A, hp.clip_value)
            clip_weights_(self.disc_B, hp.clip_value)
        logged = dict(critic_losses)

        if train_generators:  # against the updated critics, as the reference's g_optim run sees them
            g_losses, g_total = self.update_generators(opt_g, images)
            set_requires_grad((self.disc_A, self.disc_B), True)
            logged.update({**{f"gen_{k}": v for k, v in g_losses.items()}, "gen_total": g_total})
        self.log_losses(logged, batch_size=images["real_A"].shape[0])

    @staticmethod
    def critic_loss(critic: torch.nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        """E[D(fake)] - E[D(real)] for one critic, the fake detached (the critic step trains D only)."""
        return wasserstein_critic_loss(critic(real), critic(fake.detach()))

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = tf1_rmsprop(itertools.chain(self.gen_AB.parameters(), self.gen_BA.parameters()), hp.lr,
                            hp.rmsprop_decay)
        opt_d = tf1_rmsprop(itertools.chain(self.disc_A.parameters(), self.disc_B.parameters()), hp.lr_D or hp.lr,
                            hp.rmsprop_decay)
        factor = linear_decay(hp.n_epochs, hp.n_epochs_decay)  # constant for n_epochs when n_epochs_decay is 0
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def describe_rates(self) -> str:
        hp = self.hparams
        constraint = (f"gradient penalty x {hp.lambda_gp:g}" if hp.gan_mode == "wgan-gp"
                      else f"weights clipped to +-{hp.clip_value:g}")
        return (f"G {hp.lr:g}, D {(hp.lr_D or hp.lr):g} (RMSProp decay {hp.rmsprop_decay:g}); "
                f"{hp.n_critic} critic step(s) per generator step; {constraint}")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.check_image_size()

    def check_image_size(self) -> None:
        """Refuse, before training, a crop size the U-Net cannot halve num_downs times or that a
        global critic head (a linear layer sized for one image side) was not built for."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        size = getattr(getattr(datamodule, "eval_transform", None), "crop_size", None)
        if size is None:
            return
        if size < 64 or size % 32:
            raise ConfigError(f"data.crop_size {size} is too small for DualGAN's critic: its 5 stride-2 convs need "
                              "a multiple of 32 of at least 64 px (at 32 the last normed map is 1x1 and the critic "
                              "a constant); use 64 or more")
        multiple = self.gen_AB.size_multiple
        if size % multiple:
            fits = size.bit_length() - 1 if size & (size - 1) == 0 else None
            hint = (f"set model.init_args.generator_args.num_downs to {fits}" if fits and fits >= 5
                    else f"use a crop size that is a multiple of {multiple}")
            raise ConfigError(f"data.crop_size {size} does not fit DualGAN's U-Net: image sides must be multiples "
                              f"of 2**num_downs = {multiple} (8 levels at 256 px); {hint}")
        critic = self.disc_A
        if getattr(critic, "head_kind", None) == "global" and critic.image_size != size:
            raise ConfigError(f"model.init_args.discriminator_args.image_size is {critic.image_size} but data.crop_size "
                              f"is {size}: DualGAN's global critic head is built for one image size; set them equal")


def tf1_rmsprop(params, lr: float, decay: float) -> torch.optim.RMSprop:
    """RMSProp as TensorFlow 1's `tf.train.RMSPropOptimizer` runs it in the DualGAN reference.

    Its mean-square accumulator starts at 1, not 0 (TF's `rms` slot is ones-initialised), so the
    first steps are about lr * g rather than lr * g / |g| * sqrt(1 / (1 - decay)); epsilon 1e-10 is
    TF's default (TF adds it under the square root, PyTorch after it: no difference at this size).
    """
    params = list(params)
    optimizer = torch.optim.RMSprop(params, lr=lr, alpha=decay, eps=1e-10)
    for p in params:
        optimizer.state[p] = {"step": torch.tensor(0.0), "square_avg": torch.ones_like(p)}
    return optimizer
