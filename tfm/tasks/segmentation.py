"""SemanticSegmentation: a VisionTransformer and a per-patch decoder to full-resolution logits."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from ..errors import UserError
from ..nn.dense import ViTSegmenter, soft_dice_loss
from .dense import Batch, DenseTask
from .pictures import (
    display_images,
    log_pictures,
    log_wandb_images,
    mask_overlay,
    prediction_name,
    save_png,
    zoom,
    zoom_factor,
)


class SemanticSegmentation(DenseTask):
    """Semantic segmentation with a Vision Transformer (Segmenter / SETR style).

    Args:
        num_classes: classes, the background (class 0) counted, linked from the DataModule by the CLI.
        class_names: linked from the DataModule by the CLI.
        decoder: ``linear`` (Segmenter's linear decoder: a class per patch, upsampled bilinearly)
            or ``progressive`` (2x upsampling stages with 3x3 convs, ``decoder_channels`` each).
        image_skip: the progressive stages also see the image at their resolution (sharp edges).
        patch_logits: the progressive decoder adds Segmenter's linear per-patch logits to its own
            (the stages then refine boundaries; classes are learned sooner).
        ignore_index: mask value that is neither trained on nor scored (VOC: 255).
        label_smoothing: of the cross-entropy.
        dice_weight: adds this times the soft Dice loss (each class weighted equally, as in mIoU).
        log_images: validation images drawn with predicted vs true masks after each validation
            (W&B ``val/segmentation`` and ``<run>/media/``); 0 for none.
        save_overlays: ``predict`` also saves each image with its predicted (and true) mask.
        **kwargs: the ViT backbone and ``init_from`` (:class:`~tfm.tasks.vision.ViTTask`), optimisation settings
            of :class:`~tfm.tasks.base.TaskModule`.

    Metrics per stage: ``miou`` (mean IoU over the classes seen, accumulated over the whole
    dataset, torchmetrics ``MulticlassJaccardIndex``), ``pixel_acc`` and ``loss``.
    """

    monitor = ("val/miou", "max")

    def __init__(
        self,
        num_classes: int = 21,
        class_names: list[str] | None = None,
        decoder: Literal["linear", "progressive"] = "progressive",
        decoder_channels: list[int] | None = None,
        image_skip: bool = True,
        patch_logits: bool = True,
        ignore_index: int = 255,
        label_smoothing: float = 0.0,
        dice_weight: float = 0.0,
        log_images: int = 4,
        save_overlays: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise UserError(f"num_classes={num_classes}: segmentation needs at least two classes (background and one more)")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.label_smoothing, self.log_images, self.save_overlays = label_smoothing, log_images, save_overlays
        self.dice_weight = dice_weight
        self.net = ViTSegmenter(num_classes, self.arch, decoder, decoder_channels or [128, 64, 32], image_skip, patch_logits,
                                **self.vit)

        self._pictures: tuple[Tensor, Tensor, Tensor] | None = None

    def build_metrics(self, stage: str) -> MetricCollection:
        n, ignore = self.num_classes, self.ignore_index
        return MetricCollection({"miou": MulticlassJaccardIndex(n, average="macro", ignore_index=ignore),
                                 "pixel_acc": MulticlassAccuracy(n, average="micro", ignore_index=ignore)},
                                prefix=f"{stage}/")

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def _check_masks(self, masks: Tensor) -> None:
        bad = masks[(masks >= self.num_classes) & (masks != self.ignore_index)]
        if bad.numel():
            raise UserError(f"a mask has class id {int(bad.max())} but the model has {self.num_classes} classes "
                            f"(ids 0..{self.num_classes - 1}, {self.ignore_index} = ignore)")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        masks = batch["masks"]
        self._check_masks(masks)
        logits = self.net(batch["images"])
        loss = F.cross_entropy(logits, masks, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, masks, self.ignore_index)
        self.train_metrics.update(logits.detach().argmax(1), masks)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def _eval_step(self, batch: Batch, batch_idx: int, stage: str) -> None:
        masks = batch["masks"]
        self._check_masks(masks)
        logits = self.eval_net(batch["images"])
        loss = F.cross_entropy(logits, masks, ignore_index=self.ignore_index)
        pred = logits.argmax(1)
        metrics = self.metrics(stage)
        metrics.update(pred, masks)
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=len(masks))
        self.log_dict(metrics, prog_bar=stage == "val", sync_dist=True, batch_size=len(masks))
        if stage == "val" and batch_idx == 0 and self.log_images:
            n = self.log_images
            self._pictures = (batch["images"][:n].detach().cpu(), pred[:n].cpu(), masks[:n].cpu())

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        if self._pictures is None:
            return
        images, pred, true = self._pictures
        self._pictures = None
        f = zoom_factor(images.shape[-1])
        shown, pred, true = display_images(images, f), zoom(pred, f), zoom(true, f)
        pictures = torch.stack([torch.cat([img, mask_overlay(img, p, ignore_index=self.ignore_index),
                                           mask_overlay(img, t, ignore_index=self.ignore_index)], 2)
                                for img, p, t in zip(shown, pred, true)])
        labels = {i: name for i, name in enumerate(self.class_names)}
        masks = [{"predictions": {"mask_data": p.numpy().astype(np.uint8), "class_labels": labels},
                  "ground_truth": {"mask_data": t.numpy().astype(np.uint8), "class_labels": labels}} for p, t in zip(pred, true)]
        # W&B draws the masks over the plain image; the PNG shows image | predicted | true
        log_pictures(self, "val/segmentation", pictures)
        log_wandb_images(self, "val/segmentation_masks", shown, masks=masks)

    # --- predict -------------------------------------------------------------------------------------
    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        images = batch["images"]
        pred = self.eval_net(images).argmax(1)
        ids = self._predict_ids()
        out_dir = self._predict_dir()
        f = zoom_factor(images.shape[-1])
        shown = display_images(images, f) if self.save_overlays else None
        rows = []
        for i in range(len(images)):
            index = int(batch["index"][i])
            name = prediction_name(ids, index)
            h, w = (int(v) for v in batch["orig_size"][i])
            mask = pred[i]
            full = F.interpolate(mask[None, None].float(), size=(h, w), mode="nearest")[0, 0].to(torch.uint8)
            save_png(full, out_dir / "masks" / f"{name}.png", palette_mask=True)
            if shown is not None:
                parts = [shown[i], mask_overlay(shown[i], zoom(mask.cpu(), f), ignore_index=self.ignore_index)]
                if "masks" in batch:
                    parts.append(mask_overlay(shown[i], zoom(batch["masks"][i].cpu(), f), ignore_index=self.ignore_index))
                save_png(torch.cat(parts, 2), out_dir / "overlays" / f"{name}.png")
            counts = torch.bincount(mask.flatten().cpu(), minlength=self.num_classes)
            classes = {self.class_names[c]: round(float(counts[c]) / mask.numel(), 4) for c in torch.nonzero(counts).flatten().tolist()}
            rows.append({"mask": str(out_dir / "masks" / f"{name}.png"), "classes": classes})
        return {"rows": rows}

    def prediction_rows(self, output: dict[str, Any]) -> list[dict[str, Any]]:
        return output["rows"]
