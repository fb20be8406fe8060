"""LightningDataModules, dataset readers and tokenizers."""

from .classification import TextClassificationDataModule
from .images import ImageDataModule
from .pretraining import BertPretrainingDataModule
from .qa import QuestionAnsweringDataModule
from .scenes import DetectionDataModule, SceneGenerator, SegmentationDataModule
from .tagging import TokenClassificationDataModule
from .translation import TranslationDataModule

__all__ = ["BertPretrainingDataModule", "DetectionDataModule", "SceneGenerator", "SegmentationDataModule", "ImageDataModule", "QuestionAnsweringDataModule", "TextClassificationDataModule",
           "TokenClassificationDataModule", "TranslationDataModule"]
