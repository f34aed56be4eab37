"""StarGAN (Choi, Choi, Kim, Ha, Kim, Choo, CVPR 2018): one generator for every pair of domains.

Reference implementation: yunjey/stargan (MIT), solver.py `train()` in its single-label (RaFD)
mode: cross-entropy domain classification over one-hot labels. Each iteration: the target
labels are the batch's own labels in a random order (`torch.randperm`, as the reference), one
critic update (WGAN-GP with the domain classification of real images), and every `n_critic`-th
iteration one generator update (adversarial, classification of fakes as the target, L1 cycle
back to the source label). Learning rates fall linearly to 0 over the last `num_iters_decay`
iterations, in steps every `lr_update_step` iterations.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from i2ibench.errors import ConfigError
from i2ibench.losses import gradient_penalty
from i2ibench.methods.base import TranslationModule, grid_of_rows, image_rows, set_requires_grad
from i2ibench.methods.recipe import BatchSplit, announce, apply_global_batch, total_steps
from i2ibench.nets.stargan import Discriminator, Generator, classifier_kernel
from i2ibench.registry import register_method


@register_method("stargan", description="StarGAN (Choi et al. 2018): one generator conditioned on a target-domain "
                                        "one-hot; WGAN-GP critic with an auxiliary domain classifier",
                 dataset_mode="multi-domain")
class StarGAN(TranslationModule):
    """Args (defaults are the reference's main.py; `configs/methods/stargan.yaml` cites each):
        image_size: image side the discriminator is built for (128); must equal `data.crop_size`.
        num_domains: None takes the dataset's domain count at set-up (then it is saved with the model).
        g_conv_dim, d_conv_dim: first-layer widths (64, 64). g_repeat_num: residual blocks (6).
        d_repeat_num: stride-2 convolutions of D (6); image_size must be a multiple of 2**d_repeat_num.
        lambda_cls, lambda_rec, lambda_gp: classification, cycle-reconstruction, gradient-penalty weights.
        g_lr, d_lr, beta1, beta2: Adam settings of G and D.
        n_critic: critic updates per generator update.
        num_iters, num_iters_decay, lr_update_step: the learning rates are constant for
            num_iters - num_iters_decay iterations, then fall linearly to 0 at num_iters, lowered
            every lr_update_step iterations.
    """

    dataset_mode = "multi-domain"
    label_guided = True  # judged on `s->t` tasks (one output per source), not @latent / @reference

    def __init__(self, image_size: int = 128, num_domains: int | None = None, g_conv_dim: int = 64,
                 d_conv_dim: int = 64, g_repeat_num: int = 6, d_repeat_num: int = 6, lambda_cls: float = 1.0,
                 lambda_rec: float = 10.0, lambda_gp: float = 10.0, g_lr: float = 1e-4, d_lr: float = 1e-4,
                 beta1: float = 0.5, beta2: float = 0.999, n_critic: int = 5, num_iters: int = 200_000,
                 num_iters_decay: int = 100_000, lr_update_step: int = 1000) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_schedule(n_critic, num_iters, num_iters_decay, lr_update_step)
        try:
            classifier_kernel(image_size, d_repeat_num)
        except ValueError as error:
            raise ConfigError(f"model.init_args: {error}") from None
        # Completed iterations (critic updates) on the global batch, as the reference's loop counter i + 1.
        self.iterations = 0
        self.batch_split: BatchSplit | None = None
        if num_domains is not None:
            self.build_networks(num_domains)

    # -- networks ------------------------------------------------------------------------------
    def build_networks(self, num_domains: int) -> None:
        hp = self.hparams
        # PyTorch's default initialisation, as the reference (it applies no init of its own).
        self.generator = Generator(hp.g_conv_dim, num_domains, hp.g_repeat_num)
        self.discriminator = Discriminator(hp.image_size, hp.d_conv_dim, num_domains, hp.d_repeat_num)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":  # the reference's batch 16 is global: 8 per process on 2, 4 on 4, ...
            self.batch_split = apply_global_batch(self)
        datamodule = getattr(self.trainer, "datamodule", None)
        has_layout = datamodule is not None and getattr(datamodule, "layout", None) is not None
        domains = len(datamodule.domains) if has_layout else None
        if self.hparams.num_domains is None:
            if domains is None:
                raise ConfigError("model.init_args.num_domains is not set and no datamodule gives it")
            self.hparams.num_domains = domains
            self.build_networks(domains)
        elif domains is not None and domains != self.hparams.num_domains:
            raise ConfigError(f"the model has {self.hparams.num_domains} domains (model.init_args.num_domains), "
                              f"the dataset {domains} ({list(datamodule.domains)})")
        crop = getattr(datamodule, "hparams", {}).get("crop_size") if datamodule is not None else None
        if crop is not None and crop != self.hparams.image_size:
            raise ConfigError(f"data.crop_size ({crop}) must equal model.init_args.image_size "
                              f"({self.hparams.image_size}): the discriminator's classifier is sized for it")

    def on_train_start(self) -> None:
        super().on_train_start()
        hp, trainer = self.hparams, self.trainer
        total = total_steps(trainer)
        if total > hp.num_iters:
            raise ConfigError(f"this fit runs {total} iterations, more than model.init_args.num_iters ({hp.num_iters}):"
                              f" the learning rates reach 0 at num_iters. Set num_iters (and num_iters_decay) to the "
                              f"run's length, or shorten trainer.max_epochs.")
        start = hp.num_iters - hp.num_iters_decay
        lines = [self.batch_split.describe() if self.batch_split else "batch: as the datamodule loads it",
                 f"{total} iterations: max_epochs {trainer.max_epochs} x {trainer.num_training_batches} per epoch "
                 f"(one iteration = one critic update on the global batch, whatever the number of processes)",
                 f"one generator update every n_critic {hp.n_critic} iterations: "
                 f"{int(total) // hp.n_critic} in this fit",
                 f"Adam lr G {hp.g_lr:g}, D {hp.d_lr:g}, betas ({hp.beta1:g}, {hp.beta2:g}); constant for {start} "
                 f"iterations, then linearly to 0 at num_iters {hp.num_iters} (lowered every {hp.lr_update_step}); "
                 f"{self.learning_rate_factor(max(0, int(total) - 1)):g} x lr in the last iteration of this fit"]
        announce(trainer, "StarGAN", lines, self.batch_split)

    # -- training ------------------------------------------------------------------------------
    def learning_rate_factor(self, iterations: int) -> float:
        """lr / initial lr after `iterations` completed iterations.

        The reference lowers the rates after iteration i (1-based) when i % lr_update_step == 0 and
        i > num_iters - num_iters_decay; each lowering here is lr_update_step / num_iters_decay of
        the initial rate, so the rate reaches 0 at num_iters as the paper states (see the config).
        """
        hp = self.hparams
        start = hp.num_iters - hp.num_iters_decay
        lowerings = max(0, iterations // hp.lr_update_step - start // hp.lr_update_step)
        return max(0.0, 1.0 - lowerings * hp.lr_update_step / hp.num_iters_decay)

    def generator_steps_at(self, iteration: int) -> bool:
        """Whether iteration `iteration` (0-based) updates the generator: the reference's (i + 1) % n_critic == 0."""
        return (iteration + 1) % self.hparams.n_critic == 0

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_d, opt_g = self.optimizers()
        factor = self.learning_rate_factor(self.iterations)
        for optimizer, lr in ((opt_d, self.hparams.d_lr), (opt_g, self.hparams.g_lr)):
            for group in getattr(optimizer, "optimizer", optimizer).param_groups:
                group["lr"] = lr * factor
        x_real, label_org = batch["x"], torch.as_tensor(batch["y"], device=self.device).view(-1)
        # Target domains: the batch's labels shuffled (solver.py), from the global torch RNG on the
        # CPU as there, so the draws are the same on any device (and checkpointed for resume).
        label_trg = label_org[torch.randperm(len(label_org)).to(label_org.device)]

        set_requires_grad((self.discriminator,), True)
        d_losses = self.critic_losses(x_real, label_org, label_trg)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_losses["total"])
        opt_d.step()
        losses = {f"D_{k}": v for k, v in d_losses.items()}

        if self.generator_steps_at(self.iterations):
            # D's parameter gradients would be discarded (the reference zeroes them before D's next
            # update), so they are not computed at all.
            set_requires_grad((self.discriminator,), False)
            g_losses = self.generator_losses(x_real, label_org, label_trg)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_losses["total"])
            opt_g.step()
            set_requires_grad((self.discriminator,), True)
            losses |= {f"G_{k}": v for k, v in g_losses.items()}

        self.iterations += 1
        self.log_losses({**losses, "lr_factor": torch.tensor(factor)}, batch_size=x_real.shape[0])

    def one_hot(self, labels: Tensor) -> Tensor:
        return F.one_hot(labels.long(), self.hparams.num_domains).float()

    def critic_losses(self, x_real: Tensor, label_org: Tensor, label_trg: Tensor) -> dict[str, Tensor]:
        """-D(real) + D(fake) + lambda_cls CE(cls(real), source) + lambda_gp GP, as solver.py's D step."""
        hp = self.hparams
        src_real, cls_real = self.discriminator(x_real)
        loss_real = -src_real.mean()
        loss_cls = F.cross_entropy(cls_real, label_org)
        with torch.no_grad():  # (in training mode: the generator's running statistics advance as there)
            x_fake = self.generator(x_real, self.one_hot(label_trg))
        loss_fake = self.discriminator(x_fake)[0].mean()
        # The reference interpolates alpha * real + (1 - alpha) * fake with alpha ~ U[0, 1) drawn on
        # the CPU; losses.gradient_penalty takes the weight of the fake, 1 - alpha.
        alpha = torch.rand(x_real.shape[0], 1, 1, 1).to(x_real.device, x_real.dtype)
        loss_gp = gradient_penalty(lambda images: self.discriminator(images)[0], x_real, x_fake, epsilon=1 - alpha)
        total = loss_real + loss_fake + hp.lambda_cls * loss_cls + hp.lambda_gp * loss_gp
        return {"real": loss_real, "fake": loss_fake, "cls": loss_cls, "gp": loss_gp, "total": total}

    def generator_losses(self, x_real: Tensor, label_org: Tensor, label_trg: Tensor) -> dict[str, Tensor]:
        """-D(fake) + lambda_cls CE(cls(fake), target) + lambda_rec |x - G(G(x, c_trg), c_org)|_1 (the G step)."""
        hp = self.hparams
        x_fake = self.generator(x_real, self.one_hot(label_trg))
        src_fake, cls_fake = self.discriminator(x_fake)
        loss_fake = -src_fake.mean()
        loss_cls = F.cross_entropy(cls_fake, label_trg)
        x_rec = self.generator(x_fake, self.one_hot(label_org))
        loss_rec = (x_real - x_rec).abs().mean()
        total = loss_fake + hp.lambda_rec * loss_rec + hp.lambda_cls * loss_cls
        return {"fake": loss_fake, "cls": loss_cls, "rec": loss_rec, "total": total}

    def configure_optimizers(self):
        hp = self.hparams
        betas = (hp.beta1, hp.beta2)
        return [self.adam(self.discriminator.parameters(), hp.d_lr, betas),
                self.adam(self.generator.parameters(), hp.g_lr, betas)]

    # -- evaluation ----------------------------------------------------------------------------
    def eval_tasks(self, domains: tuple[str, ...]) -> list[str]:
        """Every ordered pair of distinct domains, one deterministic output per source (`src->trg`)."""
        return [f"{s}->{t}" for s in domains for t in domains if s != t]

    @torch.no_grad()
    def translate(self, batch: dict, task: str) -> Tensor:
        """N x 3 x H x W: each source `x` translated to its item's target domain `y_trg`."""
        y_trg = torch.as_tensor(batch["y_trg"], device=self.device).view(-1)
        return self.generator(batch["x"], self.one_hot(y_trg))

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> Tensor:
        """A row per input image: the input, then its translation into every domain (solver.py's samples)."""
        rows = []
        for images in inputs.values():
            images = images.to(self.device)
            outputs = [self.generator(images, self.one_hot(torch.full((len(images),), t, device=self.device)))
                       for t in range(self.hparams.num_domains)]
            rows += image_rows(images, *outputs)
        return grid_of_rows(rows)

    # -- checkpoints ---------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"iterations": self.iterations}

    def load_extra_state(self, state: dict) -> None:
        self.iterations = state["iterations"]


def check_schedule(n_critic: int, num_iters: int, num_iters_decay: int, lr_update_step: int) -> None:
    """One line naming the option for an impossible schedule, before anything is built."""
    if n_critic < 1:
        raise ConfigError(f"model.init_args.n_critic must be at least 1, got {n_critic}")
    if lr_update_step < 1:
        raise ConfigError(f"model.init_args.lr_update_step must be at least 1, got {lr_update_step}")
    if not 0 < num_iters_decay <= num_iters:
        raise ConfigError(f"model.init_args.num_iters_decay ({num_iters_decay}) must be in 1..num_iters ({num_iters})")
