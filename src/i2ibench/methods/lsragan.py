"""LSRAGAN (Wang 2021, "GAN translation from sketch to real image based on perceptual attention and
latent space regularization", master's thesis): SRAGAN made multimodal with latent codes.

Only the thesis abstract is public, and no code: it extends the one-to-one SRAGAN with "latent
code vectors" so that one sketch gives several plausible photos (one-to-many). Issue 13 reads it
as SRAGAN's generator taking z from two spaces, N(0, I) and the encoding of the target image,
combined as BicycleGAN combines them, with latent-space regularisation (latent regression and a
penalty against mode collapse) and perceptual losses. So this is BicycleGAN's training step
(methods/bicyclegan.py: cVAE-GAN and cLR-GAN halves of each batch, E, D and D2, KL, latent
regression through a frozen E) with:
- SRAGAN's generator taking z (nets/lsragan.py: z joins each CBAM residual block after its norm);
- an L1 perceptual term on the cVAE-GAN path, |phi(G(A, E(B))) - phi(B)|: the only path whose
  output has a ground truth (our choice; the network as SRAGAN's: VGG-16, or the offline Inception);
- MSGAN's mode-seeking term (Mao, Lee, Tseng, Ma, Yang, "Mode Seeking Generative Adversarial
  Networks for Diverse Image Synthesis", CVPR 2019) as the penalty against mode collapse: a second
  z2 ~ N(0, I) for the cLR-GAN sources, and G minimises 1 / (mean|G(A, z1) - G(A, z2)| /
  mean|z1 - z2| + 1e-5), weight 1 (MSGAN's code adds it to G's loss unweighted, eps 1e-5). The
  second image feeds this term only; D2 keeps BicycleGAN's one real and one fake half (our choice).
Evaluation is BicycleGAN's: `A->B@latent` and `A->B@reference`, K outputs per source, LPIPS diversity.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from i2ibench.errors import ConfigError
from i2ibench.losses import PerceptualLoss, mode_seeking_loss
from i2ibench.methods.bicyclegan import BicycleGAN
from i2ibench.nets.lsragan import LatentAttentionResnetGenerator
from i2ibench.registry import register_method


@register_method("lsragan", dataset_mode="paired",
                 description="LSRAGAN (Wang 2021): SRAGAN's CBAM attention-residual G taking z, BicycleGAN's "
                             "cVAE-GAN + cLR-GAN paths, perceptual L1, latent regression, mode seeking; paired "
                             "data, multimodal")
class LSRAGAN(BicycleGAN):
    """Multimodal sketch-to-photo translation on aligned pairs, one direction.

    Args: those of BicycleGAN (`generator_args` are LatentAttentionResnetGenerator's), and
        lambda_perceptual: weight of the L1 perceptual term on the cVAE-GAN path (0: none).
        perceptual_network: `vgg16` (ImageNet, downloaded) or `inception` (the metrics' TF-FID
            Inception, works offline); named in every run record through the config.
        perceptual_weights: Inception weights for `inception` (default: as the metrics resolve them).
        lambda_ms: weight of MSGAN's mode-seeking term (0: none; then G runs once less per step).
    `configs/methods/lsragan.yaml` gives each default its source or its reason.
    """

    def __init__(self, nz: int = 8, generator_args: dict[str, Any] | None = None,
                 encoder_args: dict[str, Any] | None = None, discriminator_args: dict[str, Any] | None = None,
                 gan_mode: str = "lsgan", lambda_L1: float = 10.0, lambda_kl: float = 0.01, lambda_z: float = 0.5,
                 lambda_GAN: float = 1.0, lambda_GAN2: float = 1.0, use_same_D: bool = False, lr: float = 2e-4,
                 beta1: float = 0.5, beta2: float = 0.999, n_epochs: int = 100, n_epochs_decay: int = 100,
                 direction: str = "A2B", lambda_perceptual: float = 1.0, perceptual_network: str = "vgg16",
                 perceptual_weights: str | None = None, lambda_ms: float = 1.0) -> None:
        for option, value in (("lambda_perceptual", lambda_perceptual), ("lambda_ms", lambda_ms)):
            if value < 0:
                raise ConfigError(f"model.init_args.{option} must be >= 0 (0 turns the term off), got {value!r}")
        # Built first, so a network whose weights cannot be had fails before anything else is built.
        perceptual = PerceptualLoss(perceptual_network, perceptual_weights) if lambda_perceptual > 0 else None
        super().__init__(nz, generator_args, encoder_args, discriminator_args, gan_mode, lambda_L1, lambda_kl,
                         lambda_z, lambda_GAN, lambda_GAN2, use_same_D, lr, beta1, beta2, n_epochs, n_epochs_decay,
                         direction)
        self.perceptual = perceptual

    def build_generator(self, nz: int, generator_args: dict[str, Any]) -> nn.Module:
        return LatentAttentionResnetGenerator(nz=nz, **generator_args)

    def extra_generator_losses(self, source: Tensor, target: Tensor, fake_encoded: Tensor, fake_random: Tensor,
                               z_random: Tensor) -> dict[str, Tensor]:
        hp = self.hparams
        losses: dict[str, Tensor] = {}
        if self.perceptual is not None:
            losses["G_perceptual"] = self.perceptual(fake_encoded, target) * hp.lambda_perceptual
        if hp.lambda_ms > 0:
            z_random2 = torch.randn_like(z_random)
            fake_random2 = self.gen(source, z_random2)
            losses["G_ms"] = mode_seeking_loss(fake_random, fake_random2, z_random, z_random2) * hp.lambda_ms
        return losses

    def check_generator_size(self, size: int) -> None:
        if size % self.gen.size_multiple:
            raise ConfigError(f"data.crop_size {size} does not fit LSRAGAN's generator: its two stride-2 convs and "
                              f"input shortcut need image sides that are multiples of {self.gen.size_multiple}; use "
                              f"a crop size that is a multiple of {self.gen.size_multiple}")

    def objective_summary(self) -> str:
        hp = self.hparams
        extra = []
        if self.perceptual is not None:
            extra.append(f"perceptual L1 ({hp.perceptual_network}) x {hp.lambda_perceptual:g} on the cVAE-GAN path")
        if hp.lambda_ms > 0:
            extra.append(f"mode seeking (MSGAN) x {hp.lambda_ms:g} on the cLR-GAN path")
        return super().objective_summary() + "".join(f"; {term}" for term in extra)
