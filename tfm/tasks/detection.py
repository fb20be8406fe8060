"""ObjectDetection: a VisionTransformer, a simple feature pyramid (ViTDet) and an anchor-free
dense head (CenterNet heatmap + TTFNet box regression), scored with COCO mAP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision
from torchvision.utils import draw_bounding_boxes

from ..checkpointing import write_atomic
from ..errors import UserError
from ..nn.dense import ViTDetector, center_loss, center_targets, decode_centers, single_thread
from .dense import Batch, DenseTask
from .pictures import display_images, log_pictures, log_wandb_images, prediction_name, save_png, zoom_factor


def mean_average_precision(backend: str = "pycocotools") -> MeanAveragePrecision:
    """COCO box mAP (IoU 0.50:0.95), mAP@0.5 and mAP@0.75, per class off (fast)."""
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=backend)


def draw_detections(image: Tensor, boxes: Tensor, labels: Tensor, names: list[str], scores: Tensor | None = None, color: str = "red") -> Tensor:
    """``image`` (3, H, W) uint8 with boxes and their class names (and scores) drawn."""
    if not len(boxes):
        return image
    text = [names[int(c)] if scores is None else f"{names[int(c)]} {float(s):.2f}" for c, s in
            zip(labels, scores if scores is not None else labels)]
    return draw_bounding_boxes(image, boxes.cpu().float(), labels=text, colors=color, width=1)


class ObjectDetection(DenseTask):
    """Object detection with a Vision Transformer (ViTDet's simple feature pyramid, an
    anchor-free CenterNet/TTFNet head at ``stride``).

    Args:
        num_classes: object classes (no background), linked from the DataModule by the CLI.
        class_names: linked from the DataModule by the CLI.
        stride: output stride of the head's map (the patch size divided by 4, 2, 1 or 0.5).
        fpn_channels: width of the pyramid level.
        head_channels: width of the head.
        head_convs: 3x3 convolutions of the head.
        patch_logits: add class logits of the ViT's patch tokens (upsampled) to the heatmap's, so
            classes are learned straight from the tokens (as the segmentation decoder's).
        box_weight: weight of the GIoU box loss against the heatmap focal loss.
        alpha: Gaussian size of the heatmap targets (TTFNet).
        beta: Gaussian size of the box-regression area (TTFNet).
        max_detections: detections kept per image (highest heatmap peaks).
        score_threshold: lowest score kept for mAP and the COCO results file.
        show_threshold: lowest score drawn in pictures and listed in ``predictions.jsonl``.
        backend: ``pycocotools`` or ``faster_coco_eval`` for torchmetrics' mAP.
        log_images: validation images drawn with predicted (red) vs true (green) boxes; 0: none.
        save_overlays: ``predict`` also saves each image with its boxes as a PNG.
        **kwargs: the ViT backbone and ``init_from`` (:class:`~tfm.tasks.vision.ViTTask`), optimisation settings
            of :class:`~tfm.tasks.base.TaskModule`.

    Metrics per stage: ``map`` (COCO mAP@[.5:.95]), ``map_50``, ``map_75`` over the whole
    dataset, and ``loss``. ``predict`` writes ``predictions/detections.json`` (COCO results:
    ``image_id``, ``category_id``, ``bbox`` as ``[x, y, w, h]`` in the original image's pixels,
    ``score``) and the overlays.
    """

    monitor = ("val/map_50", "max")

    def __init__(
        self,
        num_classes: int = 80,
        class_names: list[str] | None = None,
        stride: int = 4,
        fpn_channels: int = 128,
        head_channels: int = 128,
        head_convs: int = 2,
        patch_logits: bool = True,
        box_weight: float = 5.0,
        alpha: float = 0.54,
        beta: float = 0.54,
        max_detections: int = 100,
        score_threshold: float = 0.01,
        show_threshold: float = 0.3,
        backend: Literal["pycocotools", "faster_coco_eval"] = "pycocotools",
        log_images: int = 4,
        save_overlays: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise UserError(f"num_classes={num_classes}: detection needs at least one object class")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.box_weight, self.alpha, self.beta = box_weight, alpha, beta
        self.max_detections, self.score_threshold, self.show_threshold = max_detections, score_threshold, show_threshold
        self.log_images, self.save_overlays = log_images, save_overlays
        try:
            self.net = ViTDetector(num_classes, self.arch, stride, fpn_channels, head_channels, head_convs, patch_logits,
                                   **self.vit)
        except ValueError as e:
            raise UserError(str(e)) from None
        self._pictures: tuple[Tensor, list[dict[str, Tensor]], list[dict[str, Tensor]]] | None = None
        self._results: list[dict[str, Any]] = []

    def build_metrics(self, stage: str) -> MeanAveragePrecision | None:
        return None if stage == "train" else mean_average_precision(self.hparams.backend)

    @property
    def stride(self) -> int:
        return self.net.stride

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(images)

    def targets(self, batch: Batch, size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """The head's training targets for a batch (heatmaps, boxes, weights), on the batch's device."""
        for labels in batch["labels"]:
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise UserError(f"an object has class {int(labels.max())} but the model has {self.num_classes} classes (0..{self.num_classes - 1})")
        with single_thread():
            parts = [center_targets(b.cpu(), lab.cpu(), self.num_classes, size, self.stride, self.alpha, self.beta)
                     for b, lab in zip(batch["boxes"], batch["labels"])]
        device = batch["images"].device
        return tuple(torch.stack(p).to(device) for p in zip(*parts))  # type: ignore[return-value]

    def _loss(self, net: Any, batch: Batch, per_image: bool = False) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        heat, sides = net(batch["images"])
        heat_t, box_t, weight_t = self.targets(batch, tuple(heat.shape[-2:]))
        return center_loss(heat, sides, heat_t, box_t, weight_t, self.stride, self.box_weight, per_image), heat, sides

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        losses, _, _ = self._loss(self.net, batch)
        n = len(batch["images"])
        self.log("train/loss", losses["loss"], prog_bar=True, sync_dist=True, batch_size=n)
        self.log_dict({"train/heatmap_loss": losses["heatmap"], "train/box_loss": losses["box"]}, sync_dist=True, batch_size=n)
        return losses["loss"]

    def detect(self, heat: Tensor, sides: Tensor, image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        return decode_centers(heat, sides, self.stride, image_size, self.max_detections, self.score_threshold)

    def _eval_step(self, batch: Batch, batch_idx: int, stage: str) -> None:
        losses, heat, sides = self._loss(self.eval_net, batch, per_image=True)  # a mean over images: the same however batched
        n = len(batch["images"])
        self.log(f"{stage}/loss", losses["loss"], sync_dist=True, batch_size=n)
        preds = self.detect(heat, sides, tuple(batch["images"].shape[-2:]))
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(batch["boxes"], batch["labels"])]
        self.metrics(stage).update(preds, targets)
        if stage == "val" and batch_idx == 0 and self.log_images:
            k = self.log_images
            self._pictures = (batch["images"][:k].detach().cpu(), [{key: v.cpu() for key, v in p.items()} for p in preds[:k]],
                              [{key: v.cpu() for key, v in t.items()} for t in targets[:k]])

    def _log_map(self, stage: str) -> None:
        metric = self.metrics(stage)
        result = metric.compute()  # gathers every rank's detections
        metric.reset()
        values = {f"{stage}/{k}": result[k].float() for k in ("map", "map_50", "map_75") if k in result}
        self.log_dict(values, prog_bar=stage == "val", sync_dist=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_map("val")
        if self._pictures is not None:
            self._draw(*self._pictures)
            self._pictures = None

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._log_map("test")

    def _draw(self, images: Tensor, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        f = zoom_factor(images.shape[-1])
        shown = display_images(images, f)
        pictures, boxes = [], []
        labels = {i: n for i, n in enumerate(self.class_names)}
        for img, p, t in zip(shown, preds, targets):
            keep = p["scores"] >= self.show_threshold
            p = {**p, "boxes": p["boxes"] * f}
            t = {**t, "boxes": t["boxes"] * f}
            pictures.append(torch.cat([draw_detections(img, p["boxes"][keep], p["labels"][keep], self.class_names, p["scores"][keep]),
                                       draw_detections(img, t["boxes"], t["labels"], self.class_names, color="lime")], 2))

            def box_data(bb: Tensor, ll: Tensor, ss: Tensor | None) -> list[dict[str, Any]]:
                return [{"position": {"minX": float(b[0]), "minY": float(b[1]), "maxX": float(b[2]), "maxY": float(b[3])},
                         "domain": "pixel", "class_id": int(c), "box_caption": self.class_names[int(c)],
                         **({"scores": {"score": float(s)}} if ss is not None else {})}
                        for b, c, s in zip(bb, ll, ss if ss is not None else ll)]

            boxes.append({"predictions": {"box_data": box_data(p["boxes"][keep], p["labels"][keep], p["scores"][keep]), "class_labels": labels},
                          "ground_truth": {"box_data": box_data(t["boxes"], t["labels"], None), "class_labels": labels}})
        log_pictures(self, "val/detection", torch.stack(pictures))
        log_wandb_images(self, "val/detection_boxes", shown, boxes=boxes)

    # --- predict ---------------------------------------------------------------------------------------
    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        images = batch["images"]
        heat, sides = self.eval_net(images)
        preds = self.detect(heat, sides, tuple(images.shape[-2:]))
        dm = self.trainer.datamodule
        ids = self._predict_ids()
        image_ids = getattr(dm, "predict_image_ids", None) if dm is not None else None
        category_ids = getattr(dm, "category_ids", None) if dm is not None else None
        out_dir = self._predict_dir()
        f = zoom_factor(images.shape[-1])
        shown = display_images(images, f) if self.save_overlays else None
        rows = []
        h_in, w_in = images.shape[-2:]
        for i, p in enumerate(preds):
            index = int(batch["index"][i])
            h, w = (int(v) for v in batch["orig_size"][i])
            scale = torch.tensor([w / w_in, h / h_in, w / w_in, h / h_in], device=p["boxes"].device)
            boxes = p["boxes"] * scale
            image_id = image_ids[index] if image_ids is not None else index
            for b, c, s in zip(boxes.tolist(), p["labels"].tolist(), p["scores"].tolist()):
                self._results.append({"image_id": image_id, "category_id": category_ids[c] if category_ids else c,
                                      "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)],
                                      "score": round(s, 5)})
            keep = p["scores"] >= self.show_threshold
            rows.append({"boxes": [[round(v, 1) for v in b] for b in boxes[keep].tolist()],
                         "classes": [self.class_names[c] for c in p["labels"][keep].tolist()],
                         "scores": [round(s, 4) for s in p["scores"][keep].tolist()]})
            if shown is not None:
                parts = [draw_detections(shown[i], p["boxes"][keep] * f, p["labels"][keep], self.class_names, p["scores"][keep])]
                if "boxes" in batch:
                    parts.append(draw_detections(shown[i], batch["boxes"][i] * f, batch["labels"][i], self.class_names, color="lime"))
                save_png(torch.cat(parts, 2), out_dir / "overlays" / f"{prediction_name(ids, index)}.png")
        return {"rows": rows}

    def prediction_rows(self, output: dict[str, Any]) -> list[dict[str, Any]]:
        return output["rows"]

    def on_predict_epoch_start(self) -> None:
        self._results = []

    def on_predict_epoch_end(self) -> None:
        """The COCO results file (one per rank under DDP), written atomically."""
        name = "detections.json" if self.trainer.world_size == 1 else f"detections.rank{self.trainer.global_rank}.json"
        self.detections_path: Path = write_atomic(self._predict_dir() / name, json.dumps(self._results))
        self._results = []
