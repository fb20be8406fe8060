"""LightningDataModules, dataset readers and tokenizers."""

from .classification import TextClassificationDataModule
from .images import ImageDataModule
from .pretraining import BertPretrainingDataModule
from .qa import QuestionAnsweringDataModule
from .scenes import DetectionDataModule, SegmentationDataModule
from .tagging import TokenClassificationDataModule
from .translation import TranslationDataModule

__all__ = ["BertPretrainingDataModule", "DetectionDataModule", "ImageDataModule", "QuestionAnsweringDataModule",
           "SegmentationDataModule", "TextClassificationDataModule", "TokenClassificationDataModule",
           "TranslationDataModule"]
