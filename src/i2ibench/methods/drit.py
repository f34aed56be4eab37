"""DRIT++ (Lee, Tseng, Mao, Huang, Lu, Singh, Yang, "DRIT++: Diverse Image-to-Image Translation via
Disentangled Representations", IJCV 2020) and MSGAN on it (Mao, Lee, Tseng, Ma, Yang, "Mode Seeking
Generative Adversarial Networks for Diverse Image Synthesis", CVPR 2019).

Reference implementations: HsinYingLee/DRIT (master: src/model.py, src/train.py, src/options.py)
and HelenMao/MSGAN (DRIT-Mode-Seeking/), its `--concat 1` default (attributes concatenated, a
VAE-like attribute encoder). One module, two configs: `drit` has the mode-seeking term off (the
DRIT row of StarGAN v2's tables; the DRIT reference's `--no_ms`), `msgan` on (weight 1).

One training batch of 2 per domain is halved, as the reference does (`half_size = 1`): the first
image of each domain is encoded (content c, attribute z ~ N(mu, sigma^2)), the second is only the
real image of the random-attribute discriminators D_A2 / D_B2. Every `d_iter`-th batch (and the
last two of an epoch) is a full step, in the reference's order:
1. forward: G(c_b, z_a) and G(c_a, z_b) (the cross translations), G(c_a, z_a) and G(c_b, z_b)
   (self-reconstructions), G(c, z_random) [and G(c, z_random2) with mode seeking], re-encoded
   cross translations decoded back (the cross-cycle), and E_attr of the random-z outputs;
2. discriminators D_A, D_B (cross translations), D_A2, D_B2 (random-z outputs), and the content
   discriminator (A's codes 0, B's codes 1; gradient norm clipped at 5), each its own Adam;
3. encoders and generator on: domain and content adversarial terms (content target 0.5), cross-
   cycle and self-reconstruction L1 x 10, KL of the attributes x 0.01 (summed), mean c^2 x 0.01;
   then generator and content encoder alone on: adversarial terms of the random-z outputs,
   latent regression |E_attr(G(c, z)) mu - z| x 10 [and the mode-seeking term]. Both gradients
   come from the one forward; see `update_encoders_and_generator` for why and how.
Other batches update the content discriminator alone (the reference's update_D_content), so it
steps 3 times per generator step at d_iter 3.

Evaluation: `src->dst@latent` (the batch's K latents) and `src->dst@reference` (z = mu of E_attr
on each of K target-domain references; the reference's test_forward_transfer samples z around mu
instead, we take the mean, as BicycleGAN here, so the evaluation is deterministic).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from i2ibench.data.tasks import parse_task
from i2ibench.errors import ConfigError
from i2ibench.losses import gaussian_kl, mode_seeking_loss, reparameterise
from i2ibench.methods.base import TranslationModule, grid_of_rows, image_rows, set_requires_grad
from i2ibench.methods.recipe import (BatchSplit, announce, apply_global_batch, check_latent_size,
                                     epoch_schedule_lines, require_even_batch)
from i2ibench.methods.schedules import linear_decay
from i2ibench.nets.drit import (AttributeEncoder, ConcatGenerator, ContentDiscriminator, ContentEncoder,
                                MultiScaleDiscriminator)
from i2ibench.registry import register_method

SAMPLE_LATENTS = 3  # random-z columns in the sample grid
OPTIMIZERS = ("dis_a", "dis_b", "dis_a2", "dis_b2", "dis_content", "enc_c", "enc_a", "gen")  # the reference's order


def adversarial_loss(logits: list[Tensor], target: float) -> Tensor:
    """Sigmoid cross-entropy of every scale's logits against `target`, summed over scales (the
    reference's sigmoid + binary_cross_entropy, in its numerically stable form)."""
    return sum(F.binary_cross_entropy_with_logits(out, torch.full_like(out, target)) for out in logits)


def discriminator_loss(net, real: Tensor, fake: Tensor) -> Tensor:
    """real -> 1, fake -> 0, summed over scales and not halved (the reference's backward_D)."""
    return adversarial_loss(net(real), 1.0) + adversarial_loss(net(fake.detach()), 0.0)


@register_method("msgan", description="MSGAN (Mao et al. 2019) on DRIT++: the mode-seeking term (weight 1) "
                                      "added to DRIT++'s random-attribute path; two domains, multimodal")
