"""ImageClassification: a VisionTransformer and a linear head on [CLS]."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from ..errors import UserError
from ..nn.models import VIT_PRESETS, create_vit
from ..pretrained import load_vit
from .base import TaskModule


class ImageClassification(TaskModule):
    """Vision Transformer image classification (Dosovitskiy et al. 2021; DeiT recipe).

    Args:
        arch: a ViT preset (``vit_tiny``, ``vit_small``, ``vit_base``, ``vit_large``); the
            fields below that are set override it.
        num_classes, image_size, in_chans, class_names: linked from the DataModule by the CLI.
        patch_size, dim, depth, num_heads, mlp_ratio: architecture overrides.
        drop_path_rate: stochastic depth of the last block (linear from 0 at the first).
        dropout: dropout on the residual branches; ``head_dropout`` before the classifier.
        global_pool: ``token`` ([CLS]) or ``avg`` (mean of patch tokens).
        stem: ``patch`` (linear patch projection, the paper's) or ``conv`` (a small convolutional
            stem with the same token grid, Xiao et al. 2021: converges much faster on small data).
        label_smoothing: of the cross-entropy targets.
        mixup, cutmix: alpha of timm Mixup / CutMix (0 for off); ``mixup_prob`` applies one per batch.
        init_from: a tfm checkpoint or timm ViT weights (``.safetensors``/``.pth``/``.bin``) to start
            from; position embeddings are resized, a classifier of another size is dropped.
        **kwargs: optimisation settings of :class:`~tfm.tasks.base.TaskModule` (``lr`` ...).
    """

    monitor = ("val/acc1", "max")

    def __init__(
        self,
        arch: str = "vit_tiny",
        num_classes: int = 1000,
        image_size: int = 224,
        in_chans: int = 3,
        class_names: list[str] | None = None,
        patch_size: int = 16,
        dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
        drop_path_rate: float = 0.1,
        dropout: float = 0.0,
        head_dropout: float = 0.0,
        global_pool: Literal["token", "avg"] = "token",
        stem: Literal["patch", "conv"] = "patch",
        label_smoothing: float = 0.1,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        init_from: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if arch not in VIT_PRESETS:
            raise UserError(f"arch={arch!r} is not a ViT preset: use one of {', '.join(VIT_PRESETS)}")
        self.save_hyperparameters()
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.net = create_vit(
            arch,
            image_size=image_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=num_classes,
            dim=dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            dropout=dropout,
            head_dropout=head_dropout,
            global_pool=global_pool,
            stem=stem,
        )
        if init_from:
            self.load_backbone(init_from)
        self.label_smoothing = label_smoothing
        self.mixup_fn = None
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixup_fn = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob, label_smoothing=label_smoothing, num_classes=num_classes)

    def build_metrics(self, stage: str) -> MetricCollection:
        n = self.hparams.num_classes
        return MetricCollection({"acc1": MulticlassAccuracy(n, top_k=1, average="micro"),
                                 "acc5": MulticlassAccuracy(n, top_k=min(5, n), average="micro")}, prefix=f"{stage}/")

    def load_backbone(self, path: str) -> None:
        load_vit(self.net, path)

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
        """(samples, tokens) of a batch, for throughput: every image is 1 + patches tokens."""
        n = len(batch[1])
        h, w = batch[0].shape[-2:]
        pe = self.net.patch_embed
        return n, n * ((h // pe.patch_size[0]) * (w // pe.patch_size[1]) + pe.num_prefix_tokens)

    def example_images(self, batch: Any) -> Tensor:
        """Images of a batch, for the attention-map callback."""
        return batch[0]
