"""Paired translation: Pix2Pix (Isola, Zhu, Zhou, Efros, "Image-to-Image Translation with
Conditional Adversarial Networks", CVPR 2017) and SRAGAN (Wang 2021, "GAN translation from sketch
to real image based on perceptual attention and latent space regularization", thesis).

One generator (U-Net) translates the source image; a conditional PatchGAN judges the source and
an image of the target domain concatenated along channels (real pair vs. translated pair); the
generator also gets an L1 term against the ground-truth counterpart. Trains on aligned pairs
(`data.mode: paired`, see `data.paired`). One direction per run, like the reference's
`--direction`. Reference implementation: junyanz/pytorch-CycleGAN-and-pix2pix,
models/pix2pix_model.py (D updated first, then G; no image pool; D loss halved).

Test time: the paper runs the generator at inference "in exactly the same manner as during the
training phase": dropout on and batch norm with the test batch's statistics, with batch 1
(sec. 3.1 / 6.1 of the arXiv version; the reference's test.py without `--eval`). That is the
default here (`inference: as-training`), made repeatable: every image is translated alone (its
own statistics, so no result depends on the evaluation batch size or on the other images), with
dropout masks drawn from a generator seeded by (task, image index). `inference: eval` is the
reference's `--eval` instead: running statistics, no dropout.

SRAGAN is this training step with another generator (CBAM attention-residual blocks and an input
shortcut, `nets/attention.py`) and one more generator term, an L1 perceptual loss between the
translation and the ground truth (`lambda_perceptual`, 0 for Pix2Pix): configuration, not a module
(`configs/methods/sragan.yaml`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import i2ibench.nets  # noqa: F401  (registers the generators and discriminators)
import i2ibench.nets.attention  # noqa: F401  (registers SRAGAN's generator, attention-resnet)
from i2ibench.data.folders import item_seed
from i2ibench.errors import ConfigError
from i2ibench.losses import GAN_MODES, PerceptualLoss, discriminator_adversarial_loss, generator_adversarial_loss
from i2ibench.methods.base import TranslationModule, grid_of_rows, image_rows, set_requires_grad
from i2ibench.methods.recipe import BatchSplit, announce, apply_global_batch, epoch_schedule_lines
from i2ibench.methods.schedules import linear_decay
from i2ibench.nets.unet import batch_statistics, seeded_dropout
from i2ibench.registry import DISCRIMINATORS, GENERATORS, register_method

INFERENCE_MODES = ("as-training", "eval")
DIRECTIONS = ("A2B", "B2A")


@register_method("sragan", dataset_mode="paired",
                 description="SRAGAN (Wang 2021): CBAM attention-residual G with an input shortcut, conditional "
                             "PatchGAN, GAN + L1 + perceptual L1, paired data")
@register_method("pix2pix", dataset_mode="paired",
                 description="Pix2Pix (Isola et al. 2017): U-Net G with dropout, conditional 70x70 PatchGAN, "
                             "vanilla GAN + L1 x 100, paired data")
class Pix2Pix(TranslationModule):
    """Conditional GAN on aligned pairs, one direction.

    Args (defaults are the paper's; `configs/methods/pix2pix.yaml` cites each):
        generator: registered generator name (`unet`).
        generator_args: its keyword arguments (num_downs, ngf, norm, dropout, init_gain).
        discriminator: registered discriminator name (`patch`); it sees source and image
            concatenated, so its `in_channels` defaults to 6.
        discriminator_args: its keyword arguments (ndf, n_layers, norm).
        gan_mode: vanilla (Pix2Pix), lsgan or hinge.
        lambda_L1: weight of the L1 term between the translation and the ground truth.
        lr, beta1, beta2: Adam, the same for G and D.
        n_epochs, n_epochs_decay: epochs at constant lr, then epochs of linear decay to zero.
        direction: `A2B` or `B2A` (the reference's --direction AtoB / BtoA); the one task evaluated.
        inference: `as-training` (dropout on, per-image batch statistics: the paper) or `eval`.
        lambda_perceptual: weight of an L1 perceptual loss between the translation and the ground
            truth (0: none, Pix2Pix; SRAGAN uses one).
        perceptual_network: `vgg16` (ImageNet, downloaded) or `inception` (the metrics' TF-FID
            Inception, works offline); named in every run record through the config.
        perceptual_weights: Inception weights for `inception` (default: as the metrics resolve them).
    """

    dataset_mode = "paired"

    def __init__(self, generator: str = "unet", generator_args: dict[str, Any] | None = None,
                 discriminator: str = "patch", discriminator_args: dict[str, Any] | None = None,
                 gan_mode: str = "vanilla", lambda_L1: float = 100.0, lr: float = 2e-4, beta1: float = 0.5,
                 beta2: float = 0.999, n_epochs: int = 100, n_epochs_decay: int = 100, direction: str = "A2B",
                 inference: str = "as-training", lambda_perceptual: float = 0.0,
                 perceptual_network: str = "vgg16", perceptual_weights: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        for option, value, choices in (("gan_mode", gan_mode, GAN_MODES), ("direction", direction, DIRECTIONS),
                                       ("inference", inference, INFERENCE_MODES)):
            if value not in choices:
                raise ConfigError(f"model.init_args.{option}: unknown value {value!r}; use one of {', '.join(choices)}")
        # Built first, so a network whose weights cannot be had fails before anything else.
        self.perceptual = PerceptualLoss(perceptual_network, perceptual_weights) if lambda_perceptual > 0 else None
        self.gen = GENERATORS.get(generator)(**(generator_args or {}))
        conditional = {"in_channels": 6, "norm": "batch", **(discriminator_args or {})}  # sees source + image
        self.disc = DISCRIMINATORS.get(discriminator)(**conditional)
        self.source, self.target = direction[0], direction[2]
        self.batch_split: BatchSplit | None = None  # set in setup("fit") from data.batch_size and the process count

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        real_src, real_trg = batch[self.source], batch[self.target]
        fake_trg = self.gen(real_src)

        # The discriminator first (the reference's order), on (source, target) pairs.
        set_requires_grad((self.disc,), True)
        d_loss = discriminator_adversarial_loss(self.disc(torch.cat([real_src, real_trg], 1)),
                                                self.disc(torch.cat([real_src, fake_trg.detach()], 1)), hp.gan_mode)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()

        # Then the generator, judged by the updated, frozen discriminator, plus L1 to the ground truth.
        set_requires_grad((self.disc,), False)
        losses = {"gen_adv": generator_adversarial_loss(self.disc(torch.cat([real_src, fake_trg], 1)), hp.gan_mode),
                  "gen_l1": F.l1_loss(fake_trg, real_trg) * hp.lambda_L1}
        if self.perceptual is not None:
            losses["gen_perceptual"] = self.perceptual(fake_trg, real_trg) * hp.lambda_perceptual
        g_total = torch.stack(list(losses.values())).sum()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_total)
        opt_g.step()

        self.log_losses({**losses, "gen_total": g_total, "disc": d_loss}, batch_size=real_src.shape[0])

    def configure_optimizers(self):
        hp = self.hparams
        optimizers = [self.adam(net.parameters(), hp.lr, (hp.beta1, hp.beta2)) for net in (self.gen, self.disc)]
        factor = linear_decay(hp.n_epochs, hp.n_epochs_decay)
        return optimizers, [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in optimizers]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.check_image_size()
        # data.batch_size is the global batch; the paper's batch 1 runs as 1 per process under DDP.
        if stage == "fit":
            self.batch_split = apply_global_batch(self, per_sample_recipe=True)

    def check_image_size(self) -> None:
        """A U-Net halves the image num_downs times (the attention-residual generator twice, and adds its
        input to its output): refuse a crop size the generator cannot take, before training."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        multiple = getattr(self.gen, "size_multiple", None)
        size = getattr(getattr(datamodule, "eval_transform", None), "crop_size", None)
        if multiple is None or size is None or size % multiple == 0:
            return
        downs = getattr(self.gen, "num_downs", None)
        if downs is None:  # a generator of fixed depth: only the crop size can change
            raise ConfigError(f"data.crop_size {size} does not fit generator {self.hparams.generator!r}: image sides "
                              f"must be multiples of {multiple}; use a crop size that is a multiple of {multiple}")
        fits = max(5, size.bit_length() - 1) if size & (size - 1) == 0 else None
        hint = (f"set model.init_args.generator_args.num_downs to {fits}" if fits is not None
                else f"use a crop size that is a multiple of {multiple}")
        raise ConfigError(f"data.crop_size {size} does not fit a U-Net with num_downs {downs}: image sides must be "
                          f"multiples of 2**{downs} = {multiple} (Pix2Pix: 256 px with 8); {hint}")

    def on_train_start(self) -> None:
        super().on_train_start()
        hp = self.hparams
        rates = f"G and D {hp.lr:g} (Adam betas {hp.beta1:g}, {hp.beta2:g})"
        lines = epoch_schedule_lines(self.trainer, self.batch_split, hp.n_epochs, hp.n_epochs_decay, rates)
        inference = ("as in training (dropout, per-image batch statistics)" if hp.inference == "as-training"
                     else "in eval mode (running statistics, no dropout)")
        perceptual = (f" + perceptual L1 ({hp.perceptual_network}) x {hp.lambda_perceptual:g}"
                      if self.perceptual is not None else "")
        lines.append(f"{hp.direction} on aligned pairs: {hp.gan_mode} GAN + L1 x {hp.lambda_L1:g}{perceptual}; "
                     f"evaluated {inference}")
        announce(self.trainer, type(self).__name__, lines, self.batch_split)

    # -- evaluation ----------------------------------------------------------------------------
    def eval_tasks(self, domains: tuple[str, ...]) -> list[str]:
        return [self.hparams.direction]  # one generator, one direction

    def translate(self, batch: dict, task: str) -> Tensor:
        if task != self.hparams.direction:
            raise ValueError(f"this Pix2Pix translates {self.hparams.direction} only (one direction per model), "
                             f"not {task!r}")
        source = batch[self.source]
        if self.hparams.inference == "eval":
            return self.gen(source)
        indices = batch.get("index")
        outputs = []
        for k in range(source.shape[0]):  # alone: batch statistics of this image only (the paper's batch 1)
            index = int(indices[k]) if indices is not None else k
            noise = torch.Generator().manual_seed(item_seed("pix2pix-dropout", task, index))
            with seeded_dropout(self.gen, noise), batch_statistics(self.gen):
                outputs.append(self.gen(source[k:k + 1]))
        return torch.cat(outputs)

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> Tensor:
        """Rows of source | translation | ground truth (the sample images are paired when the split is)."""
        real = inputs[self.source].to(self.device)
        fake = self.translate({self.source: real}, self.hparams.direction)
        rows = image_rows(real, fake, inputs[self.target].to(self.device))
        return grid_of_rows(rows, per_line=min(4, len(rows)))