@register_method("drit", description="DRIT++ (Lee et al. 2020): shared-content and attribute encoders, content "
                                     "discriminator, cross-cycle loss; two domains, multimodal (no mode seeking)")
class DRIT(TranslationModule):
    """Two-domain multimodal translation by disentangled content and attribute codes.

    Args (defaults are the reference's; `configs/methods/drit.yaml` cites each):
        nz: attribute code size (the reference fixes 8).
        content_encoder_args, attribute_encoder_args, generator_args, discriminator_args,
            content_discriminator_args: keyword arguments of the nets in `i2ibench.nets.drit`.
        lambda_cross_cycle, lambda_self_recon: L1 weights of the cross-cycle and self-reconstruction.
        lambda_kl_attr, lambda_kl_content: weights of the attribute KL and of mean(c^2) on content codes.
        lambda_latent: latent regression weight; lambda_adv, lambda_content_adv: domain and content
            adversarial weights.
        lambda_ms: mode-seeking weight (0: off, DRIT; 1: MSGAN). On, the random path also draws a
            second z, whose output trains D_A2 / D_B2 and the generator like the first.
        d_iter: a full step every d_iter-th batch, the content discriminator alone on the others.
        lr, lr_content_factor: Adam learning rate, and the content discriminator's as a fraction of it.
        beta1, beta2, weight_decay: Adam (every network). content_clip: the content discriminator's
            gradient-norm clip.
        n_epochs, n_epochs_decay: constant-lr epochs, then linear decay (`linear_decay`).
    """

    styled_tasks = True  # judged on A->B@latent / @reference (reference rows of those tasks)

    def __init__(self, nz: int = 8, content_encoder_args: dict[str, Any] | None = None,
                 attribute_encoder_args: dict[str, Any] | None = None, generator_args: dict[str, Any] | None = None,
                 discriminator_args: dict[str, Any] | None = None,
                 content_discriminator_args: dict[str, Any] | None = None,
                 lambda_cross_cycle: float = 10.0, lambda_self_recon: float = 10.0, lambda_kl_attr: float = 0.01,
                 lambda_kl_content: float = 0.01, lambda_latent: float = 10.0, lambda_adv: float = 1.0,
                 lambda_content_adv: float = 1.0, lambda_ms: float = 0.0, d_iter: int = 3, lr: float = 1e-4,
                 lr_content_factor: float = 0.4, beta1: float = 0.5, beta2: float = 0.999,
                 weight_decay: float = 1e-4, content_clip: float = 5.0, n_epochs: int = 601,
                 n_epochs_decay: int = 600) -> None:
        super().__init__()
        self.save_hyperparameters()
        if nz < 1:
            raise ConfigError(f"model.init_args.nz must be a positive integer, got {nz!r} (DRIT++: 8)")
        if d_iter < 1:
            raise ConfigError(f"model.init_args.d_iter must be at least 1, got {d_iter!r} (DRIT++: 3)")
        if lambda_ms < 0:
            raise ConfigError(f"model.init_args.lambda_ms must be >= 0 (0 turns mode seeking off), got {lambda_ms!r}")
        self.enc_c = ContentEncoder(**(content_encoder_args or {}))
        self.enc_a = AttributeEncoder(nz=nz, **(attribute_encoder_args or {}))
        self.gen = ConcatGenerator(content_channels=self.enc_c.channels, nz=nz, **(generator_args or {}))
        self.dis_a, self.dis_b, self.dis_a2, self.dis_b2 = (MultiScaleDiscriminator(**(discriminator_args or {}))
                                                            for _ in range(4))
        self.dis_content = ContentDiscriminator(self.enc_c.channels, **(content_discriminator_args or {}))
        self.domain_names: tuple[str, str] = ("A", "B")  # dataset domains of the nets' sides a, b
        self.batch_split: BatchSplit | None = None
        self._warned_odd = False

    @property
    def domain_discriminators(self) -> tuple:
        return self.dis_a, self.dis_b, self.dis_a2, self.dis_b2

    @property
    def mode_seeking(self) -> bool:
        return self.hparams.lambda_ms > 0

    # -- training ------------------------------------------------------------------------------
    def content_only_step(self, batch_idx: int) -> bool:
        """The reference's train.py: content discriminator alone unless it is a d_iter-th batch or
        one of the epoch's last two."""
        return (batch_idx + 1) % self.hparams.d_iter != 0 and batch_idx < self.trainer.num_training_batches - 2

    def training_step(self, batch: dict, batch_idx: int) -> None:
        real_a, real_b = batch["A"], batch["B"]
        if real_a.shape[0] % 2 or real_b.shape[0] != real_a.shape[0]:
            if not self._warned_odd:  # the reference skips a batch that is not its full batch_size
                rank_zero_warn(f"DRIT++: skipped a training batch of {real_a.shape[0]} image(s): each batch is halved "
                               "into encoded and random-attribute images, as the reference does")
                self._warned_odd = True
            return
        opts = dict(zip(OPTIMIZERS, self.optimizers()))
        half = real_a.shape[0] // 2
        if self.content_only_step(batch_idx):
            set_requires_grad((self.dis_content,), True)  # a full step leaves the discriminators frozen
            with torch.no_grad():  # the reference detaches the codes: no gradient reaches the encoder
                content_a, content_b = self.enc_c(real_a[:half], "a"), self.enc_c(real_b[:half], "b")
            loss = self.content_discriminator_loss(content_a, content_b)
            self.step_discriminators(loss, opts, ("dis_content",))
            self.log_losses({"D_content": loss}, batch_size=real_a.shape[0])
            return
        t = self.forward_train(real_a, real_b)
        d_losses = self.update_discriminators(t, opts)
        g_losses = self.update_encoders_and_generator(t, opts)
        self.log_losses({**d_losses, **g_losses}, batch_size=real_a.shape[0])

    def forward_train(self, real_a: Tensor, real_b: Tensor) -> dict[str, Tensor]:
        """Every image and code of a full step (the reference's forward())."""
        hp, half = self.hparams, real_a.shape[0] // 2
        t = {"real_a": real_a[:half], "real_b": real_b[:half], "real_a_random": real_a[half:],
             "real_b_random": real_b[half:]}
        t["content_a"], t["content_b"] = self.enc_c(t["real_a"], "a"), self.enc_c(t["real_b"], "b")
        t["mu_a"], t["logvar_a"] = self.enc_a(t["real_a"], "a")
        t["mu_b"], t["logvar_b"] = self.enc_a(t["real_b"], "b")
        z_a, z_b = reparameterise(t["mu_a"], t["logvar_a"]), reparameterise(t["mu_b"], t["logvar_b"])
        randoms = [torch.randn(half, hp.nz, device=real_a.device, dtype=real_a.dtype)
                   for _ in range(2 if self.mode_seeking else 1)]
        t["z_random"] = randoms[0]
        if self.mode_seeking:
            t["z_random2"] = randoms[1]
        # One generator call per domain (the reference batches them too; its norms are per sample).
        n_random = len(randoms)
        fakes_a = self.gen(torch.cat([t["content_b"], t["content_a"], *[t["content_b"]] * n_random]),
                           torch.cat([z_a, z_a, *randoms]), "a").split(half)
        fakes_b = self.gen(torch.cat([t["content_a"], t["content_b"], *[t["content_a"]] * n_random]),
                           torch.cat([z_b, z_b, *randoms]), "b").split(half)
        t["fake_a"], t["fake_aa"], t["fake_a_random"] = fakes_a[:3]  # B->A, A->A, B's content + random z
        t["fake_b"], t["fake_bb"], t["fake_b_random"] = fakes_b[:3]
        if self.mode_seeking:
            t["fake_a_random2"], t["fake_b_random2"] = fakes_a[3], fakes_b[3]
        # Cross-cycle: re-encode the cross translations and swap back.
        content_recon_b, content_recon_a = self.enc_c(t["fake_a"], "a"), self.enc_c(t["fake_b"], "b")
        z_recon_a = reparameterise(*self.enc_a(t["fake_a"], "a"))
        z_recon_b = reparameterise(*self.enc_a(t["fake_b"], "b"))
        t["recon_a"] = self.gen(content_recon_a, z_recon_a, "a")
        t["recon_b"] = self.gen(content_recon_b, z_recon_b, "b")
        # Latent regression: E_attr's mu of the random-z outputs. E_attr is frozen for it: the
        # reference computes its gradient there but never steps E_attr on it (update_EG).
        set_requires_grad((self.enc_a,), False)
        t["mu_random_a"], _ = self.enc_a(t["fake_a_random"], "a")
        t["mu_random_b"], _ = self.enc_a(t["fake_b_random"], "b")
        set_requires_grad((self.enc_a,), True)
        return t

    def content_discriminator_loss(self, content_a: Tensor, content_b: Tensor) -> Tensor:
        """A's codes -> 0, B's -> 1 (the reference's backward_contentD), codes detached."""
        fake, real = self.dis_content(content_a.detach()), self.dis_content(content_b.detach())
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))

    def step_discriminators(self, loss: Tensor, opts: dict, names: tuple[str, ...]) -> None:
        """One backward of the summed losses of independent networks, then each optimiser's step
        (the same as the reference's one backward and step per network)."""
        for name in names:
            opts[name].zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if "dis_content" in names:
            self.clip_gradients(opts["dis_content"], gradient_clip_val=self.hparams.content_clip,
                                gradient_clip_algorithm="norm")
        for name in names:
            opts[name].step()

    def update_discriminators(self, t: dict[str, Tensor], opts: dict) -> dict[str, Tensor]:
        """D_A, D_A2, D_B, D_B2 and the content discriminator, on this step's (detached) outputs."""
        set_requires_grad((*self.domain_discriminators, self.dis_content), True)
        losses = {"D_A": discriminator_loss(self.dis_a, t["real_a"], t["fake_a"]),
                  "D_B": discriminator_loss(self.dis_b, t["real_b"], t["fake_b"]),
                  "D_A2": discriminator_loss(self.dis_a2, t["real_a_random"], t["fake_a_random"]),
                  "D_B2": discriminator_loss(self.dis_b2, t["real_b_random"], t["fake_b_random"])}
        if self.mode_seeking:  # the second random output is judged too (real term counted again, as the reference)
            losses["D_A2"] = losses["D_A2"] + discriminator_loss(self.dis_a2, t["real_a_random"], t["fake_a_random2"])
            losses["D_B2"] = losses["D_B2"] + discriminator_loss(self.dis_b2, t["real_b_random"], t["fake_b_random2"])
        losses["D_content"] = self.content_discriminator_loss(t["content_a"], t["content_b"])
        self.step_discriminators(sum(losses.values()), opts, ("dis_a", "dis_b", "dis_a2", "dis_b2", "dis_content"))
        return losses

    def encoder_generator_losses(self, t: dict[str, Tensor]) -> dict[str, Tensor]:
        """The reference's backward_EG terms: they train both encoders and the generator."""
        hp = self.hparams
        content_adv = [F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 0.5))
                       for logits in (self.dis_content(t["content_a"]), self.dis_content(t["content_b"]))]
        return {
            "G_adv_A": adversarial_loss(self.dis_a(t["fake_a"]), 1.0) * hp.lambda_adv,
            "G_adv_B": adversarial_loss(self.dis_b(t["fake_b"]), 1.0) * hp.lambda_adv,
            "G_content_A": content_adv[0] * hp.lambda_content_adv,
            "G_content_B": content_adv[1] * hp.lambda_content_adv,
            "cross_cycle_A": F.l1_loss(t["recon_a"], t["real_a"]) * hp.lambda_cross_cycle,
            "cross_cycle_B": F.l1_loss(t["recon_b"], t["real_b"]) * hp.lambda_cross_cycle,
            "self_recon_A": F.l1_loss(t["fake_aa"], t["real_a"]) * hp.lambda_self_recon,
            "self_recon_B": F.l1_loss(t["fake_bb"], t["real_b"]) * hp.lambda_self_recon,
            "kl_attr_A": gaussian_kl(t["mu_a"], t["logvar_a"]) * hp.lambda_kl_attr,
            "kl_attr_B": gaussian_kl(t["mu_b"], t["logvar_b"]) * hp.lambda_kl_attr,
            "kl_content_A": t["content_a"].pow(2).mean() * hp.lambda_kl_content,
            "kl_content_B": t["content_b"].pow(2).mean() * hp.lambda_kl_content,
        }

    def generator_alone_losses(self, t: dict[str, Tensor]) -> dict[str, Tensor]:
        """The reference's backward_G_alone terms: they train the generator and the content encoder."""
        hp = self.hparams
        losses = {"G2_adv_A": adversarial_loss(self.dis_a2(t["fake_a_random"]), 1.0) * hp.lambda_adv,
                  "G2_adv_B": adversarial_loss(self.dis_b2(t["fake_b_random"]), 1.0) * hp.lambda_adv,
                  "latent_A": (t["mu_random_a"] - t["z_random"]).abs().mean() * hp.lambda_latent,
                  "latent_B": (t["mu_random_b"] - t["z_random"]).abs().mean() * hp.lambda_latent}
        if self.mode_seeking:  # the second random output is also judged by D_A2 / D_B2
            for side, dis in (("a", self.dis_a2), ("b", self.dis_b2)):
                second = adversarial_loss(dis(t[f"fake_{side}_random2"]), 1.0) * hp.lambda_adv
                losses[f"G2_adv_{side.upper()}"] = losses[f"G2_adv_{side.upper()}"] + second
            losses["mode_seeking_AB"] = mode_seeking_loss(t["fake_b_random2"], t["fake_b_random"], t["z_random2"],
                                                          t["z_random"]) * hp.lambda_ms
            losses["mode_seeking_BA"] = mode_seeking_loss(t["fake_a_random2"], t["fake_a_random"], t["z_random2"],
                                                          t["z_random"]) * hp.lambda_ms
        return losses

    def update_encoders_and_generator(self, t: dict[str, Tensor], opts: dict) -> dict[str, Tensor]:
        """Two updates from one forward, as the reference's update_EG: (E_c, E_attr, G) on the
        backward_EG terms, then (E_c, G) again on the backward_G_alone terms.

        The reference back-propagates the second loss through the graph of before the first step
        (PyTorch 0.4 allowed that after an in-place parameter update; current PyTorch refuses). Both
        gradients are therefore taken first, at the weights the forward used, and the steps then
        applied in the reference's order: Adam's state sees two steps of E_c and G per iteration."""
        set_requires_grad((*self.domain_discriminators, self.dis_content), False)  # judged, not trained, here
        eg_losses, alone_losses = self.encoder_generator_losses(t), self.generator_alone_losses(t)
        eg_total, alone_total = sum(eg_losses.values()), sum(alone_losses.values())
        twice = [p for net in (self.enc_c, self.gen) for p in net.parameters()]
        for name in ("enc_c", "enc_a", "gen"):
            opts[name].zero_grad(set_to_none=True)
        self.manual_backward(eg_total, retain_graph=True)
        first = [p.grad for p in twice]
        for p in twice:
            p.grad = None
        self.manual_backward(alone_total)
        second = [p.grad for p in twice]
        for p, grad in zip(twice, first):
            p.grad = grad
        for name in ("enc_c", "enc_a", "gen"):
            opts[name].step()
        for p, grad in zip(twice, second):
            p.grad = grad
        for name in ("enc_c", "gen"):
            opts[name].step()
        return {**eg_losses, "EG_total": eg_total, **alone_losses, "G_alone_total": alone_total}

    def configure_optimizers(self):
        hp = self.hparams
        betas = (hp.beta1, hp.beta2)
        optimizers = [self.adam(getattr(self, name).parameters(),
                                hp.lr * (hp.lr_content_factor if name == "dis_content" else 1.0), betas,
                                weight_decay=hp.weight_decay) for name in OPTIMIZERS]
        factor = linear_decay(hp.n_epochs, hp.n_epochs_decay)
        return optimizers, [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in optimizers]

    # -- set-up checks and the recipe ----------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        check_latent_size(datamodule, self.hparams.nz, "model.init_args.nz", "attribute codes")
        domains = getattr(datamodule, "domains", None) if getattr(datamodule, "layout", None) is not None else None
        if domains is not None and len(domains) == 2:
            self.domain_names = tuple(domains)
        self.check_image_size(getattr(getattr(datamodule, "eval_transform", None), "crop_size", None))
        if stage == "fit":
            self.batch_split = apply_global_batch(self)
            require_even_batch(self.batch_split, "DRIT++", "halves each batch (encoded and random-attribute images)",
                               "the reference")

    def check_image_size(self, size: int | None) -> None:
        """Refuse, before training, an image side that a network cannot take."""
        if size is None:
            return
        if size % 4:
            raise ConfigError(f"data.crop_size {size} must be a multiple of 4: the content code is at 1/4 resolution "
                              "and the generator doubles it twice (the reference's 216 = 4 x 54)")
        if size < self.enc_a.size_multiple:
            raise ConfigError(f"data.crop_size {size} is too small for the attribute encoder's halvings; lower "
                              "model.init_args.attribute_encoder_args.n_blocks")
        if self.dis_a.coarsest_output_side(size) < 1:
            raise ConfigError(f"data.crop_size {size} is too small for {self.dis_a.n_scales} discriminator scales of "
                              f"{self.dis_a.n_layers} halvings; lower model.init_args.discriminator_args.n_scales or "
                              "n_layers")
        if self.dis_content.output_side(size // 4) < 1:
            raise ConfigError(f"data.crop_size {size} gives {size // 4} px content codes, too small for the content "
                              f"discriminator's {self.dis_content.n_layers} stride-2 {self.dis_content.kernel_size}x"
                              f"{self.dis_content.kernel_size} convs and its 4x4 conv (the reference's 3 x 7x7 need "
                              "~200 px); lower model.init_args.content_discriminator_args.n_layers or kernel_size")

    def on_train_start(self) -> None:
        super().on_train_start()
        hp = self.hparams
        rates = (f"E_c, E_attr, G, D_A, D_B, D_A2, D_B2 {hp.lr:g}, content D {hp.lr * hp.lr_content_factor:g} "
                 f"(Adam betas {hp.beta1:g}, {hp.beta2:g}, weight decay {hp.weight_decay:g})")
        lines = epoch_schedule_lines(self.trainer, self.batch_split, hp.n_epochs, hp.n_epochs_decay, rates)
        lines.append(f"each batch halved (encoded | random-attribute images); a full step once every {hp.d_iter} "
                     f"batches and the epoch's last two, the content discriminator alone on the others; nz {hp.nz}; "
                     + (f"mode seeking x {hp.lambda_ms:g}" if self.mode_seeking else "no mode seeking"))
        announce(self.trainer, type(self).__name__, lines, self.batch_split)

    # -- evaluation ----------------------------------------------------------------------------
    def eval_tasks(self, domains: tuple[str, ...]) -> list[str]:
        if len(domains) != 2:
            raise ConfigError(f"DRIT++ / MSGAN translate between two domains; this dataset has {len(domains)} "
                              f"({', '.join(domains)}): train one model per pair of domains")
        a, b = domains
        return [f"{a}->{b}@latent", f"{a}->{b}@reference", f"{b}->{a}@latent", f"{b}->{a}@reference"]

    def side(self, domain: str) -> str:
        """The nets' side ("a" / "b") of a dataset domain."""
        if domain not in self.domain_names:
            raise ValueError(f"this model translates between {' and '.join(self.domain_names)}, not {domain!r}")
        return "ab"[self.domain_names.index(domain)]

    @torch.no_grad()
    def translate(self, batch: dict, task: str) -> Tensor:
        """N x K x 3 x H x W: each source `x` under its K latents `z`, or the K attribute codes (mu) of `x_ref`."""
        spec = parse_task(task)
        if spec.mode not in ("latent", "reference"):
            raise ValueError(f"DRIT++ is evaluated src->dst@latent or @reference, not {task!r}")
        source, target = self.side(spec.source), self.side(spec.target)
        if source == target:
            raise ValueError(f"DRIT++ translates between its two domains, not {task!r}")
        x = batch["x"]
        content = self.enc_c(x, source)
        if spec.mode == "latent":
            codes = batch["z"].to(x)
        else:
            refs = batch["x_ref"]
            codes = self.enc_a(refs.flatten(0, 1), target)[0].view(refs.shape[0], refs.shape[1], -1)
        if codes.shape[-1] != self.hparams.nz:
            raise ValueError(f"latents of size {codes.shape[-1]} for a model with nz {self.hparams.nz}")
        return torch.stack([self.gen(content, codes[:, k], target) for k in range(codes.shape[1])], dim=1)

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> Tensor:
        """Per direction, rows of source | G(source, z) for 3 fixed random z | G(source, mu of a target image)."""
        z = torch.randn(SAMPLE_LATENTS, self.hparams.nz, generator=torch.Generator().manual_seed(0)).to(self.device)
        rows = []
        for source, target in ((0, 1), (1, 0)):
            real = inputs[self.domain_names[source]].to(self.device)
            refs = inputs[self.domain_names[target]].to(self.device)[: len(real)]
            src_side, dst_side = "ab"[source], "ab"[target]
            content = self.enc_c(real, src_side)
            randoms = [self.gen(content, z[k].expand(len(real), -1), dst_side) for k in range(SAMPLE_LATENTS)]
            count = min(len(real), len(refs))
            guided = self.gen(content[:count], self.enc_a(refs[:count], dst_side)[0], dst_side)
            rows += image_rows(real, *randoms, guided)
        return grid_of_rows(rows)
