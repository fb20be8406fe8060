"""LightningDataModules, dataset readers and tokenizers."""

from .images import ImageDataModule

__all__ = ["ImageDataModule"]
