"""SemanticSegmentation: a VisionTransformer and a per-patch decoder to full-resolution logits.

Also what the dense tasks share: backbone weights from a tfm checkpoint or timm (``init_from``),
colour palettes, overlays, and the pictures logged to W&B and saved as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from ..errors import UserError
from ..nn.dense import ViTSegmenter, soft_dice_loss
from ..nn.models import VIT_PRESETS
from ..pretrained import load_vit
from .base import TaskModule

Batch = dict[str, Any]


# --- shared by the dense tasks -------------------------------------------------------------------


def palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``(n, 3)`` uint8, class 0 black, 255 (VOC's ignore) white-ish."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def zoom_factor(size: int, min_size: int = 256) -> int:
    """How many times small images are enlarged in pictures (so labels and edges are legible)."""
    return max(1, min_size // max(size, 1))


def zoom(x: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour enlargement of the last two dimensions."""
    return x if factor == 1 else x.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def display_images(images: Tensor, factor: int = 1) -> Tensor:
    """Normalised images ``(B, C, H, W)`` -> uint8 RGB ``(B, 3, H * f, W * f)`` for pictures
    (min-max per image, enlarged ``factor`` times)."""
    x = images.detach().float().cpu()
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo + 1e-8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return zoom((x[:, :3] * 255).round().to(torch.uint8), factor)


def mask_overlay(image: Tensor, mask: Tensor, alpha: float = 0.55, ignore_index: int = 255) -> Tensor:
    """An RGB uint8 image ``(3, H, W)`` with class colours blended in where ``mask`` is not 0."""
    colors = torch.from_numpy(palette())[mask.long().clamp(0, 255)].permute(2, 0, 1).float()
    fg = ((mask != 0) & (mask != ignore_index))[None]
    out = torch.where(fg, (1 - alpha) * image.float() + alpha * colors, image.float())
    return out.round().to(torch.uint8)


def save_png(array: Tensor | np.ndarray, path: Path, palette_mask: bool = False) -> None:
    """A ``(3, H, W)`` uint8 image, or a ``(H, W)`` class mask as a palette PNG (VOC colours)."""
    from PIL import Image

    a = array.cpu().numpy() if isinstance(array, Tensor) else array
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette_mask:
        im = Image.fromarray(a.astype(np.uint8), mode="P")
        im.putpalette(palette().flatten().tolist())
    else:
        im = Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)))
    im.save(path)


def prediction_name(ids: Sequence[str] | None, index: int) -> str:
    """A file name for a predicted image: the stem of its file, else its index."""
    if ids is not None and index < len(ids):
        name = str(ids[index])
        return Path(name).stem if ("/" in name or "." in name) else name
    return str(index)


def log_wandb_images(task: TaskModule, key: str, images: Tensor, **kwargs: Any) -> None:
    """Log ``images`` ``(N, 3, H, W)`` uint8 to W&B (rank 0, not while sanity checking), with
    ``kwargs`` such as ``masks=`` / ``boxes=`` (one entry per image)."""
    trainer = task.trainer
    logger = trainer.logger
    if not trainer.is_global_zero or trainer.sanity_checking or logger is None or not hasattr(logger, "log_image"):
        return
    arrays = [p.permute(1, 2, 0).numpy() for p in images]
    logger.log_image(key=key, images=arrays, step=trainer.global_step, caption=[f"image {i}" for i in range(len(arrays))], **kwargs)


def log_pictures(task: TaskModule, key: str, pictures: Tensor) -> Path | None:
    """Save ``pictures`` ``(N, 3, H, W)`` uint8 as one PNG under ``<run>/media/`` and log them to W&B."""
    trainer = task.trainer
    if not trainer.is_global_zero or trainer.sanity_checking or not len(pictures):
        return None
    path = None
    if trainer.default_root_dir:  # the run folder (trainer.log_dir would broadcast: rank 0 only is here)
        from torchvision.utils import make_grid

        path = Path(trainer.default_root_dir) / "media" / f"{key.replace('/', '_')}_step{trainer.global_step:07d}.png"
        save_png(make_grid(pictures, nrow=1, padding=2, pad_value=255), path)
    log_wandb_images(task, key, pictures)
    return path


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


