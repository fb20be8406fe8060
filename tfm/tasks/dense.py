"""What the dense tasks (segmentation, detection) share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..nn.models import VisionTransformer
from .vision import ViTTask

Batch = dict[str, Any]


class DenseTask(ViTTask):
    """What the segmentation and detection tasks share: a ViT backbone under a dense head, the prediction folder."""

    net: nn.Module

    @property
    def backbone(self) -> VisionTransformer:
        return self.net.backbone

    def count_batch(self, batch: Batch) -> tuple[int, int]:
        return self.count_tokens(batch["images"])

    def _predict_dir(self) -> Path:
        return Path(self.trainer.default_root_dir or ".") / "predictions"

    def _predict_ids(self) -> list[str] | None:
        dm = self.trainer.datamodule
        return getattr(dm, "predict_ids", None) if dm is not None else None
