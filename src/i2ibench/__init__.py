"""i2ibench: a PyTorch Lightning benchmark suite for unpaired image-to-image translation."""

__version__ = "0.1.0"