def _check_arch(arch: str) -> None:
    if arch not in VIT_PRESETS:
        raise UserError(f"arch={arch!r} is not a ViT preset: use one of {', '.join(VIT_PRESETS)}")


class SemanticSegmentation(DenseTask):
    """Semantic segmentation with a Vision Transformer (Segmenter / SETR style).

    Args:
        arch: a ViT preset; ``patch_size``, ``dim``, ``depth``, ``num_heads``, ``mlp_ratio``,
            ``stem`` override it (as :class:`~tfm.tasks.ImageClassification`).
        num_classes, image_size, in_chans, class_names: linked from the DataModule by the CLI
            (``num_classes`` counts the background, class 0).
        decoder: ``linear`` (Segmenter's linear decoder: a class per patch, upsampled bilinearly)
            or ``progressive`` (2x upsampling stages with 3x3 convs, ``decoder_channels`` each).
        image_skip: the progressive stages also see the image at their resolution (sharp edges).
        patch_logits: the progressive decoder adds Segmenter's linear per-patch logits to its own
            (the stages then refine boundaries; classes are learned sooner).
        ignore_index: mask value that is neither trained on nor scored (VOC: 255).
        label_smoothing: of the cross-entropy.
        dice_weight: adds this times the soft Dice loss (each class weighted equally, as in mIoU).
        init_from: a tfm checkpoint (e.g. an ImageClassification run) or timm ViT weights to start
            the backbone from; position embeddings are resized to ``image_size``.
        log_images: validation images drawn with predicted vs true masks after each validation
            (W&B ``val/segmentation`` and ``<run>/media/``); 0 for none.
        save_overlays: ``predict`` also saves each image with its predicted (and true) mask.
        **kwargs: optimisation settings of :class:`~tfm.tasks.base.TaskModule`.

    Metrics per stage: ``miou`` (mean IoU over the classes seen, accumulated over the whole
    dataset, torchmetrics ``MulticlassJaccardIndex``), ``pixel_acc`` and ``loss``.
    """

    monitor = ("val/miou", "max")

    def __init__(
        self,
        arch: str = "vit_tiny",
        num_classes: int = 21,
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
        stem: Literal["patch", "conv"] = "patch",
        decoder: Literal["linear", "progressive"] = "progressive",
        decoder_channels: list[int] | None = None,
        image_skip: bool = True,
        patch_logits: bool = True,
        ignore_index: int = 255,
        label_smoothing: float = 0.0,
        dice_weight: float = 0.0,
        init_from: str | None = None,
        log_images: int = 4,
        save_overlays: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_arch(arch)
        if num_classes < 2:
            raise UserError(f"num_classes={num_classes}: segmentation needs at least two classes (background and one more)")
        self.save_hyperparameters()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.label_smoothing, self.log_images, self.save_overlays = label_smoothing, log_images, save_overlays
        self.dice_weight = dice_weight
        self.net = ViTSegmenter(
            num_classes, arch, decoder, decoder_channels or [128, 64, 32], image_skip, patch_logits,
            **self._backbone_args(image_size, patch_size, in_chans, dim, depth, num_heads, mlp_ratio, drop_path_rate, dropout, stem),
        )
        if init_from:
            self.load_backbone(init_from)

        def metrics(stage: str) -> MetricCollection:
            return MetricCollection(
                {
                    "miou": MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index),
                    "pixel_acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index),
                },
                prefix=f"{stage}/",
            )

        self.train_metrics, self.val_metrics, self.test_metrics = metrics("train"), metrics("val"), metrics("test")
        self._pictures: tuple[Tensor, Tensor, Tensor] | None = None
        self.setup_ema()

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
        metrics = self.val_metrics if stage == "val" else self.test_metrics
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
