"""Datasets, transforms and the shared I2IDataModule."""

from i2ibench.data.datamodule import I2IDataModule

__all__ = ["I2IDataModule"]
