"""StarGAN v2 (Choi, Uh, Yoo, Ha, CVPR 2020): diverse translation between many domains with one generator.

Reference implementation: clovaai/stargan-v2, core/solver.py (training), core/eval.py (evaluation).
Each iteration, in the reference's order: a discriminator step with latent-guided fakes, one with
reference-guided fakes, a generator step with latent guidance (stepping the generator, mapping
network and style encoder), one with reference guidance (the generator only), then the exponential
moving average of generator, mapping network and style encoder. Evaluation and samples use the
moving averages.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2ibench.data.tasks import parse_task
from i2ibench.errors import ConfigError
from i2ibench.methods.base import TranslationModule, grid_of_rows, image_rows, set_requires_grad
from i2ibench.methods.recipe import BatchSplit, announce, apply_global_batch, check_latent_size, total_steps
from i2ibench.nets.stargan_v2 import Discriminator, Generator, MappingNetwork, StyleEncoder, he_init
from i2ibench.registry import register_method

EVAL_MODES = ("latent", "reference")


def adversarial_loss(logits: Tensor, target: float) -> Tensor:
    """Non-saturating GAN loss: binary cross-entropy with logits against 1 (real) or 0 (fake)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """Zero-centred gradient penalty on real images (Mescheder et al. 2018): 0.5 E ||grad_x D(x)||^2."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


@register_method("stargan-v2", description="StarGAN v2 (Choi et al. 2020): mapping network, style encoder, "
                                           "AdaIN generator, multi-head D; latent- and reference-guided",
                 dataset_mode="multi-domain")
class StarGANv2(TranslationModule):
    """Args (defaults are the reference's; `configs/methods/stargan-v2.yaml` cites each):
        img_size, style_dim, latent_dim, max_conv_dim: network sizes (256, 64, 16, 512).
        num_domains: None takes the dataset's domain count at set-up (then it is saved with the model).
        w_hpf: weight of the face high-pass path; > 0 needs the pretrained FAN landmark network,
            which i2ibench does not ship: 0 (the AFHQ setting) is the default.
        lambda_reg, lambda_sty, lambda_ds, lambda_cyc: R1, style reconstruction, diversity, cycle weights.
        ds_iter: iterations over which the diversity weight decays linearly to 0.
        lr, f_lr: Adam learning rate of G, E, D, and of the mapping network.
        beta1, beta2, weight_decay: Adam settings. ema_beta: moving-average decay.
        base_dim: first-layer width (None: the reference's 2**14 / img_size); for small CPU runs.
    """

    dataset_mode = "multi-domain"

    def __init__(self, img_size: int = 256, style_dim: int = 64, latent_dim: int = 16, num_domains: int | None = None,
                 max_conv_dim: int = 512, w_hpf: float = 0.0, lambda_reg: float = 1.0, lambda_sty: float = 1.0,
                 lambda_ds: float = 1.0, ds_iter: int = 100_000, lambda_cyc: float = 1.0, lr: float = 1e-4,
                 f_lr: float = 1e-6, beta1: float = 0.0, beta2: float = 0.99, weight_decay: float = 1e-4,
                 ema_beta: float = 0.999, base_dim: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        if w_hpf > 0:
            raise ConfigError("model.init_args.w_hpf > 0 (the CelebA-HQ setting) needs the pretrained FAN "
                              "face-landmark network of the reference, which i2ibench does not ship; use w_hpf: 0 "
                              "(the AFHQ setting).")
        # Completed training iterations (one iteration = the four updates above, on the global batch:
        # `data.batch_size` is split across DDP processes, so steps count the reference's iterations).
        self.iterations = 0
        self.batch_split: BatchSplit | None = None
        if num_domains is not None:
            self.build_networks(num_domains)

    # -- networks ------------------------------------------------------------------------------
    def build_networks(self, num_domains: int) -> None:
        hp = self.hparams
        self.generator = Generator(hp.img_size, hp.style_dim, hp.max_conv_dim, hp.w_hpf, hp.base_dim)
        self.mapping_network = MappingNetwork(hp.latent_dim, hp.style_dim, num_domains)
        self.style_encoder = StyleEncoder(hp.img_size, hp.style_dim, num_domains, hp.max_conv_dim, hp.base_dim)
        self.discriminator = Discriminator(hp.img_size, num_domains, hp.max_conv_dim, hp.base_dim)
        # As the reference: the moving averages are copies made before the trained nets get He init.
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.mapping_network_ema = copy.deepcopy(self.mapping_network).requires_grad_(False)
        self.style_encoder_ema = copy.deepcopy(self.style_encoder).requires_grad_(False)
        for net in (self.generator, self.mapping_network, self.style_encoder, self.discriminator):
            he_init(net)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":  # the reference's batch 8 is global: 4 per process on 2, 2 on 4, ...
            self.batch_split = apply_global_batch(self)
        datamodule = getattr(self.trainer, "datamodule", None)
        domains = len(datamodule.domains) if datamodule is not None and datamodule.layout is not None else None
        if self.hparams.num_domains is None:
            if domains is None:
                raise ConfigError("model.init_args.num_domains is not set and no datamodule gives it")
            self.hparams.num_domains = domains
            self.build_networks(domains)
        elif domains is not None and domains != self.hparams.num_domains:
            raise ConfigError(f"model.init_args.num_domains is {self.hparams.num_domains}, the dataset has {domains} "
                              f"({list(datamodule.domains)}); leave it null to take the dataset's")
        check_latent_size(datamodule, self.hparams.latent_dim, "model.init_args.latent_dim", "latent codes")

    def on_train_start(self) -> None:
        super().on_train_start()
        hp, trainer = self.hparams, self.trainer
        total = total_steps(trainer)
        final = max(0.0, hp.lambda_ds * (1.0 - total / hp.ds_iter))
        lines = [self.batch_split.describe() if self.batch_split else "batch: as the datamodule loads it",
                 f"{total} iterations: max_epochs {trainer.max_epochs} x {trainer.num_training_batches} per epoch "
                 f"(one iteration = one step of the global batch, whatever the number of processes)",
                 f"lr {hp.lr:g} (G, E, D), f_lr {hp.f_lr:g} (mapping network), Adam betas ({hp.beta1:g}, "
                 f"{hp.beta2:g}), weight decay {hp.weight_decay:g}",
                 f"diversity weight lambda_ds {hp.lambda_ds:g} -> 0 linearly over ds_iter {hp.ds_iter} iterations; "
                 f"{final:g} after the last iteration of this fit"]
        announce(trainer, "StarGAN v2", lines, self.batch_split)

    def pairs_of_ema(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.generator, self.generator_ema), (self.mapping_network, self.mapping_network_ema),
                (self.style_encoder, self.style_encoder_ema)]

    # -- training ------------------------------------------------------------------------------
    def diversity_weight(self) -> float:
        """lambda_ds decays linearly to 0 over ds_iter iterations (the reference subtracts it per iteration)."""
        return max(0.0, self.hparams.lambda_ds * (1.0 - self.iterations / self.hparams.ds_iter))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_d, opt_g, opt_f, opt_e = self.optimizers()
        x_real, y_org, y_trg = batch["x"], batch["y"], batch["y_ref"]
        lambda_ds = self.diversity_weight()

        set_requires_grad((self.discriminator,), True)
        d_latent = self.discriminator_losses(x_real, y_org, y_trg, style=("latent", batch["z"]))
        self.update([opt_d], d_latent["total"])
        d_reference = self.discriminator_losses(x_real, y_org, y_trg, style=("reference", batch["x_ref"]))
        self.update([opt_d], d_reference["total"])

        # Generator steps: D's parameter gradients would be discarded (the reference zeroes them
        # before D's next step), so they are not computed at all; the updates are the same.
        set_requires_grad((self.discriminator,), False)
        g_latent = self.generator_losses(x_real, y_org, y_trg, ("latent", batch["z"], batch["z2"]), lambda_ds)
        self.update([opt_g, opt_f, opt_e], g_latent["total"])
        set_requires_grad((self.mapping_network, self.style_encoder), False)  # stepped above, not below
        g_reference = self.generator_losses(x_real, y_org, y_trg, ("reference", batch["x_ref"], batch["x_ref2"]),
                                            lambda_ds)
        self.update([opt_g], g_reference["total"])
        set_requires_grad((self.mapping_network, self.style_encoder), True)

        self.update_moving_averages()
        self.iterations += 1
        losses = {f"D_latent_{k}": v for k, v in d_latent.items()} | {f"D_ref_{k}": v for k, v in d_reference.items()}
        losses |= {f"G_latent_{k}": v for k, v in g_latent.items()} | {f"G_ref_{k}": v for k, v in g_reference.items()}
        self.log_losses({**losses, "lambda_ds": torch.tensor(lambda_ds)}, batch_size=x_real.shape[0])

    def update(self, optimizers: list, loss: Tensor) -> None:
        """Zero every gradient (as the reference's _reset_grad), back-propagate, step the given optimisers."""
        for optimizer in self.optimizers():
            optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        for optimizer in optimizers:
            optimizer.step()

    def style_of(self, style: tuple, y: Tensor, ema: bool = False) -> Tensor:
        """A style code from a latent (`("latent", z)`) or a reference image (`("reference", x_ref)`)."""
        kind, source = style[0], style[1]
        if kind == "latent":
            return (self.mapping_network_ema if ema else self.mapping_network)(source, y)
        return (self.style_encoder_ema if ema else self.style_encoder)(source, y)

    def discriminator_losses(self, x_real: Tensor, y_org: Tensor, y_trg: Tensor, style: tuple) -> dict[str, Tensor]:
        x_real = x_real.detach().requires_grad_()
        real_logits = self.discriminator(x_real, y_org)
        loss_real = adversarial_loss(real_logits, 1.0)
        loss_reg = r1_penalty(real_logits, x_real)
        with torch.no_grad():
            x_fake = self.generator(x_real, self.style_of(style, y_trg))
        loss_fake = adversarial_loss(self.discriminator(x_fake, y_trg), 0.0)
        total = loss_real + loss_fake + self.hparams.lambda_reg * loss_reg
        return {"real": loss_real, "fake": loss_fake, "r1": loss_reg, "total": total}

    def generator_losses(self, x_real: Tensor, y_org: Tensor, y_trg: Tensor, styles: tuple,
                         lambda_ds: float) -> dict[str, Tensor]:
        hp = self.hparams
        kind, first, second = styles
        s_trg = self.style_of((kind, first), y_trg)
        x_fake = self.generator(x_real, s_trg)
        loss_adv = adversarial_loss(self.discriminator(x_fake, y_trg), 1.0)
        loss_sty = (self.style_encoder(x_fake, y_trg) - s_trg).abs().mean()
        x_fake2 = self.generator(x_real, self.style_of((kind, second), y_trg)).detach()
        loss_ds = (x_fake - x_fake2).abs().mean()
        x_rec = self.generator(x_fake, self.style_encoder(x_real, y_org))
        loss_cyc = (x_rec - x_real).abs().mean()
        total = loss_adv + hp.lambda_sty * loss_sty - lambda_ds * loss_ds + hp.lambda_cyc * loss_cyc
        return {"adv": loss_adv, "style": loss_sty, "diversity": loss_ds, "cycle": loss_cyc, "total": total}

    @torch.no_grad()
    def update_moving_averages(self) -> None:
        """ema <- lerp(param, ema, beta), i.e. beta * ema + (1 - beta) * param (the reference's moving_average)."""
        for net, ema in self.pairs_of_ema():
            ema_params, params = list(ema.parameters()), list(net.parameters())
            torch._foreach_lerp_(ema_params, params, 1.0 - self.hparams.ema_beta)

    def configure_optimizers(self):
        hp = self.hparams
        betas = (hp.beta1, hp.beta2)
        return [self.adam(self.discriminator.parameters(), hp.lr, betas, hp.weight_decay),
                self.adam(self.generator.parameters(), hp.lr, betas, hp.weight_decay),
                self.adam(self.mapping_network.parameters(), hp.f_lr, betas, hp.weight_decay),
                self.adam(self.style_encoder.parameters(), hp.lr, betas, hp.weight_decay)]

    # -- evaluation ----------------------------------------------------------------------------
    def eval_tasks(self, domains: tuple[str, ...]) -> list[str]:
        """Every ordered pair of domains, latent- and reference-guided (the reference's core/eval.py)."""
        return [f"{s}->{t}@{mode}" for mode in EVAL_MODES for s in domains for t in domains if s != t]

    @torch.no_grad()
    def translate(self, batch: dict, task: str) -> Tensor:
        """N x K x 3 x H x W: each source under the K latents (`z`) or K references (`x_ref`) of its item."""
        spec = parse_task(task)
        x, y_trg = batch["x"], torch.as_tensor(batch["y_trg"], device=self.device).view(-1)
        styles = batch["z"] if spec.mode == "latent" else batch["x_ref"]
        outputs = [self.generator_ema(x, self.style_of((spec.mode, styles[:, k]), y_trg, ema=True))
                   for k in range(styles.shape[1])]
        return torch.stack(outputs, dim=1).clamp(-1, 1)  # the generator has no tanh; images are clamped

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> Tensor:
        """A row per input image: the input, then its latent-guided translation into every domain."""
        domains = list(inputs)
        generator = torch.Generator().manual_seed(0)
        rows = []
        for images in inputs.values():
            images = images.to(self.device)
            z = torch.randn(len(images), self.hparams.latent_dim, generator=generator).to(self.device)
            outputs = [self.generator_ema(images, self.mapping_network_ema(
                z, torch.full((len(images),), t, device=self.device))).clamp(-1, 1) for t in range(len(domains))]
            rows += image_rows(images, *outputs)
        return grid_of_rows(rows)

    # -- checkpoints ---------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"iterations": self.iterations}

    def load_extra_state(self, state: dict) -> None:
        self.iterations = state["iterations"]
