"""Methods: each a LightningModule built on `TranslationModule`. Importing registers them all."""

from i2ibench.methods import bicyclegan, cut, cyclegan, drit, instagan, lsragan, munit, paired, stargan, stargan_v2  # noqa: F401
from i2ibench.methods.base import TranslationModule

__all__ = ["TranslationModule"]
