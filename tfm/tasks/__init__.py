"""One LightningModule per task, all on :class:`TaskModule`."""

from .base import TaskModule
from .bert_pretraining import BertPretraining
from .image_classification import ImageClassification

__all__ = ["TaskModule", "BertPretraining", "ImageClassification"]
