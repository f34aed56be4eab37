"""The image history buffer of Shrivastava et al. 2017, as CycleGAN uses it to feed its discriminators."""

from __future__ import annotations

import torch
from torch import Tensor


class ImagePool:
    """Holds up to `size` past generated images; returns a mix of new and stored ones.

    Until the pool is full every image is stored and returned as is; after that, each image has a
    50% chance to be swapped with a random stored one (junyanz/pytorch-CycleGAN-and-pix2pix,
    util/image_pool.py). Its own seeded generator and its contents are part of the checkpoint, so
    a resumed run draws exactly what an uninterrupted one would. Plain attributes, not module
    buffers: DDP must not broadcast them.
    """

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        self.size = size
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: Tensor) -> Tensor:
        """Images for the discriminator, always detached from the generator's graph (also at size 0:
        the reference detaches them in the discriminator step instead, `netD(fake.detach())`)."""
        images = images.detach()
        if self.size == 0:
            return images
        if self.images and self.images[0].device != images.device:  # restored from a checkpoint on CPU
            self.images = [img.to(images.device) for img in self.images]
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator) > 0.5:
                slot = int(torch.randint(0, self.size, (1,), generator=self.generator))
                out.append(self.images[slot].clone())
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {"images": [img.cpu() for img in self.images], "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.images = list(state["images"])
        self.generator.set_state(state["generator"])
