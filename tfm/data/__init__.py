"""LightningDataModules, dataset readers and tokenizers."""

from .classification import TextClassificationDataModule
from .images import ImageDataModule
from .pretraining import BertPretrainingDataModule

__all__ = ["BertPretrainingDataModule", "ImageDataModule", "TextClassificationDataModule"]
