"""ImageClassification: a VisionTransformer and a linear head on [CLS]."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from ..nn.models import create_vit
from .vision import ViTTask


class ImageClassification(ViTTask):
    """Vision Transformer image classification (Dosovitskiy et al. 2021; DeiT recipe).

    Args:
        num_classes: linked from the DataModule by the CLI.
        class_names: linked from the DataModule by the CLI.
        head_dropout: dropout before the classifier.
        global_pool: ``token`` ([CLS]) or ``avg`` (mean of patch tokens).
        label_smoothing: of the cross-entropy targets.
        mixup: alpha of timm's Mixup (0: off).
        cutmix: alpha of timm's CutMix (0: off).
        mixup_prob: the chance that Mixup or CutMix applies to a batch.
        **kwargs: the ViT backbone and ``init_from`` (:class:`~tfm.tasks.vision.ViTTask`), optimisation settings
            of :class:`~tfm.tasks.base.TaskModule` (``lr`` ...).
    """

    monitor = ("val/acc1", "max")

    def __init__(
        self,
        num_classes: int = 1000,
        class_names: list[str] | None = None,
        head_dropout: float = 0.0,
        global_pool: Literal["token", "avg"] = "token",
        label_smoothing: float = 0.1,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.net = create_vit(self.arch, num_classes=num_classes, head_dropout=head_dropout, global_pool=global_pool,
                              **self.vit)
        self.label_smoothing = label_smoothing
        self.mixup_fn = None
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup  # timm is slow to import: only with mixup or cutmix

            self.mixup_fn = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob, label_smoothing=label_smoothing, num_classes=num_classes)

    def build_metrics(self, stage: str) -> MetricCollection:
        n = self.hparams.num_classes
        return MetricCollection({"acc1": MulticlassAccuracy(n, top_k=1, average="micro"),
                                 "acc5": MulticlassAccuracy(n, top_k=min(5, n), average="micro")}, prefix=f"{stage}/")

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        if self.mixup_fn is not None and len(labels) % 2 == 0:
            mixed, soft = self.mixup_fn(images, labels)
            logits = self.net(mixed)
            loss = torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1).mean()
        else:
            logits = self.net(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.train_metrics.update(logits.detach(), labels)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        images, labels = batch
        logits = self.eval_net(images)
        loss = F.cross_entropy(logits, labels)
        metrics = self.metrics(stage)
        metrics.update(logits, labels)
        self.log(f"{stage}/loss", loss, sync_dist=True)
        self.log_dict(metrics, prog_bar=stage == "val", sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        probs = self.eval_net(batch[0]).softmax(-1)
        conf, pred = probs.max(-1)
        return {"pred": pred, "confidence": conf, "label": batch[1]}

    def prediction_rows(self, output: dict[str, Tensor]) -> list[dict[str, Any]]:
        """One row per image for the prediction file."""
        return [
            {"pred": int(p), "class": self.class_names[int(p)], "confidence": round(float(c), 6), "label": int(lab)}
            for p, c, lab in zip(output["pred"], output["confidence"], output["label"])
        ]

    def count_batch(self, batch: tuple[Tensor, Tensor]) -> tuple[int, int]:
        return self.count_tokens(batch[0])

    def example_images(self, batch: Any) -> Tensor:
        """Images of a batch, for the attention-map callback."""
        return batch[0]
