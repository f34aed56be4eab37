"""BicycleGAN (Zhu, Zhang, Pathak, Darrell, Efros, Wang, Shechtman, "Toward Multimodal Image-to-Image
Translation", NeurIPS 2017): multimodal translation on aligned pairs.

Reference implementation: junyanz/BicycleGAN, models/bicycle_gan_model.py. Each training batch
(2 images) is split in half:
- cVAE-GAN on the first half: E encodes the target B into N(mu, sigma^2), z is drawn from it
  (reparameterised), G(A, z) must reconstruct B (L1 x 10), KL(N(mu, sigma^2) || N(0, I)) x 0.01
  (summed over the half-batch and the latent), and D judges G(A, z) against B.
- cLR-GAN on the same first-half sources A with z ~ N(0, I): D2 judges G(A, z) against the
  second half's targets, and E must recover z from G(A, z) (L1 on E's mu x 0.5). The latent
  regression trains G only: the reference freezes E for it (paper sec. 3.4: training E on it
  too lets G and E hide the code). The second half's sources are unused (no conditional D).
One iteration: G and E step on the sum of all their terms, then D and D2 step on fakes made
before that G step (the reference's forward / update_G_and_E / update_D order). LSGAN, summed
over the multi-scale discriminators' outputs, real + fake not halved.

Evaluation: `A->B@latent` (K random z per source, seeded per image by the datamodule) and
`A->B@reference` (z = E's mu of K reference target images), each scored with LPIPS diversity
like StarGAN v2; G and E run in eval mode (the reference's test.py calls model.eval()).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from i2ibench.data.tasks import parse_task
from i2ibench.errors import ConfigError
from i2ibench.losses import gaussian_kl, reparameterise
from i2ibench.methods.base import TranslationModule, grid_of_rows, image_rows, set_requires_grad
from i2ibench.methods.recipe import (BatchSplit, announce, apply_global_batch, check_latent_size,
                                     epoch_schedule_lines, require_even_batch)
from i2ibench.methods.schedules import linear_decay
from i2ibench.nets.bicyclegan import LatentEncoder, LatentUnetGenerator, MultiScalePatchDiscriminator
from i2ibench.registry import register_method

GAN_MODES = ("lsgan", "vanilla")  # the reference's GANLoss (its wgangp needs a penalty this step has not)
DIRECTIONS = ("A2B", "B2A")
SAMPLE_LATENTS = 3  # random-z columns in the sample grid


def gan_loss(outputs: list[Tensor], real: bool, mode: str) -> Tensor:
    """The reference's GANLoss: each scale's MSE (lsgan) or BCE with logits (vanilla) to 1 or 0, summed."""
    total = outputs[0].new_zeros(())
    for logits in outputs:
        target = torch.full_like(logits, 1.0 if real else 0.0)
        total = total + (F.mse_loss(logits, target) if mode == "lsgan"
                         else F.binary_cross_entropy_with_logits(logits, target))
    return total


@register_method("bicyclegan", dataset_mode="paired",
                 description="BicycleGAN (Zhu et al. 2017): cVAE-GAN + cLR-GAN, U-Net G with z at every level, "
                             "ResNet encoder, two 2-scale PatchGANs, LSGAN; paired data, multimodal")
class BicycleGAN(TranslationModule):
    """Multimodal translation on aligned pairs, one direction.

    Args (defaults are the reference's; `configs/methods/bicyclegan.yaml` cites each):
        nz: latent size. generator_args, encoder_args, discriminator_args: keyword arguments of
            LatentUnetGenerator, LatentEncoder, MultiScalePatchDiscriminator (nz and channels are set here).
        gan_mode: lsgan (the reference's default) or vanilla.
        lambda_L1, lambda_kl, lambda_z, lambda_GAN, lambda_GAN2: weights of the cVAE L1, KL, latent
            regression, and the cVAE-GAN / cLR-GAN adversarial terms.
        use_same_D: one discriminator for both paths (the reference's --use_same_D; off: D and D2).
        lr, beta1, beta2: Adam for G, E, D and D2.
        n_epochs, n_epochs_decay: constant-lr epochs, then linear decay to zero.
        direction: A2B or B2A (the reference's --direction).
    """

    dataset_mode = "paired"
    styled_tasks = True  # judged on A->B@latent / @reference (reference rows of those tasks)

    def __init__(self, nz: int = 8, generator_args: dict[str, Any] | None = None,
                 encoder_args: dict[str, Any] | None = None, discriminator_args: dict[str, Any] | None = None,
                 gan_mode: str = "lsgan", lambda_L1: float = 10.0, lambda_kl: float = 0.01, lambda_z: float = 0.5,
                 lambda_GAN: float = 1.0, lambda_GAN2: float = 1.0, use_same_D: bool = False, lr: float = 2e-4,
                 beta1: float = 0.5, beta2: float = 0.999, n_epochs: int = 100, n_epochs_decay: int = 100,
                 direction: str = "A2B") -> None:
        super().__init__()
        self.save_hyperparameters()
        for option, value, choices in (("gan_mode", gan_mode, GAN_MODES), ("direction", direction, DIRECTIONS)):
            if value not in choices:
                raise ConfigError(f"model.init_args.{option}: unknown value {value!r}; use one of {', '.join(choices)}")
        if nz < 1:
            raise ConfigError(f"model.init_args.nz must be a positive integer, got {nz!r} (BicycleGAN: 8)")
        self.gen = self.build_generator(nz, generator_args or {})
        self.encoder = LatentEncoder(nz=nz, **(encoder_args or {}))
        self.disc = MultiScalePatchDiscriminator(**(discriminator_args or {}))  # cVAE-GAN path
        self.disc2 = None if use_same_D else MultiScalePatchDiscriminator(**(discriminator_args or {}))  # cLR-GAN
        self.source, self.target = direction[0], direction[2]
        self.batch_split: BatchSplit | None = None
        self._warned_odd = False

    def build_generator(self, nz: int, generator_args: dict[str, Any]) -> nn.Module:
        """G(x, z); a subclass with another generator overrides this (LSRAGAN)."""
        return LatentUnetGenerator(nz=nz, **generator_args)

    @property
    def discriminators(self) -> tuple:
        return (self.disc,) if self.disc2 is None else (self.disc, self.disc2)

    # -- training ------------------------------------------------------------------------------
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z ~ N(mu, exp(logvar)) by reparameterisation, with mu and logvar."""
        mu, logvar = self.encoder(images)
        return reparameterise(mu, logvar), mu, logvar

    def training_step(self, batch: dict, batch_idx: int) -> None:
        hp = self.hparams
        real_a, real_b = batch[self.source], batch[self.target]
        if real_a.shape[0] % 2:  # the reference skips such a batch (model.is_train()): it cannot be halved
            if not self._warned_odd:
                rank_zero_warn(f"{type(self).__name__}: skipped a training batch of {real_a.shape[0]} images (an odd "
                               "batch cannot be split into a cVAE-GAN and a cLR-GAN half), as the reference does")
                self._warned_odd = True
            return
        opt_g, opt_e, opt_d, *opt_d2 = self.optimizers()
        half = real_a.shape[0] // 2
        a_encoded, b_encoded, b_random = real_a[:half], real_b[:half], real_b[half:]

        z_encoded, mu, logvar = self.encode(b_encoded)
        z_random = torch.randn(half, hp.nz, device=real_a.device, dtype=real_a.dtype)
        fake_encoded = self.gen(a_encoded, z_encoded)
        fake_random = self.gen(a_encoded, z_random)  # the reference's cLR path also uses the first half's A

        # G and E: adversarial terms of both paths, L1 and KL; latent regression through a frozen E.
        set_requires_grad(self.discriminators, False)
        disc2 = self.disc2 if self.disc2 is not None else self.disc
        losses = {"G_GAN": gan_loss(self.disc(fake_encoded), True, hp.gan_mode) * hp.lambda_GAN,
                  "G_GAN2": gan_loss(disc2(fake_random), True, hp.gan_mode) * hp.lambda_GAN2,
                  "G_L1": F.l1_loss(fake_encoded, b_encoded) * hp.lambda_L1,
                  "kl": gaussian_kl(mu, logvar) * hp.lambda_kl}
        set_requires_grad((self.encoder,), False)
        mu_random, _ = self.encoder(fake_random)  # gradients reach G through E, never E's weights
        set_requires_grad((self.encoder,), True)
        losses["z_L1"] = F.l1_loss(mu_random, z_random) * hp.lambda_z
        losses.update(self.extra_generator_losses(a_encoded, b_encoded, fake_encoded, fake_random, z_random))
        g_total = sum(losses.values())
        opt_g.zero_grad(set_to_none=True)
        opt_e.zero_grad(set_to_none=True)
        self.manual_backward(g_total)
        opt_e.step()
        opt_g.step()

        # D on the cVAE-GAN half, D2 on the cLR-GAN half, with the fakes of before the G step.
        set_requires_grad(self.discriminators, True)
        d_losses = {"D": gan_loss(self.disc(b_encoded), True, hp.gan_mode)
                    + gan_loss(self.disc(fake_encoded.detach()), False, hp.gan_mode),
                    "D2": gan_loss(disc2(b_random), True, hp.gan_mode)
                    + gan_loss(disc2(fake_random.detach()), False, hp.gan_mode)}
        if self.disc2 is None:  # --use_same_D: both terms on the one D, one step
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_losses["D"] + d_losses["D2"])
            opt_d.step()
        else:
            for loss, optimizer in ((d_losses["D"], opt_d), (d_losses["D2"], opt_d2[0])):
                optimizer.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                optimizer.step()

        self.log_losses({**losses, "G_total": g_total, **d_losses}, batch_size=real_a.shape[0])

    def extra_generator_losses(self, source: Tensor, target: Tensor, fake_encoded: Tensor, fake_random: Tensor,
                               z_random: Tensor) -> dict[str, Tensor]:
        """Further weighted G terms (none here), added to the G-and-E step with the discriminators frozen.

        source / target: the cVAE half's A and B; fake_encoded = G(source, z ~ E(target)); fake_random =
        G(source, z_random). A subclass adds terms here (LSRAGAN: perceptual, mode seeking).
        """
        return {}

    def configure_optimizers(self):
        hp = self.hparams
        nets = (self.gen, self.encoder, *self.discriminators)
        optimizers = [self.adam(net.parameters(), hp.lr, (hp.beta1, hp.beta2)) for net in nets]
        factor = linear_decay(hp.n_epochs, hp.n_epochs_decay)
        return optimizers, [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in optimizers]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        self.check_image_size(datamodule)
        check_latent_size(datamodule, self.hparams.nz, "model.init_args.nz", "z")
        if stage == "fit":
            self.batch_split = apply_global_batch(self)
            require_even_batch(self.batch_split, "BicycleGAN", "splits each batch in half (cVAE-GAN, cLR-GAN)",
                               "the paper")

    def check_image_size(self, datamodule) -> None:
        """Refuse, before training, a crop size the U-Net or the discriminators cannot take."""
        size = getattr(getattr(datamodule, "eval_transform", None), "crop_size", None)
        if size is None:
            return
        self.check_generator_size(size)
        if size < 2**self.encoder.downsamplings:
            raise ConfigError(f"data.crop_size {size} is too small for the encoder's {self.encoder.downsamplings} "
                              f"halvings; lower model.init_args.encoder_args.n_blocks")
        disc_args = self.hparams.discriminator_args or {}
        n_layers, num_d = disc_args.get("n_layers", 3), disc_args.get("num_D", 2)
        side = size
        for _ in range(num_d - 1):
            side = (side - 1) // 2 + 1  # the 3x3 stride-2 average pool between scales
        # n_layers stride-2 convs halve it; two stride-1 4x4 convs take 1 each, the first of them normalised
        if side // 2**n_layers < 3:
            raise ConfigError(f"data.crop_size {size} is too small for {num_d} PatchGAN scales with n_layers "
                              f"{n_layers} (the coarsest sees {side} px); lower discriminator_args.n_layers or num_D")

    def check_generator_size(self, size: int) -> None:
        """Refuse a crop size the generator cannot take (the U-Net: multiples of 2**num_downs)."""
        if size % self.gen.size_multiple:
            raise ConfigError(f"data.crop_size {size} does not fit a U-Net with num_downs {self.gen.num_downs}: "
                              f"image sides must be multiples of {self.gen.size_multiple} (256 px: num_downs 8, "
                              f"128: 7, 64: 6); set model.init_args.generator_args.num_downs")

    def on_train_start(self) -> None:
        super().on_train_start()
        hp = self.hparams
        rates = f"G, E, D{'' if hp.use_same_D else ', D2'} {hp.lr:g} (Adam betas {hp.beta1:g}, {hp.beta2:g})"
        lines = epoch_schedule_lines(self.trainer, self.batch_split, hp.n_epochs, hp.n_epochs_decay, rates)
        lines.append(self.objective_summary())
        announce(self.trainer, type(self).__name__, lines, self.batch_split)

    def objective_summary(self) -> str:
        """The one line of the start-of-training announcement that states the objective."""
        hp = self.hparams
        return (f"{hp.direction}, each batch halved: cVAE-GAN (L1 x {hp.lambda_L1:g}, KL x {hp.lambda_kl:g}) "
                f"and cLR-GAN (latent regression x {hp.lambda_z:g}, G only); {hp.gan_mode} GAN, nz {hp.nz}")

    # -- evaluation ----------------------------------------------------------------------------
    def eval_tasks(self, domains: tuple[str, ...]) -> list[str]:
        pair = f"{self.source}->{self.target}"
        return [f"{pair}@latent", f"{pair}@reference"]

    @torch.no_grad()
    def translate(self, batch: dict, task: str) -> Tensor:
        """N x K x 3 x H x W: each source `x` under its K latents `z` or K references' codes E(`x_ref`) (mu)."""
        spec = parse_task(task)
        if (spec.source, spec.target) != (self.source, self.target):
            raise ValueError(f"this {type(self).__name__} translates {self.source}->{self.target} only (one "
                             f"direction per model), not {task!r}")
        x = batch["x"]
        if spec.mode == "latent":
            codes = batch["z"].to(x)
        elif spec.mode == "reference":
            refs = batch["x_ref"]
            codes = self.encoder(refs.flatten(0, 1))[0].view(refs.shape[0], refs.shape[1], -1)
        else:
            raise ValueError(f"{type(self).__name__} is evaluated @latent or @reference, not {task!r}")
        if codes.shape[-1] != self.hparams.nz:
            raise ValueError(f"latents of size {codes.shape[-1]} for a model with nz {self.hparams.nz}")
        return torch.stack([self.gen(x, codes[:, k]) for k in range(codes.shape[1])], dim=1)

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> Tensor:
        """Rows of source | ground truth | G(source, E(ground truth)) | G(source, z) for 3 fixed random z."""
        source, target = inputs[self.source].to(self.device), inputs[self.target].to(self.device)
        z = torch.randn(SAMPLE_LATENTS, self.hparams.nz, generator=torch.Generator().manual_seed(0)).to(self.device)
        encoded = self.gen(source, self.encoder(target)[0])
        randoms = [self.gen(source, z[k].expand(len(source), -1)) for k in range(SAMPLE_LATENTS)]
        return grid_of_rows(image_rows(source, target, encoded, *randoms))
