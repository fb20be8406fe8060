"""What the dense tasks (segmentation, detection) share: the ViT backbone and its ``init_from``, counting, the
prediction folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UserError
from ..nn.models import VIT_PRESETS
from ..pretrained import load_vit
from .base import TaskModule

Batch = dict[str, Any]


class DenseTask(TaskModule):
    """What the segmentation and detection tasks share: the ViT settings, ``init_from``, counting."""

    net: nn.Module

    def _backbone_args(self, image_size: int, patch_size: int, in_chans: int, dim: int | None, depth: int | None, num_heads: int | None,
                       mlp_ratio: float | None, drop_path_rate: float, dropout: float, stem: str) -> dict[str, Any]:
        return dict(image_size=image_size, patch_size=patch_size, in_chans=in_chans, dim=dim, depth=depth, num_heads=num_heads,
                    mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, dropout=dropout, stem=stem)

    def load_backbone(self, path: str) -> None:
        load_vit(self.net.backbone, path)

    def count_batch(self, batch: Batch) -> tuple[int, int]:
        """(images, tokens) of a batch, for throughput."""
        images = batch["images"]
        pe = self.net.backbone.patch_embed
        n = len(images)
        h, w = images.shape[-2:]
        return n, n * ((h // pe.patch_size[0]) * (w // pe.patch_size[1]) + pe.num_prefix_tokens)

    def _predict_dir(self) -> Path:
        return Path(self.trainer.default_root_dir or ".") / "predictions"

    def _predict_ids(self) -> list[str] | None:
        dm = self.trainer.datamodule
        return getattr(dm, "predict_ids", None) if dm is not None else None


def check_arch(arch: str) -> None:
    if arch not in VIT_PRESETS:
        raise UserError(f"arch={arch!r} is not a ViT preset: use one of {', '.join(VIT_PRESETS)}")
