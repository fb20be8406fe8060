"""One LightningModule per task, all on :class:`TaskModule`."""

from .base import TaskModule
from .bert_pretraining import BertPretraining
from .detection import ObjectDetection
from .image_classification import ImageClassification
from .question_answering import QuestionAnswering
from .segmentation import SemanticSegmentation
from .sequence_classification import SequenceClassification
from .token_classification import TokenClassification
from .translation import Translation

__all__ = ["TaskModule", "BertPretraining", "ImageClassification", "ObjectDetection", "QuestionAnswering", "SemanticSegmentation", "SequenceClassification", "TokenClassification", "Translation"]
