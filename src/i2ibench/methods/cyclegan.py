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
from i2ibench.errors import ConfigError
from i2ibench.losses import PerceptualLoss, discriminator_adversarial_loss, generator_adversarial_loss, ssim_loss
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
        lambda_A, lambda_B: cycle-consistency weights for A->B->A and B->A->B.
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

    def __init__(self, generator: str = "resnet", generator_args: dict[str, Any] | None = None,
                 discriminator: str = "patch", discriminator_args: dict[str, Any] | None = None,
                 gan_mode: str = "lsgan", lambda_A: float = 10.0, lambda_B: float = 10.0,
                 lambda_identity: float = 0.5, pool_size: int = 50, lr: float = 2e-4, lr_D: float | None = None,
                 beta1: float = 0.5, beta2: float = 0.999, n_epochs: int = 100, n_epochs_decay: int = 100,
                 cycle_loss: str = "l1", lambda_perceptual: float = 0.0, perceptual_network: str = "vgg16",
                 perceptual_weights: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
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
        set_requires_grad((self.disc_A, self.disc_B), False)
        g_losses = self.generator_losses(images)
        g_total = torch.stack(list(g_losses.values())).sum()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_total)
        opt_g.step()

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
        return {"real_A": real_A, "real_B": real_B, "fake_A": fake_A, "fake_B": fake_B,
                "rec_A": self.map("BA", fake_B), "rec_B": self.map("AB", fake_A)}

    def generator_losses(self, t: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every weighted generator term by name; their sum is the generator objective."""
        hp = self.hparams
        real_A, real_B = t["real_A"], t["real_B"]
        losses = {
            "adv_A2B": generator_adversarial_loss(self.disc_B(t["fake_B"]), hp.gan_mode),
            "adv_B2A": generator_adversarial_loss(self.disc_A(t["fake_A"]), hp.gan_mode),
            "cycle_A": self.reconstruction_loss(t["rec_A"], real_A) * hp.lambda_A,
            "cycle_B": self.reconstruction_loss(t["rec_B"], real_B) * hp.lambda_B,
        }
        if hp.lambda_identity > 0:
            # G_AB applied to a B image should leave it unchanged (and G_BA an A image).
            idt_A2B = self.map("AB", real_B, t.get("mask_B"))
            idt_B2A = self.map("BA", real_A, t.get("mask_A"))
            losses["idt_A2B"] = F.l1_loss(idt_A2B, real_B) * hp.lambda_B * hp.lambda_identity
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

    def on_fit_start(self) -> None:
        super().on_fit_start()
        total = self.hparams.n_epochs + self.hparams.n_epochs_decay
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs > total:
            raise ConfigError(f"trainer.max_epochs ({max_epochs}) exceeds the schedule n_epochs + n_epochs_decay "
                             f"({total}): the learning rate would be 0 after epoch {total}. Set them consistently.")

    def on_train_start(self) -> None:
        super().on_train_start()
        hp = self.hparams
        rates = f"G {hp.lr:g}, D {(hp.lr_D or hp.lr):g} (Adam betas {hp.beta1:g}, {hp.beta2:g})"
        announce(self.trainer, type(self).__name__,
                 epoch_schedule_lines(self.trainer, self.batch_split, hp.n_epochs, hp.n_epochs_decay, rates),
                 self.batch_split)

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
