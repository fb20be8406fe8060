"""LightningDataModules, dataset readers and tokenizers."""

from .images import ImageDataModule
from .pretraining import BertPretrainingDataModule

__all__ = ["BertPretrainingDataModule", "ImageDataModule"]
