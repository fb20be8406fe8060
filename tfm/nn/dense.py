"""Dense prediction on a Vision Transformer: semantic segmentation and object detection.

* :func:`vit_feature_map` turns the ViT's patch tokens into a ``(B, dim, H/p, W/p)`` map;
* :class:`LinearDecoder` (Segmenter's linear decoder, Strudel et al. 2021) and
  :class:`ProgressiveDecoder` (SETR-PUP style progressive upsampling, Zheng et al. 2021, with an
  optional skip of the image itself at every scale for sharp boundaries) give full-resolution
  segmentation logits;
* :class:`SimpleFeaturePyramid` (ViTDet, Li et al. 2022) builds feature maps at other strides
  from the single-scale ViT map, and :class:`CenterHead` is an anchor-free dense detection head
  in the TTFNet style (Liu et al. 2020): a CenterNet class heatmap (Zhou et al. 2019) and, at
  every location, the distances to the four box sides, trained with GIoU over a Gaussian area;
* :func:`center_targets` (target assignment), :func:`center_loss` and :func:`decode_centers`
  are the detection training targets, loss and post-processing; box utilities sit beside them.

Boxes are ``(x1, y1, x2, y2)`` in pixels with the COCO convention: a box covers the pixels
``x1 <= x < x2``, so the tight box of a mask's pixels is ``(min x, min y, max x + 1, max y + 1)``.
Plain PyTorch: no Lightning here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ConfigError
from .models import VIT_PRESETS, VisionTransformer, create_vit


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Torch on one thread inside: many tiny tensor ops (generating a scene, assigning targets)
    are an order of magnitude slower when each one wakes the intra-op thread pool."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# --- box utilities -------------------------------------------------------------------------------


def box_area(boxes: Tensor) -> Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp_min(0) * (boxes[..., 3] - boxes[..., 1]).clamp_min(0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` boxes: ``(N, M)``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp_min(1e-9)


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """GIoU of matching rows of ``(..., 4)`` boxes (Rezatofighi et al. 2019), elementwise."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]  # not .prod(): its backward takes another path under a FLOP counter
    union = box_area(a) + box_area(b) - inter
    iou = inter / union.clamp_min(1e-9)
    hull_wh = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp_min(0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return iou - (hull - union) / hull.clamp_min(1e-9)


def masks_to_boxes(instances: Tensor, num: int | None = None) -> tuple[Tensor, Tensor]:
    """Tight boxes of the instances of an instance-id map ``(H, W)`` (0: none, ``k``: instance
    ``k``): ``(boxes (num, 4), present (num,))`` for ids ``1..num`` (default: the largest id);
    an instance with no pixel gets a zero box and ``present`` False."""
    h, w = instances.shape
    num = int(instances.max()) if num is None else num
    boxes = torch.zeros(num, 4)
    if num == 0:
        return boxes, torch.zeros(0, dtype=torch.bool)
    ids = instances.long()
    onehot = torch.zeros(num + 1, h, w, dtype=torch.bool)
    onehot.scatter_(0, ids[None].clamp(0, num), True)
    onehot = onehot[1:]
    in_row, in_col = onehot.any(2), onehot.any(1)  # (num, H), (num, W)
    present = in_row.any(1)
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    big = max(h, w) + 1
    y1 = torch.where(in_row, ar_h, big).amin(1)
    y2 = torch.where(in_row, ar_h, -1).amax(1) + 1
    x1 = torch.where(in_col, ar_w, big).amin(1)
    x2 = torch.where(in_col, ar_w, -1).amax(1) + 1
    boxes = torch.stack([x1, y1, x2, y2], 1).float()
    boxes[~present] = 0
    return boxes, present


# --- ViT feature map --------------------------------------------------------------------------------


def vit_feature_map(vit: VisionTransformer, images: Tensor) -> Tensor:
    """The patch tokens of ``vit.forward_features`` as a map ``(B, dim, H/p, W/p)``."""
    tokens = vit.forward_features(images)[:, vit.patch_embed.num_prefix_tokens :]
    ph, pw = vit.patch_embed.patch_size
    grid = (images.shape[-2] // ph, images.shape[-1] // pw)
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (ViTDet, ConvNeXt)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# --- segmentation decoders ------------------------------------------------------------------------


class LinearDecoder(nn.Module):
    """Segmenter's linear decoder: a linear layer on each patch token, the patch-level logits
    upsampled bilinearly to the image size."""

    def __init__(self, dim: int, num_classes: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.norm = LayerNorm2d(dim)
        self.proj = nn.Conv2d(dim, num_classes, 1)

    def forward(self, features: Tensor, images: Tensor | None = None) -> Tensor:
        logits = self.proj(self.norm(features))
        size = (features.shape[-2] * self.patch_size, features.shape[-1] * self.patch_size)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class UpStage(nn.Module):
    """2x upsampling, a 3x3 conv, BatchNorm, ReLU; with ``skip_chans``, plus a 3x3 conv of the
    image at this resolution (the same as one conv over both concatenated, with channel counts
    that stay multiples of 8)."""

    def __init__(self, c_in: int, c_out: int, skip_chans: int = 0, mode: str = "bilinear") -> None:
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.skip = nn.Conv2d(skip_chans, c_out, 3, padding=1, bias=False) if skip_chans else None
        self.norm = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor, image: Tensor | None = None) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode=self.mode, **({"align_corners": False} if self.mode == "bilinear" else {}))
        y = self.conv(x)
        if self.skip is not None:
            if image is None:
                raise ValueError("a decoder with image_skip needs the images")
            y = y + self.skip(image)
        return F.relu(self.norm(y), inplace=True)


class ProgressiveDecoder(nn.Module):
    """Progressive upsampling (SETR-PUP): a 1x1 projection, then per stage 2x upsampling
    (``upsample``: bilinear or nearest) and a 3x3 conv + BatchNorm + ReLU, until the image's
    resolution (a power-of-two patch size: ``log2(patch)`` stages, one channel count each), and a
    1x1 classifier.

    ``image_skip``: each stage also sees the image, average-pooled to its resolution: item
    boundaries come from the pixels, classes from the ViT.

    ``patch_logits``: Segmenter's linear decoder beside the stages: a class per patch token,
    upsampled bilinearly and added to the stages' logits, so a token's class reaches the loss
    directly and the stages only refine the boundaries (classes are learned much sooner).
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        patch_size: int,
        channels: Sequence[int] = (128, 64, 32),
        image_skip: bool = True,
        in_chans: int = 3,
        upsample: str = "bilinear",
        patch_logits: bool = False,
    ) -> None:
        super().__init__()
        stages = int(math.log2(patch_size))
        if 2**stages != patch_size:
            raise ConfigError(f"a progressive decoder needs a power-of-two patch size, not {patch_size}")
        if upsample not in ("bilinear", "nearest"):
            raise ConfigError(f"upsample={upsample!r}: use 'bilinear' or 'nearest'")
        channels = list(channels)
        if not channels:
            raise ConfigError("decoder channels must not be empty")
        channels = (channels + [channels[-1]] * stages)[: max(stages, 1)]
        self.patch_size = patch_size
        self.image_skip = image_skip
        self.norm = LayerNorm2d(dim)
        self.proj = nn.Conv2d(dim, channels[0], 1)
        self.stages = nn.ModuleList()
        c_in = channels[0]
        for c in channels[:stages]:
            self.stages.append(UpStage(c_in, c, in_chans if image_skip else 0, upsample))
            c_in = c
        self.classifier = nn.Conv2d(c_in, num_classes, 1)
        self.patch_classifier = nn.Conv2d(dim, num_classes, 1) if patch_logits else None

    def forward(self, features: Tensor, images: Tensor | None = None) -> Tensor:
        features = self.norm(features)
        x = self.proj(features)
        size = (features.shape[-2] * self.patch_size, features.shape[-1] * self.patch_size)
        for i, stage in enumerate(self.stages):
            image = None
            if self.image_skip and images is not None:
                factor = 2 ** (len(self.stages) - 1 - i)
                image = F.avg_pool2d(images, factor) if factor > 1 else images
            x = stage(x, image)
        logits = self.classifier(x)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if self.patch_classifier is not None:
            logits = logits + F.interpolate(self.patch_classifier(features), size=size, mode="bilinear", align_corners=False)
        return logits


def soft_dice_loss(logits: Tensor, target: Tensor, ignore_index: int = 255, eps: float = 1.0) -> Tensor:
    """``1 -`` the mean soft Dice coefficient (Milletari et al. 2016) over the classes present in
    ``target``, summed over the batch: every class counts the same however few its pixels, as in
    mean IoU. ``logits`` ``(B, K, H, W)``, ``target`` ``(B, H, W)``; ``ignore_index`` pixels count nowhere."""
    k = logits.shape[1]
    valid = target != ignore_index
    probs = logits.softmax(1) * valid[:, None]
    onehot = F.one_hot(target.masked_fill(~valid, 0), k).permute(0, 3, 1, 2).to(probs.dtype) * valid[:, None]
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + eps) / (total + eps)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


# --- ViTDet simple feature pyramid ------------------------------------------------------------------


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid: from the last ViT map (stride ``p``), maps at ``p / s`` for
    each ``s`` of ``scales`` (4: two 2x deconvolutions, 2: one, 1: as is, 0.5: 2x max-pooling),
    each then a 1x1 conv + LayerNorm and a 3x3 conv + LayerNorm to ``out_channels``."""

    def __init__(self, dim: int, out_channels: int = 128, scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5)) -> None:
        super().__init__()
        self.scales = [float(s) for s in scales]
        self.levels = nn.ModuleList()
        for s in self.scales:
            layers: list[nn.Module] = []
            c = dim
            if s == 4.0:
                layers += [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
                           nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)]
                c = dim // 4
            elif s == 2.0:
                layers.append(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2))
                c = dim // 2
            elif s == 0.5:
                layers.append(nn.MaxPool2d(2, 2))
            elif s != 1.0:
                raise ConfigError(f"feature pyramid scale {s} is not one of 4, 2, 1, 0.5")
            layers += [nn.Conv2d(c, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                       nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels)]
            self.levels.append(nn.Sequential(*layers))

    def forward(self, features: Tensor) -> list[Tensor]:
        return [level(features) for level in self.levels]


