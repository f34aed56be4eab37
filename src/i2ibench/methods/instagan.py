"""Mask-guided translation: InstaGAN (Mo, Cho, Shin, ICLR 2019) and the mask-guided CycleGAN.

InstaGAN, reference sangwoomo/instagan `models/insta_gan_model.py`: images and their instance
masks are translated together by set generators; the instances go through in sequential
mini-batches of `ins_per` (2) at a time, each pass taking the previous pass's translated image,
with one generator and one discriminator update per pass. Losses: LSGAN on the image with all its
mask slots, cycle on image and masks (10), identity (lambda_idt x 10), context preservation: L1
between input and translation outside the union of the pass's input and output masks (lambda_ctx
x 10). Masks enter the networks in [-1, 1] with empty slots at -1, as in the reference.

Deliberate differences: a pass skips only the samples without instances in its slots (the
reference skips a pass for the whole batch, which only agrees at its batch size of 1); under
DDP all processes run as many passes as the busiest needs (see `agreed_passes`).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from i2ibench.losses import discriminator_adversarial_loss, generator_adversarial_loss
from i2ibench.methods.base import TranslationModule, grid_of_rows, image_rows, set_requires_grad
from i2ibench.methods.cyclegan import CycleGAN
from i2ibench.methods.image_pool import ImagePool
from i2ibench.methods.recipe import BatchSplit, announce, apply_global_batch, epoch_schedule_lines
from i2ibench.methods.schedules import linear_decay
from i2ibench.nets.instagan import InstaGANDiscriminator, InstaGANGenerator
from i2ibench.registry import register_method


def to_signed(masks: Tensor) -> Tensor:
    """{0, 1} masks (the batch contract) -> [-1, 1] (the InstaGAN networks'); empty slots become -1."""
    return masks * 2 - 1


def union(signed_masks: Tensor) -> Tensor:
    """Union of [-1, 1] masks as a {0, 1} map N x 1 x H x W (the reference's merge_masks, rescaled)."""
    return ((signed_masks + 1) / 2).sum(dim=1, keepdim=True).clamp(0, 1)


def context_loss(source: Tensor, translated: Tensor, source_masks: Tensor, translated_masks: Tensor) -> Tensor:
    """L1 between input and translation, weighted 1 outside the union of both mask sets, 0 inside."""
    weight = 1 - union(torch.cat([source_masks, translated_masks], dim=1))
    return (weight * (source - translated).abs()).mean()


@register_method("instagan", description="InstaGAN (Mo et al. 2019): image + instance masks in and out, set "
                                         "encoders, context-preserving loss, sequential mini-batches",
                 dataset_mode="mask")
class InstaGAN(TranslationModule):
    """Args (defaults from the reference's options; `configs/methods/instagan.yaml` cites each):
        ngf, ndf, n_blocks, n_layers, norm: network sizes (64, 64, 9, 3, instance).
        gan_mode: lsgan. lambda_A, lambda_B: cycle weights (10). lambda_idt, lambda_ctx: identity and
            context weights as fractions of the cycle weight (1.0 each).
        ins_per: instances per pass (2); the batch's mask slots / ins_per passes per batch.
        pool_size, lr, beta1, beta2, n_epochs, n_epochs_decay: as CycleGAN.
    """

    dataset_mode = "mask"

    def __init__(self, ngf: int = 64, ndf: int = 64, n_blocks: int = 9, n_layers: int = 3, norm: str = "instance",
                 gan_mode: str = "lsgan", lambda_A: float = 10.0, lambda_B: float = 10.0, lambda_idt: float = 1.0,
                 lambda_ctx: float = 1.0, ins_per: int = 2, pool_size: int = 50, lr: float = 2e-4,
                 beta1: float = 0.5, beta2: float = 0.999, n_epochs: int = 100, n_epochs_decay: int = 100) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.gen_AB = InstaGANGenerator(3, ngf, n_blocks, norm)
        self.gen_BA = InstaGANGenerator(3, ngf, n_blocks, norm)
        self.disc_A = InstaGANDiscriminator(3, ndf, n_layers, norm)  # judges domain-A image + mask stacks
        self.disc_B = InstaGANDiscriminator(3, ndf, n_layers, norm)
        self.pool_A, self.pool_B = ImagePool(pool_size, seed=1), ImagePool(pool_size, seed=2)
        self.batch_split: BatchSplit | None = None  # set in setup("fit") from data.batch_size and the process count

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # data.batch_size is the global batch; the reference's batch 1 runs as 1 per process under DDP.
        if stage == "fit":
            self.batch_split = apply_global_batch(self, per_sample_recipe=True)

    def on_train_start(self) -> None:
        super().on_train_start()
        hp = self.hparams
        rates = (f"G and D {hp.lr:g} (Adam betas {hp.beta1:g}, {hp.beta2:g}), one update of each per pass of "
                 f"{hp.ins_per} instances")
        announce(self.trainer, "InstaGAN",
                 epoch_schedule_lines(self.trainer, self.batch_split, hp.n_epochs, hp.n_epochs_decay, rates),
                 self.batch_split)

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        hp = self.hparams
        state = {d: {"image": batch[d], "masks": to_signed(batch[f"{d}_masks"])} for d in "AB"}
        for d in "AB":  # the translated masks of every slot, filled pass by pass (empty until then)
            state[d]["fake_masks"] = -torch.ones_like(state[d]["masks"])
        for first in range(0, self.agreed_passes(batch) * hp.ins_per, hp.ins_per):
            passes = {d: self.pass_inputs(state[d], first) for d in "AB"}
            set_requires_grad((self.disc_A, self.disc_B), False)
            g_losses, outputs = {}, {}
            for source, target in (("A", "B"), ("B", "A")):
                if passes[source] is not None:
                    losses, outputs[source] = self.generator_pass(source, target, state[source], passes[source], first)
                    g_losses.update(losses)
            if not g_losses:  # only under DDP: no instances left here, but the other processes step
                g_losses["idle"] = self.zero_loss(self.gen_AB, self.gen_BA)
            g_total = torch.stack(list(g_losses.values())).sum()
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_total)
            opt_g.step()

            set_requires_grad((self.disc_A, self.disc_B), True)
            d_losses = {}
            for source, target in (("A", "B"), ("B", "A")):
                if source in outputs:
                    disc, pool = (self.disc_B, self.pool_B) if target == "B" else (self.disc_A, self.pool_A)
                    fake = pool.query(outputs[source]["stack"])
                    d_losses[f"disc_{target}"] = discriminator_adversarial_loss(
                        disc(batch[target], to_signed(batch[f"{target}_masks"])),
                        disc(fake[:, :3], fake[:, 3:]), hp.gan_mode)
            if not d_losses:
                d_losses["idle"] = self.zero_loss(self.disc_A, self.disc_B)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(torch.stack(list(d_losses.values())).sum())
            opt_d.step()

            for source, out in outputs.items():  # the next pass starts from this pass's translation
                rows = passes[source]["rows"]
                previous = state[source]["image"]  # float32; the translation is bf16 under autocast
                state[source]["image"] = previous.index_copy(0, rows, out["image"].detach().to(previous.dtype))
                state[source]["fake_masks"][rows, first:first + hp.ins_per] = out["masks"].detach()
            logged = {**{f"gen_{k}": v for k, v in g_losses.items()}, "gen_total": g_total, **d_losses}
            self.log_losses({k: v for k, v in logged.items() if "idle" not in k}, batch_size=batch["A"].shape[0])

    def agreed_passes(self, batch: dict) -> int:
        """Sequential passes this batch needs: enough for its most numerous instance set.

        Under DDP every process must make the same backward calls, so they agree on the largest
        count; a process with nothing left in a pass then contributes zero gradients (`zero_loss`).
        """
        counts = torch.stack([batch["A_count"].max(), batch["B_count"].max()]).max()
        passes = torch.div(counts + self.hparams.ins_per - 1, self.hparams.ins_per, rounding_mode="floor")
        if self.trainer.world_size > 1:
            passes = self.trainer.strategy.reduce(passes.to(self.device).float(), reduce_op="max")
        return int(passes)

    @staticmethod
    def zero_loss(*nets: torch.nn.Module) -> Tensor:
        """A loss of 0 that reaches every parameter: zero gradients for DDP's all-reduce."""
        return sum(p.sum() for net in nets for p in net.parameters() if p.requires_grad) * 0.0

    def pass_inputs(self, state: dict, first: int) -> dict | None:
        """The samples with instances in slots [first, first + ins_per), with their image and those masks."""
        masks = state["masks"][:, first:first + self.hparams.ins_per]
        rows = ((masks + 1).flatten(1).sum(1) > 0).nonzero().flatten()
        if len(rows) == 0:
            return None
        return {"rows": rows, "image": state["image"][rows], "masks": masks[rows]}

    def generator_pass(self, source: str, target: str, state: dict, inputs: dict, first: int):
        """One direction of one pass: the weighted generator terms, and the outputs for D and the next pass."""
        hp = self.hparams
        forward, backward = (self.gen_AB, self.gen_BA) if source == "A" else (self.gen_BA, self.gen_AB)
        disc = self.disc_B if target == "B" else self.disc_A
        weight = hp.lambda_A if source == "A" else hp.lambda_B
        image, masks = inputs["image"], inputs["masks"]
        fake_image, fake_masks = forward(image, masks)
        rec_image, rec_masks = backward(fake_image, fake_masks)
        # D sees the image with every slot: earlier passes' translated masks, these, and empty ones after.
        all_masks = state["fake_masks"][inputs["rows"]].clone()
        all_masks[:, first:first + hp.ins_per] = fake_masks
        idt_image, idt_masks = backward(image, masks)
        real_stack, rec_stack = torch.cat([image, masks], 1), torch.cat([rec_image, rec_masks], 1)
        losses = {
            f"adv_{source}2{target}": generator_adversarial_loss(disc(fake_image, all_masks), hp.gan_mode),
            f"cycle_{source}": F.l1_loss(rec_stack, real_stack) * weight,
            f"idt_{target}2{source}": F.l1_loss(torch.cat([idt_image, idt_masks], 1), real_stack) * weight * hp.lambda_idt,
            f"ctx_{source}": context_loss(image, fake_image, masks, fake_masks) * weight * hp.lambda_ctx,
        }
        return losses, {"image": fake_image, "masks": fake_masks, "stack": torch.cat([fake_image, all_masks], 1)}

    def configure_optimizers(self):
        hp = self.hparams
        betas = (hp.beta1, hp.beta2)
        opt_g = self.adam(itertools.chain(self.gen_AB.parameters(), self.gen_BA.parameters()), hp.lr, betas)
        opt_d = self.adam(itertools.chain(self.disc_A.parameters(), self.disc_B.parameters()), hp.lr, betas)
        factor = linear_decay(hp.n_epochs, hp.n_epochs_decay)
        return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_g, opt_d)]

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def translate_with_masks(self, image: Tensor, masks01: Tensor, direction: str) -> tuple[Tensor, Tensor]:
        """Sequential passes over all mask slots (as the reference's test()); the image and translated masks."""
        generator = self.gen_AB if direction == "AB" else self.gen_BA
        state = {"image": image, "masks": to_signed(masks01)}
        translated = -torch.ones_like(state["masks"])
        for first in range(0, masks01.shape[1], self.hparams.ins_per):
            inputs = self.pass_inputs(state, first)
            if inputs is None:
                continue
            fake_image, fake_masks = generator(inputs["image"], inputs["masks"])
            state["image"] = state["image"].index_copy(0, inputs["rows"], fake_image.to(state["image"].dtype))
            translated[inputs["rows"], first:first + self.hparams.ins_per] = fake_masks
        return state["image"], (translated + 1) / 2

    def translate(self, batch: dict, task: str) -> Tensor:
        source = task[0]
        return self.translate_with_masks(batch[source], batch[f"{source}_masks"], f"{source}{task[2]}")[0]

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> Tensor:
        """Input | translation, for the first images of each domain (masks from the datamodule)."""
        rows = []
        for domain, target in (("A", "B"), ("B", "A")):
            images, masks = inputs[domain].to(self.device), inputs[f"{domain}_masks"].to(self.device)
            fake = self.translate_with_masks(images, masks, f"{domain}{target}")[0]
            overlay = images * (1 - 0.5 * masks.amax(1, keepdim=True))  # the instances, darkened
            rows += image_rows(overlay, fake)
        return grid_of_rows(rows, per_line=min(4, len(rows)))

    def extra_state(self) -> dict:
        return {"pool_A": self.pool_A.state_dict(), "pool_B": self.pool_B.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.pool_A.load_state_dict(state["pool_A"])
        self.pool_B.load_state_dict(state["pool_B"])


@register_method("mask-cyclegan", description="Mask-guided CycleGAN (Wang & Zhang 2023): union mask in, "
                                              "translation composited inside it, background L1, spectral-norm D",
                 dataset_mode="mask")
class MaskCycleGAN(CycleGAN):
    """CycleGAN whose generators see the image and the union of its instance masks (4 channels), and
    whose output replaces the image only inside that union (pixels outside come from the input).

    The background term is an L1 loss between the generator's raw output and its input outside the
    mask, weighted `lambda_background`: the composite alone would keep the background, this makes
    the generator agree with it (no seams at the mask border). The discriminators use spectral
    norm (`discriminator_args.spectral_norm`). Other arguments are CycleGAN's.
    """

    dataset_mode = "mask"

    def __init__(self, *args, lambda_background: float = 10.0, **kwargs) -> None:
        kwargs["generator_args"] = {**(kwargs.get("generator_args") or {}), "in_channels": 4}
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()

    def map(self, direction: str, x: Tensor, mask: Tensor | None = None) -> Tensor:
        raw = (self.gen_AB if direction == "AB" else self.gen_BA)(torch.cat([x, mask * 2 - 1], dim=1))
        return mask * raw + (1 - mask) * x

    def forward_cycle(self, batch: dict) -> dict[str, Tensor]:
        real_A, real_B = batch["A"], batch["B"]
        mask_A, mask_B = batch["A_masks"].amax(1, keepdim=True), batch["B_masks"].amax(1, keepdim=True)
        raw_B = self.gen_AB(torch.cat([real_A, mask_A * 2 - 1], dim=1))
        raw_A = self.gen_BA(torch.cat([real_B, mask_B * 2 - 1], dim=1))
        fake_B, fake_A = mask_A * raw_B + (1 - mask_A) * real_A, mask_B * raw_A + (1 - mask_B) * real_B
        return {"real_A": real_A, "real_B": real_B, "fake_A": fake_A, "fake_B": fake_B, "raw_A": raw_A,
                "raw_B": raw_B, "mask_A": mask_A, "mask_B": mask_B,
                "rec_A": self.map("BA", fake_B, mask_A), "rec_B": self.map("AB", fake_A, mask_B)}

    def generator_losses(self, t: dict[str, Tensor]) -> dict[str, Tensor]:
        losses = super().generator_losses(t)
        weight = self.hparams.lambda_background
        losses["background_A2B"] = ((1 - t["mask_A"]) * (t["raw_B"] - t["real_A"]).abs()).mean() * weight
        losses["background_B2A"] = ((1 - t["mask_B"]) * (t["raw_A"] - t["real_B"]).abs()).mean() * weight
        return losses

    def translate(self, batch: dict, task: str) -> Tensor:
        source = task[0]
        return self.map(f"{source}{task[2]}", batch[source], batch[f"{source}_masks"].amax(1, keepdim=True))

    sample_grid = InstaGAN.sample_grid

    def translate_with_masks(self, image: Tensor, masks01: Tensor, direction: str) -> tuple[Tensor, Tensor]:
        union_mask = masks01.amax(1, keepdim=True)
        return self.map(direction, image, union_mask), union_mask
