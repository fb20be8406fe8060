"""Generated Fashion-MNIST scenes: 1-6 items pasted at random sizes and positions onto a textured background.

Everything comes from ``(seed, index)`` alone: scene ``i`` is the same on every machine, in every worker and after a
resume. Later items occlude earlier ones; one left too little visible is removed from the picture and the annotations;
an item's box is the tight box of its visible pixels (``x2 = max x + 1``, the COCO convention).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import UserError
from ...nn.dense import masks_to_boxes, single_thread
from ..loading import mix_seed

SCENE_FORMAT = 1  # bump when the generator would draw different scenes for the same seed
SCENE_MEAN, SCENE_STD = (0.37,), (0.22,)  # of generated grey scenes (measured over training scenes)


def textured_background(rng: np.random.Generator, size: int, channels: int) -> Tensor:
    """A smooth random texture in [0, 1], ``(channels, size, size)`` float: a base level, low- and mid-frequency
    noise, sometimes stripes or a checkerboard, fine grain."""
    low, mid = (torch.from_numpy(rng.normal(0, 1, (1, channels, n, n)).astype(np.float32)) for n in (4, 12))
    base, low_amp, mid_amp = float(rng.uniform(0.1, 0.5)), float(rng.uniform(0.0, 0.15)), float(rng.uniform(0, 0.08))
    tex = base + low_amp * F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[0]
    tex = tex + mid_amp * F.interpolate(mid, size=(size, size), mode="bilinear", align_corners=False)[0]
    kind = rng.integers(0, 3)
    yy, xx = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 2, indexing="ij")
    if kind == 1:  # stripes
        theta, period, phase = rng.uniform(0, math.pi), rng.uniform(4, 16), rng.uniform(0, 2 * math.pi)
        wave = torch.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period + phase)
        tex = tex + float(rng.uniform(0.03, 0.15)) * wave
    elif kind == 2:  # checkerboard
        cell = int(rng.integers(4, 12))
        tex = tex + float(rng.uniform(0.03, 0.12)) * (((xx // cell + yy // cell) % 2) * 2 - 1)
    if channels == 3:
        tex = tex * torch.from_numpy(rng.uniform(0.6, 1.0, (3, 1, 1)).astype(np.float32))
    return (tex + torch.from_numpy(rng.normal(0, 0.02, (channels, size, size)).astype(np.float32))).clamp(0, 1)


class SceneGenerator:
    """Scene ``index`` -> ``{"image" (C, H, W) uint8, "mask" (semantic: 0 background, k + 1 class k), "instances"
    (j: the j-th item), "boxes" (n, 4) xyxy, "labels" (n,)}``.

    Args:
        images: the item pool, uint8 ``(N, 1, 28, 28)``; ``labels`` their classes ``(N,)``.
        image_size: the square canvas side in pixels.
        item_size, items: ranges (drawn uniformly) of an item's side (its 28x28 frame resized) and of the number of
            items pasted (fewer may remain).
        min_visible, min_pixels: an item with less of its pixels, or fewer pixels, visible after occlusion is removed.
        mask_threshold: an item pixel is part of the item above this intensity (0..1).
        channels: 1 (grey) or 3 (coloured backgrounds, tinted items).
        seed: the scene seed (different for each split).
    """

    def __init__(self, images: Tensor, labels: Tensor, image_size: int = 64, item_size: tuple[int, int] = (16, 40),
                 items: tuple[int, int] = (1, 6), min_visible: float = 0.5, min_pixels: int = 12,
                 mask_threshold: float = 0.1, channels: int = 1, seed: int = 0) -> None:
        if item_size[0] < 4 or item_size[1] > image_size or item_size[0] > item_size[1]:
            raise UserError(f"item_size={list(item_size)} must be an increasing range of at least 4 px and at most "
                            f"image_size={image_size}")
        if items[0] < 0 or items[0] > items[1]:
            raise UserError(f"items={list(items)} must be an increasing range of counts (e.g. [1, 6])")
        if channels not in (1, 3):
            raise UserError(f"channels={channels}: generated scenes have 1 (grey) or 3 channels")
        self.pool, self.labels = images.float().div(255), labels.long()
        self.image_size, self.item_size, self.items = image_size, tuple(item_size), tuple(items)
        self.min_visible, self.min_pixels, self.mask_threshold = min_visible, min_pixels, mask_threshold
        self.channels, self.seed = channels, seed

    @single_thread()  # many tiny tensor ops
    def __call__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng(mix_seed(SCENE_FORMAT, self.seed, index))
        image = textured_background(rng, self.image_size, self.channels)
        pasted = []  # (y, x, side, item mask, item pixels (C, s, s), class)
        for _ in range(int(rng.integers(self.items[0], self.items[1] + 1))):
            j = int(rng.integers(len(self.pool)))
            s = int(rng.integers(self.item_size[0], self.item_size[1] + 1))
            y, x = int(rng.integers(0, self.image_size - s + 1)), int(rng.integers(0, self.image_size - s + 1))
            item = F.interpolate(self.pool[j : j + 1], size=(s, s), mode="bilinear", antialias=s < 28)[0]
            pixels = item.clamp(0, 1)
            if self.channels == 3:  # a tint
                pixels = pixels.expand(3, s, s) * torch.from_numpy(rng.uniform(0.5, 1.0, (3, 1, 1)).astype(np.float32))
            pasted.append((y, x, s, item[0] > self.mask_threshold, pixels, int(self.labels[j])))
        instances = self._paint(pasted)
        visible = torch.bincount(instances.flatten(), minlength=len(pasted) + 1)[1:]
        keep = [i for i, p in enumerate(pasted)
                if visible[i] >= max(self.min_pixels, self.min_visible * int(p[3].sum()))]
        if len(keep) < len(pasted):  # removing an item only uncovers earlier ones: one repaint is enough
            pasted = [pasted[i] for i in keep]
            instances = self._paint(pasted)
        for k, (y, x, s, _, pixels, _) in enumerate(pasted, start=1):
            own = instances[y : y + s, x : x + s] == k
            image[:, y : y + s, x : x + s][:, own] = pixels[:, own]
        labels = torch.tensor([p[5] for p in pasted], dtype=torch.long)
        semantic = torch.cat([torch.zeros(1, dtype=torch.uint8), (labels + 1).to(torch.uint8)])[instances.long()]
        return {"image": (image * 255).round().to(torch.uint8), "mask": semantic, "instances": instances,
                "boxes": masks_to_boxes(instances, len(pasted))[0], "labels": labels}

    def _paint(self, pasted: list) -> Tensor:
        instances = torch.zeros(self.image_size, self.image_size, dtype=torch.uint8)
        for k, (y, x, s, mask, _, _) in enumerate(pasted, start=1):
            instances[y : y + s, x : x + s][mask] = k
        return instances
