"""CUT and FastCUT (Park, Efros, Zhang, Zhu, "Contrastive Learning for Unpaired Image-to-Image
Translation", ECCV 2020).

One-sided: one generator A->B, one discriminator, and a patch-sampling MLP head for PatchNCE,
a contrastive loss that makes each patch of the translation resemble the source patch at the same
position more than the other source patches. FastCUT is configuration: no identity NCE, a larger
NCE weight, flip-equivariance augmentation and a shorter schedule.
Reference implementation: taesungp/contrastive-unpaired-translation, models/cut_model.py.

The head is built with the module (see `i2ibench.nets.cut.PatchSampleHead`), so DDP registers
and synchronises its parameters from the first step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from i2ibench.errors import ConfigError
from i2ibench.losses import discriminator_adversarial_loss, generator_adversarial_loss
from i2ibench.methods.base import TranslationModule, grid_of_rows, image_rows, set_requires_grad
from i2ibench.methods.recipe import BatchSplit, announce, apply_global_batch, epoch_schedule_lines
from i2ibench.methods.schedules import linear_decay
from i2ibench.nets.cut import (
    AntialiasedPatchDiscriminator, CUTGenerator, PatchSampleHead, draw_patch_ids, patch_nce_loss,
)
from i2ibench.registry import register_method


@register_method("fastcut", description="FastCUT (Park et al. 2020): CUT without identity NCE, NCE weight 10, "
                                        "flip equivariance, 150 + 50 epochs")
@register_method("cut", description="CUT (Park et al. 2020): one-sided, PatchNCE on 5 encoder layers with an "
                                    "MLP head, identity NCE, anti-aliased ResNet G, 70x70 PatchGAN, LSGAN")
class CUT(TranslationModule):
    """Contrastive unpaired translation, A -> B only.

    Args (defaults are CUT's; `configs/methods/cut.yaml` and `fastcut.yaml` cite each):
        generator_args: `CUTGenerator` keyword arguments (ngf, n_blocks, norm, dropout,
            no_antialias, no_antialias_up, init_gain).
        discriminator_args: `AntialiasedPatchDiscriminator` keyword arguments (ndf, n_layers,
            norm, no_antialias, init_gain).
        gan_mode: lsgan, vanilla or hinge.
        lambda_GAN: weight of the adversarial term.
        lambda_NCE: weight of PatchNCE (0 turns it off; the head then never trains).
        nce_idt: also apply PatchNCE to G(B) against B, averaged with the A term (CUT: on).
        nce_layers: generator layer ids whose outputs PatchNCE compares.
        nce_T: temperature of the contrastive logits.
        num_patches: patch positions sampled per layer (the same for source and translation).
        head_channels: width of the MLP head (`--netF_nc`).
        nce_includes_all_negatives_from_minibatch: negatives from every image of the batch, not
            only the query's own image (off for CUT and FastCUT).
        flip_equivariance: with probability 1/2, translate the horizontally flipped input and flip
            its features back before PatchNCE (FastCUT).
        lr, beta1, beta2: Adam, the same for G, D and the head.
        n_epochs, n_epochs_decay: epochs at constant lr, then epochs of linear decay to zero.
    """

    def __init__(self, generator_args: dict[str, Any] | None = None,
                 discriminator_args: dict[str, Any] | None = None, gan_mode: str = "lsgan",
                 lambda_GAN: float = 1.0, lambda_NCE: float = 1.0, nce_idt: bool = True,
                 nce_layers: list[int] | None = None, nce_T: float = 0.07, num_patches: int = 256,
                 head_channels: int = 256, nce_includes_all_negatives_from_minibatch: bool = False,
                 flip_equivariance: bool = False, lr: float = 2e-4, beta1: float = 0.5, beta2: float = 0.999,
                 n_epochs: int = 200, n_epochs_decay: int = 200) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.nce_layers = list(nce_layers if nce_layers is not None else [0, 4, 8, 12, 16])
        if num_patches < 1:
            raise ConfigError(f"model.init_args.num_patches must be at least 1, got {num_patches}")
        if not self.nce_layers:
            raise ConfigError("model.init_args.nce_layers is empty; give the generator layers PatchNCE compares "
                              "(CUT: [0, 4, 8, 12, 16])")
        self.gen = CUTGenerator(**(generator_args or {}))
        try:
            channels = self.gen.feature_channels(self.nce_layers)
        except ValueError as error:
            raise ConfigError(f"model.init_args.nce_layers {self.nce_layers}: {error}; choose existing layers "
                              "or more residual blocks (generator_args.n_blocks)") from None
        self.disc = AntialiasedPatchDiscriminator(**(discriminator_args or {}))
        self.head = PatchSampleHead(channels, head_channels)
        self.batch_split: BatchSplit | None = None  # set in setup("fit") from data.batch_size and the process count
        # Patch positions and FastCUT's flips come from their own RNG, seeded from the run's seed at
        # fit start: every process draws the same ones (one draw per step for the whole global batch,
        # as the reference draws one per batch), whatever else consumed the global RNG, and a
        # resumed run continues the sequence (its state is in the checkpoint).
        self.sampling = torch.Generator()

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        hp = self.hparams
        opt_g, opt_d, opt_head = self.optimizers()
        real_A, real_B = batch["A"], batch["B"]
        count = real_A.shape[0]
        # One generator pass for the translation and (CUT) the identity of B, as the reference does.
        real = torch.cat([real_A, real_B]) if hp.nce_idt else real_A
        flipped = bool(hp.flip_equivariance and torch.rand((), generator=self.sampling) < 0.5)
        if flipped:
            real = real.flip(3)
        fake = self.gen(real)
        fake_B = fake[:count]
        idt_B = fake[count:] if hp.nce_idt else None

        # The discriminator first (the reference's order), on real B and the detached translation.
        set_requires_grad((self.disc,), True)
        d_loss = discriminator_adversarial_loss(self.disc(real_B), self.disc(fake_B.detach()), hp.gan_mode)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()

        # Then the generator and the head together, judged by the updated, frozen discriminator.
        set_requires_grad((self.disc,), False)
        losses = {"gen_adv": generator_adversarial_loss(self.disc(fake_B), hp.gan_mode) * hp.lambda_GAN}
        nce_terms = []
        if hp.lambda_NCE > 0:
            losses["gen_nce"] = self.nce_loss(real_A, fake_B, flipped)
            nce_terms.append(losses["gen_nce"])
            if hp.nce_idt:
                losses["gen_nce_idt"] = self.nce_loss(real_B, idt_B, flipped)
                nce_terms.append(losses["gen_nce_idt"])
        g_total = losses["gen_adv"] + (torch.stack(nce_terms).mean() if nce_terms else 0.0)
        opt_g.zero_grad(set_to_none=True)
        opt_head.zero_grad(set_to_none=True)
        self.manual_backward(g_total)
        opt_g.step()
        opt_head.step()

        self.log_losses({**losses, "gen_total": g_total, "disc": d_loss}, batch_size=count)

    def nce_loss(self, source: Tensor, translated: Tensor, flipped: bool = False) -> Tensor:
        """lambda_NCE x PatchNCE between `source` and its translation, averaged over patches and layers.

        `flipped`: `translated` came from the flipped source; its features are flipped back first.
        The source's features are keys only (no gradient reaches them in the loss), so they are
        computed without a graph: the same values and gradients as the reference, less memory.
        """
        hp = self.hparams
        queries = self.gen.encode(translated, self.nce_layers)
        if flipped:
            queries = [q.flip(3) for q in queries]
        with torch.no_grad():
            keys = self.gen.encode(source, self.nce_layers)
            patch_ids = draw_patch_ids(keys, hp.num_patches, self.sampling)
            projected_keys = self.head(keys, patch_ids)
        projected_queries = self.head(queries, patch_ids)
        per_layer = [patch_nce_loss(q, k, source.shape[0], hp.nce_T, hp.nce_includes_all_negatives_from_minibatch)
                     .mean() for q, k in zip(projected_queries, projected_keys)]
        return torch.stack(per_layer).mean() * hp.lambda_NCE

    def configure_optimizers(self):
        hp = self.hparams
        betas = (hp.beta1, hp.beta2)
        optimizers = [self.adam(net.parameters(), hp.lr, betas) for net in (self.gen, self.disc, self.head)]
        factor = linear_decay(hp.n_epochs, hp.n_epochs_decay)
        return optimizers, [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in optimizers]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # data.batch_size is the global batch; the paper's batch 1 runs as 1 per process under DDP.
        if stage == "fit":
            self.batch_split = apply_global_batch(self, per_sample_recipe=True)
            # Before a checkpoint is restored (which then sets the saved state): seed_everything's seed.
            self.sampling.manual_seed(torch.initial_seed())

    def on_train_start(self) -> None:
        super().on_train_start()
        hp = self.hparams
        rates = f"G, D and head {hp.lr:g} (Adam betas {hp.beta1:g}, {hp.beta2:g})"
        lines = epoch_schedule_lines(self.trainer, self.batch_split, hp.n_epochs, hp.n_epochs_decay, rates)
        lines.append(f"PatchNCE: weight {hp.lambda_NCE:g}, layers {self.nce_layers}, {hp.num_patches} patches per "
                     f"layer, temperature {hp.nce_T:g}, identity NCE {'on' if hp.nce_idt else 'off'}, "
                     f"flip equivariance {'on' if hp.flip_equivariance else 'off'}")
        announce(self.trainer, type(self).__name__, lines, self.batch_split)

    # -- checkpoint extras ---------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"sampling": self.sampling.get_state()}

    def load_extra_state(self, state: dict) -> None:
        self.sampling.set_state(state["sampling"])

    # -- evaluation ----------------------------------------------------------------------------
    def eval_tasks(self, domains: tuple[str, ...]) -> list[str]:
        return ["A2B"]  # one-sided: there is no B -> A generator

    def translate(self, batch: dict, task: str) -> Tensor:
        if task == "A2B":
            return self.gen(batch["A"])
        raise ValueError(f"CUT translates A2B only (it is one-sided), not {task!r}")

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> Tensor:
        """Rows of A | G(A), then B | G(B) (the identity PatchNCE keeps G(B) close to B)."""
        rows = []
        for domain in ("A", "B"):
            real = inputs[domain].to(self.device)
            rows += image_rows(real, self.gen(real))
        return grid_of_rows(rows, per_line=min(4, len(rows)))
