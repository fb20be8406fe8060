"""Pictures of images, masks and boxes: the VOC palette, overlays, PNG files and W&B images (rank 0 only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from .base import TaskModule


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

        path = Path(trainer.default_root_dir) / "media" / f"{key.replace('/', '_')}_step{trainer.global_step:07d}.png"
        save_png(make_grid(pictures, nrow=1, padding=2, pad_value=255), path)
    log_wandb_images(task, key, pictures)
    return path