# --- detection head, targets, loss, decoding ------------------------------------------------------


class CenterHead(nn.Module):
    """Anchor-free dense head on one feature map: a class heatmap ``(B, K, h, w)`` (logits) and
    box side distances ``(B, 4, h, w)`` (left, top, right, bottom, in pixels, >= 0)."""

    def __init__(self, in_channels: int, num_classes: int, stride: int, channels: int = 128, num_convs: int = 2, prior: float = 0.01) -> None:
        super().__init__()
        self.stride = stride

        def tower() -> nn.Sequential:
            layers: list[nn.Module] = []
            c = in_channels
            for _ in range(num_convs):
                layers += [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(inplace=True)]
                c = channels
            return nn.Sequential(*layers)

        self.cls_tower, self.box_tower = tower(), tower()
        c = channels if num_convs else in_channels
        self.heatmap = nn.Conv2d(c, num_classes, 3, padding=1)
        self.sides = nn.Conv2d(c, 4, 3, padding=1)
        nn.init.normal_(self.heatmap.weight, std=0.01)
        nn.init.constant_(self.heatmap.bias, -math.log((1 - prior) / prior))
        nn.init.normal_(self.sides.weight, std=0.01)
        nn.init.constant_(self.sides.bias, 1.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        heat = self.heatmap(self.cls_tower(x))
        sides = F.softplus(self.sides(self.box_tower(x))) * self.stride * 2
        return heat, sides


def cell_centers(h: int, w: int, stride: int, device: Any = None) -> tuple[Tensor, Tensor]:
    """Pixel coordinates ``(x, y)`` of the centres of an ``h x w`` map's cells, ``(h, w)`` each."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
    return xs[None, :].expand(h, w), ys[:, None].expand(h, w)


def _gaussian(d2x: Tensor, d2y: Tensor, sx: float, sy: float) -> Tensor:
    sx, sy = max(sx, 1e-3), max(sy, 1e-3)
    return torch.exp(-(d2x / (2 * sx * sx) + d2y / (2 * sy * sy)))


def center_targets(
    boxes: Tensor, labels: Tensor, num_classes: int, size: tuple[int, int], stride: int, alpha: float = 0.54, beta: float = 0.54
) -> tuple[Tensor, Tensor, Tensor]:
    """Training targets of one image for :class:`CenterHead` (TTFNet's assignment).

    ``boxes`` ``(N, 4)`` xyxy pixels, ``labels`` ``(N,)`` in ``0..K-1``, ``size`` the ``(h, w)``
    of the output map. Returns

    * ``heat`` ``(K, h, w)``: per object an elliptical Gaussian on its class's channel, centred at
      the cell holding the box centre (exactly 1 there), sigma ``alpha * side / 6`` (in cells);
      overlapping Gaussians take the maximum;
    * ``box`` ``(4, h, w)``: the box each location regresses (xyxy pixels);
    * ``weight`` ``(h, w)``: regression weight, non-zero only inside the box's own Gaussian of
      sigma ``beta * side / 6`` (at least its centre cell), summing to ``log(area)`` per object.
      Where objects overlap, the smaller one takes the location.
    """
    h, w = size
    heat = torch.zeros(num_classes, h, w)
    box_t = torch.zeros(4, h, w)
    weight = torch.zeros(h, w)
    if len(boxes) == 0:
        return heat, box_t, weight
    boxes = boxes.float()
    ys, xs = torch.arange(h, dtype=torch.float32)[:, None], torch.arange(w, dtype=torch.float32)[None, :]
    areas = box_area(boxes)
    for i in torch.argsort(areas, descending=True).tolist():  # the smallest last: it wins overlaps
        x1, y1, x2, y2 = boxes[i].tolist()
        if x2 <= x1 or y2 <= y1:
            continue
        cx = min(max(int((x1 + x2) / 2 / stride), 0), w - 1)
        cy = min(max(int((y1 + y2) / 2 / stride), 0), h - 1)
        bw, bh = (x2 - x1) / stride, (y2 - y1) / stride
        d2x, d2y = (xs - cx) ** 2, (ys - cy) ** 2
        c = int(labels[i])
        heat[c] = torch.maximum(heat[c], _gaussian(d2x, d2y, alpha * bw / 6, alpha * bh / 6))
        heat[c, cy, cx] = 1.0
        g = _gaussian(d2x, d2y, beta * bw / 6, beta * bh / 6)
        # the regression area: the box's own Gaussian, inside the box
        centers_x, centers_y = (xs + 0.5) * stride, (ys + 0.5) * stride
        inside = (centers_x >= x1) & (centers_x < x2) & (centers_y >= y1) & (centers_y < y2)
        g = torch.where(inside & (g > 0.01), g, torch.zeros(()))
        g[cy, cx] = 1.0
        area = g > 0
        weight[area] = (g * (math.log(max(areas[i].item(), 2.0)) / g.sum()))[area]
        box_t[:, area] = boxes[i][:, None]
    return heat, box_t, weight


def focal_heatmap_loss(logits: Tensor, target: Tensor, a: float = 2.0, b: float = 4.0, per_image: bool = False) -> Tensor:
    """CenterNet's penalty-reduced focal loss on a heatmap, summed and divided by the number of
    peaks (of the batch; ``per_image``: of each image, then the mean over the images)."""
    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = F.logsigmoid(logits) * (1 - p) ** a * pos
    neg_loss = F.logsigmoid(-logits) * p**a * (1 - target) ** b * (1 - pos)
    if per_image:
        return (-(pos_loss + neg_loss).flatten(1).sum(1) / pos.flatten(1).sum(1).clamp_min(1.0)).mean()
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1.0)


def decode_boxes(sides: Tensor, stride: int) -> Tensor:
    """Side distances ``(B, 4, h, w)`` -> boxes ``(B, 4, h, w)`` xyxy pixels around each cell."""
    h, w = sides.shape[-2:]
    xs, ys = cell_centers(h, w, stride, sides.device)
    return torch.stack([xs - sides[:, 0], ys - sides[:, 1], xs + sides[:, 2], ys + sides[:, 3]], 1)


def center_loss(
    heat_logits: Tensor, sides: Tensor, heat_t: Tensor, box_t: Tensor, weight_t: Tensor, stride: int, box_weight: float = 5.0,
    per_image: bool = False,
) -> dict[str, Tensor]:
    """Focal heatmap loss plus ``box_weight`` x TTFNet's weighted GIoU box loss (``loss``), both
    normalised over the batch (training, as CenterNet and TTFNet), or with ``per_image`` per image
    and averaged over the images (evaluation: a mean that does not depend on the batching)."""
    heat_loss = focal_heatmap_loss(heat_logits, heat_t, per_image=per_image)
    # GIoU at every cell, weighted (0 outside the regression areas): no data-dependent indexing
    giou = generalized_box_iou(decode_boxes(sides, stride).permute(0, 2, 3, 1), box_t.permute(0, 2, 3, 1))
    weighted = (1 - giou) * weight_t
    if per_image:
        box_loss = (weighted.flatten(1).sum(1) / weight_t.flatten(1).sum(1).clamp_min(1e-6)).mean()
    else:
        box_loss = weighted.sum() / weight_t.sum().clamp_min(1e-6)
    return {"loss": heat_loss + box_weight * box_loss, "heatmap": heat_loss, "box": box_loss}


def decode_centers(
    heat_logits: Tensor, sides: Tensor, stride: int, image_size: tuple[int, int], max_detections: int = 100, score_threshold: float = 0.0
) -> list[dict[str, Tensor]]:
    """Detections per image: heatmap peaks (a cell that is the maximum of its 3x3 neighbourhood,
    on its class's channel), best ``max_detections`` by score, boxes clipped to the image.
    Returns per image ``{"boxes" (n, 4), "scores" (n,), "labels" (n,)}``."""
    b, k, h, w = heat_logits.shape
    heat = heat_logits.sigmoid()
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, idx = peaks.flatten(1).topk(min(max_detections, k * h * w), dim=1)
    labels, cells = idx // (h * w), idx % (h * w)
    boxes = decode_boxes(sides, stride).flatten(2)  # (B, 4, h*w)
    boxes = torch.gather(boxes, 2, cells[:, None, :].expand(b, 4, cells.shape[1])).transpose(1, 2)
    ih, iw = image_size
    boxes = torch.stack([boxes[..., 0].clamp(0, iw), boxes[..., 1].clamp(0, ih), boxes[..., 2].clamp(0, iw), boxes[..., 3].clamp(0, ih)], -1)
    out = []
    for i in range(b):
        keep = scores[i] > score_threshold
        out.append({"boxes": boxes[i][keep], "scores": scores[i][keep], "labels": labels[i][keep]})
    return out


# --- whole models ------------------------------------------------------------------------------------


class _ViTDense(nn.Module):
    """A ViT backbone (``backbone``, no classifier) and task layers; the LR-decay helpers and
    ``no_weight_decay`` of :class:`TaskModule` see through to the backbone."""

    backbone: VisionTransformer

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()}

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def layer_id(self, name: str) -> int:
        if name.startswith("backbone."):
            return self.backbone.layer_id(name[len("backbone.") :])
        return self.num_layers

    @property
    def patch_embed(self) -> nn.Module:
        return self.backbone.patch_embed

    def attention_maps(self, images: Tensor) -> list[Tensor]:
        return self.backbone.attention_maps(images)


def _backbone(arch: str, **kwargs: Any) -> VisionTransformer:
    if arch not in VIT_PRESETS:
        raise ConfigError(f"unknown ViT arch {arch!r}: use one of {', '.join(VIT_PRESETS)}")
    return create_vit(arch, num_classes=0, **kwargs)


class ViTSegmenter(_ViTDense):
    """ViT + a segmentation decoder: ``(B, C, H, W)`` images -> ``(B, num_classes, H, W)`` logits.

    ``decoder``: ``linear`` (Segmenter) or ``progressive`` (:class:`ProgressiveDecoder`).
    ``backbone_args`` go to :func:`tfm.nn.create_vit` (``image_size``, ``patch_size``, ...)."""

    def __init__(
        self,
        num_classes: int,
        arch: str = "vit_tiny",
        decoder: str = "progressive",
        decoder_channels: Sequence[int] = (128, 64, 32),
        image_skip: bool = True,
        patch_logits: bool = False,
        **backbone_args: Any,
    ) -> None:
        super().__init__()
        self.backbone = _backbone(arch, **backbone_args)
        dim, patch = self.backbone.dim, self.backbone.patch_embed.patch_size[0]
        if decoder == "linear":
            self.decoder: nn.Module = LinearDecoder(dim, num_classes, patch)
        elif decoder == "progressive":
            in_chans = backbone_args.get("in_chans") or 3
            self.decoder = ProgressiveDecoder(dim, num_classes, patch, decoder_channels, image_skip, in_chans, patch_logits=patch_logits)
        else:
            raise ConfigError(f"decoder={decoder!r}: use 'linear' or 'progressive'")

    def forward(self, images: Tensor) -> Tensor:
        return self.decoder(vit_feature_map(self.backbone, images), images)


class ViTDetector(_ViTDense):
    """ViT + a one-level simple feature pyramid at ``stride`` + :class:`CenterHead`:
    ``(B, C, H, W)`` images -> ``(heatmap logits (B, K, H/s, W/s), side distances (B, 4, H/s, W/s))``.

    ``patch_logits``: class logits of each ViT patch token, upsampled bilinearly to the heatmap
    and added to its logits (as :class:`ProgressiveDecoder`'s): an object's class reaches the
    loss straight from the tokens, the head shapes the peaks."""

    def __init__(
        self,
        num_classes: int,
        arch: str = "vit_tiny",
        stride: int = 4,
        fpn_channels: int = 128,
        head_channels: int = 128,
        head_convs: int = 2,
        patch_logits: bool = False,
        **backbone_args: Any,
    ) -> None:
        super().__init__()
        self.backbone = _backbone(arch, **backbone_args)
        patch = self.backbone.patch_embed.patch_size[0]
        scale = patch / stride
        if scale not in (4.0, 2.0, 1.0, 0.5):
            raise ConfigError(f"detection stride {stride} must be the patch size {patch} divided by 4, 2, 1 or 0.5")
        self.stride = stride
        self.pyramid = SimpleFeaturePyramid(self.backbone.dim, fpn_channels, (scale,))
        self.head = CenterHead(fpn_channels, num_classes, stride, head_channels, head_convs)
        self.patch_classifier: nn.Module | None = None
        if patch_logits:
            self.patch_classifier = nn.Sequential(LayerNorm2d(self.backbone.dim), nn.Conv2d(self.backbone.dim, num_classes, 1))
            nn.init.normal_(self.patch_classifier[1].weight, std=0.01)
            nn.init.zeros_(self.patch_classifier[1].bias)  # the head's bias holds the prior

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        tokens = vit_feature_map(self.backbone, images)
        (features,) = self.pyramid(tokens)
        heat, sides = self.head(features)
        if self.patch_classifier is not None:
            heat = heat + F.interpolate(self.patch_classifier(tokens), size=heat.shape[-2:], mode="bilinear", align_corners=False)
        return heat, sides

    @torch.no_grad()
    def detect(self, images: Tensor, max_detections: int = 100, score_threshold: float = 0.0) -> list[dict[str, Tensor]]:
        heat, sides = self(images)
        return decode_centers(heat, sides, self.stride, tuple(images.shape[-2:]), max_detections, score_threshold)
