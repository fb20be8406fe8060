"""One LightningModule per task, all on :class:`TaskModule`."""

from .base import TaskModule
from .image_classification import ImageClassification

__all__ = ["TaskModule", "ImageClassification"]
