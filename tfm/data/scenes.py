"""Detection and segmentation data: generated Fashion-MNIST scenes, COCO detection JSON, image +
mask-PNG folders (VOC-style palette or index PNGs), Hugging Face datasets.

**Generated scenes** (the default source, :class:`SceneGenerator`): 1-6 Fashion-MNIST items
pasted at random sizes and positions onto a textured background. Everything comes from
``(seed, index)`` alone, so scene ``i`` is the same on every machine, in every worker and after a
resume. An item's pixels are those of its resized image above ``mask_threshold``; later items
occlude earlier ones; an item with less than ``min_visible`` of its pixels left visible (or fewer
than ``min_pixels``) is removed from the picture and the annotations; each remaining item's box
is the tight box of its visible pixels (``x2 = max x + 1``, the COCO convention). Training scenes
draw only from the Fashion-MNIST training images, validation and test scenes only from its test
images (with different seeds).

**Samples** are dicts: ``image`` uint8 ``(C, H, W)``, ``mask`` (semantic, ``(H, W)``, 0 =
background, ``k + 1`` = object class ``k``, ``ignore_index`` = not scored) and ``instances``
(``(H, W)``, 0 = none, ``j`` = the ``j``-th object) where known, ``boxes`` float ``(n, 4)`` xyxy
pixels and ``labels`` ``(n,)`` object classes ``0..K-1``. The transforms (torchvision v2: random
resized crop, flip) move image, masks and boxes together; when an instance map is known the
boxes are recomputed from it afterwards (always the tight boxes of the visible pixels), else
clipped to the image and dropped when empty.

Batches are dicts: ``images`` ``(B, C, H, W)`` normalised, ``masks`` ``(B, H, W)`` long
(segmentation), ``boxes``/``labels`` lists (detection), ``index`` (the sample's position in its
split) and ``orig_size`` ``(B, 2)`` (height, width before resizing, for predictions).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import UserError
from ..nn.dense import masks_to_boxes, single_thread
from .images import (
    FASHION_MNIST_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    _image_files,
    image_sizes,
    read_image,
    _looks_like_path,
    image_channels,
    load_fashion_mnist,
    setup_image_splits,
    split_indices,
)
from .loading import ResumableDataModule, mix_seed
from .sources import HubSpec, load_splits, require_columns, require_train

SCENE_FORMAT = 1  # bump when the generator would draw different scenes for the same seed
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
SCENE_MEAN, SCENE_STD = (0.37,), (0.22,)  # of generated grey scenes (measured over training scenes)


# --- the generator -----------------------------------------------------------------------------------


def textured_background(rng: np.random.Generator, size: int, channels: int) -> Tensor:
    """A smooth random texture in [0, 1]: a base level, low- and mid-frequency noise, sometimes
    stripes or a checkerboard, fine grain; ``(channels, size, size)`` float."""
    h = w = size
    low = torch.from_numpy(rng.normal(0, 1, (1, channels, 4, 4)).astype(np.float32))
    mid = torch.from_numpy(rng.normal(0, 1, (1, channels, 12, 12)).astype(np.float32))
    tex = (
        float(rng.uniform(0.1, 0.5))
        + float(rng.uniform(0.0, 0.15)) * F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0]
        + float(rng.uniform(0.0, 0.08)) * F.interpolate(mid, size=(h, w), mode="bilinear", align_corners=False)[0]
    )
    kind = rng.integers(0, 3)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    if kind == 1:  # stripes
        theta, period, phase = rng.uniform(0, math.pi), rng.uniform(4, 16), rng.uniform(0, 2 * math.pi)
        tex = tex + float(rng.uniform(0.03, 0.15)) * torch.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period + phase)
    elif kind == 2:  # checkerboard
        cell = int(rng.integers(4, 12))
        tex = tex + float(rng.uniform(0.03, 0.12)) * (((xx // cell + yy // cell) % 2) * 2 - 1)
    if channels == 3:
        tex = tex * torch.from_numpy(rng.uniform(0.6, 1.0, (3, 1, 1)).astype(np.float32))
    tex = tex + torch.from_numpy(rng.normal(0, 0.02, (channels, h, w)).astype(np.float32))
    return tex.clamp(0, 1)


class SceneGenerator:
    """Scenes of Fashion-MNIST items on textured backgrounds, each from ``(seed, index)`` alone.

    Args:
        images: the item pool, uint8 ``(N, 1, 28, 28)``; ``labels`` their classes ``(N,)``.
        image_size: the square canvas side in pixels.
        item_size: the side an item's 28x28 frame is resized to, drawn uniformly in this range.
        items: how many items are pasted, uniformly in this range (fewer may remain).
        min_visible: an item with less of its pixels visible after occlusion is removed.
        min_pixels: ... and one with fewer visible pixels than this.
        mask_threshold: an item pixel is part of the item above this intensity (0..1).
        channels: 1 (grey) or 3 (coloured backgrounds, tinted items).
        seed: the scene seed (different for each split).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        image_size: int = 64,
        item_size: tuple[int, int] = (16, 40),
        items: tuple[int, int] = (1, 6),
        min_visible: float = 0.5,
        min_pixels: int = 12,
        mask_threshold: float = 0.1,
        channels: int = 1,
        seed: int = 0,
    ) -> None:
        if item_size[0] < 4 or item_size[1] > image_size or item_size[0] > item_size[1]:
            raise UserError(f"item_size={list(item_size)} must be an increasing range of at least 4 px and at most image_size={image_size}")
        if items[0] < 0 or items[0] > items[1]:
            raise UserError(f"items={list(items)} must be an increasing range of counts (e.g. [1, 6])")
        if channels not in (1, 3):
            raise UserError(f"channels={channels}: generated scenes have 1 (grey) or 3 channels")
        self.pool = images.float().div(255)
        self.labels = labels.long()
        self.image_size, self.item_size, self.items = image_size, tuple(item_size), tuple(items)
        self.min_visible, self.min_pixels, self.mask_threshold = min_visible, min_pixels, mask_threshold
        self.channels, self.seed = channels, seed

    def __call__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng(mix_seed(SCENE_FORMAT, self.seed, index))
        size = self.image_size
        background = textured_background(rng, size, self.channels)
        count = int(rng.integers(self.items[0], self.items[1] + 1))
        pasted = []  # (y, x, side, item mask, item pixels (C, s, s), class)
        for _ in range(count):
            j = int(rng.integers(len(self.pool)))
            s = int(rng.integers(self.item_size[0], self.item_size[1] + 1))
            y, x = int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))
            tint = rng.uniform(0.5, 1.0, (3, 1, 1)).astype(np.float32) if self.channels == 3 else None
            item = F.interpolate(self.pool[j : j + 1], size=(s, s), mode="bilinear", antialias=s < 28, align_corners=False)[0]
            mask = item[0] > self.mask_threshold
            pixels = item.clamp(0, 1)
            if tint is not None:
                pixels = pixels.expand(3, s, s) * torch.from_numpy(tint)
            pasted.append((y, x, s, mask, pixels, int(self.labels[j])))
        instances = self._paint(pasted)
        visible = torch.bincount(instances.flatten(), minlength=len(pasted) + 1)[1:]
        keep = [i for i, p in enumerate(pasted) if visible[i] >= max(self.min_pixels, self.min_visible * int(p[3].sum()))]
        if len(keep) < len(pasted):  # removing an item only uncovers earlier ones: one repaint is enough
            pasted = [pasted[i] for i in keep]
            instances = self._paint(pasted)
        image = background
        for k, (y, x, s, mask, pixels, _) in enumerate(pasted, start=1):
            region = image[:, y : y + s, x : x + s]
            own = instances[y : y + s, x : x + s] == k
            region[:, own] = pixels[:, own]
        labels = torch.tensor([p[5] for p in pasted], dtype=torch.long)
        boxes, _ = masks_to_boxes(instances, len(pasted))
        semantic = torch.zeros(size, size, dtype=torch.uint8)
        if len(pasted):
            semantic = torch.cat([torch.zeros(1, dtype=torch.uint8), (labels + 1).to(torch.uint8)])[instances.long()]
        return {
            "image": (image * 255).round().to(torch.uint8),
            "mask": semantic,
            "instances": instances,
            "boxes": boxes,
            "labels": labels,
        }

    def _paint(self, pasted: list) -> Tensor:
        size = self.image_size
        instances = torch.zeros(size, size, dtype=torch.uint8)
        for k, (y, x, s, mask, _, _) in enumerate(pasted, start=1):
            instances[y : y + s, x : x + s][mask] = k
        return instances


class SceneDataset(Dataset):
    """``n`` generated scenes: item ``i`` is ``generator(i)``."""

    def __init__(self, generator: SceneGenerator, n: int) -> None:
        self.generator, self.n = generator, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        with single_thread():
            return {"index": i, **self.generator(i)}


# --- COCO detection JSON ---------------------------------------------------------------------------


def read_coco(path: str | Path, image_roots: Sequence[Path] = ()) -> tuple[list[dict[str, Any]], list[str], list[int]]:
    """A COCO detection file: ``(records, class names, category ids)``.

    Each record is ``{"file", "image_id", "width", "height", "boxes" (n, 4) xyxy, "labels" (n,)}``
    with labels ``0..K-1`` in the order of the sorted category ids. Crowd annotations are left
    out. Images with no annotations are kept (valid data: nothing to find there).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"COCO annotation file {path} does not exist")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise UserError(f"COCO annotation file {path} is empty: it needs 'images', 'annotations' and 'categories'")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"COCO annotation file {path} is not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict) or not data.get("images"):
        raise UserError(f"COCO annotation file {path} has no images: it needs a non-empty 'images' list (and 'annotations', 'categories')")
    cats = sorted(data.get("categories") or [], key=lambda c: c["id"])
    if not cats:
        raise UserError(f"COCO annotation file {path} has no 'categories': list the classes as {{'id': 1, 'name': '...'}}")
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    roots = [path.parent, path.parent / "images", path.parent.parent / "images", *image_roots]
    images: dict[Any, dict[str, Any]] = {}
    for im in data["images"]:
        images[im["id"]] = {"file": im["file_name"], "image_id": im["id"], "width": int(im["width"]), "height": int(im["height"]),
                            "boxes": [], "labels": []}
    for ann in data.get("annotations") or []:
        if ann.get("iscrowd", 0):
            continue
        rec = images.get(ann.get("image_id"))
        if rec is None:
            raise UserError(f"{path}: annotation {ann.get('id')} refers to image_id {ann.get('image_id')}, which is not in 'images'")
        if ann.get("category_id") not in cat_index:
            raise UserError(f"{path}: annotation {ann.get('id')} has category_id {ann.get('category_id')}, not one of "
                            f"{sorted(cat_index)} in 'categories'")
        x, y, w, h = (float(v) for v in ann["bbox"])
        W, H = rec["width"], rec["height"]
        tol = 1.0
        if w <= 0 or h <= 0 or x < -tol or y < -tol or x + w > W + tol or y + h > H + tol:
            raise UserError(f"{path}: annotation {ann.get('id')} of image {rec['file']} ({W}x{H}) has box [x, y, w, h] = "
                            f"{[x, y, w, h]}, outside the image or empty: boxes must lie within 0..width, 0..height")
        rec["boxes"].append([max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)])
        rec["labels"].append(cat_index[ann["category_id"]])
    records = []
    for rec in images.values():
        rec["file"] = _resolve_image(rec["file"], roots, path)
        rec["boxes"] = torch.tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4)
        rec["labels"] = torch.tensor(rec["labels"], dtype=torch.long)
        records.append(rec)
    return records, [str(c.get("name", c["id"])) for c in cats], [c["id"] for c in cats]


def _resolve_image(name: str, roots: Sequence[Path], source: Path) -> Path:
    for root in roots:
        if (Path(root) / name).is_file():
            return Path(root) / name
    raise UserError(f"{source}: image file {name} was found in none of {', '.join(str(r) for r in roots)}: set --data.image_root")


class CocoDataset(Dataset):
    """Images of a COCO file with their boxes (no masks)."""

    def __init__(self, records: list[dict[str, Any]], mode: str) -> None:
        self.records, self.mode = records, mode

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        return {"index": i, "image": read_image(r["file"], self.mode), "boxes": r["boxes"].clone(), "labels": r["labels"].clone()}




# --- image + mask folders ------------------------------------------------------------------------------


def read_mask(path: Path) -> Tensor:
    """A mask PNG of class ids: a palette PNG (VOC: the palette index is the class) or a grey
    index PNG; ``(H, W)`` uint8."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("P", "L", "I", "I;16", "1"):
            raise UserError(f"mask {path} is a {im.mode} image: masks must be palette (VOC-style) or grey index PNGs of class ids")
        arr = np.asarray(im)
    if arr.max(initial=0) > 255:
        raise UserError(f"mask {path} has class id {int(arr.max())}: ids must be 0..255")
    return torch.from_numpy(arr.astype(np.uint8))


def scan_mask_folder(folder: Path) -> dict[str, list[tuple[Path, Path]]]:
    """Image/mask pairs per split. Layouts: VOC (``JPEGImages/``, ``SegmentationClass/``,
    ``ImageSets/Segmentation/<split>.txt``), ``<split>/images`` + ``<split>/masks``, or
    ``images/`` + ``masks/`` (one pool); masks match images by file stem."""
    def pairs(img_dir: Path, mask_dir: Path, stems: list[str] | None = None) -> list[tuple[Path, Path]]:
        masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
        files = _image_files(img_dir, check=False)  # checked below with their masks, one header read each
        if stems is not None:
            by_stem = {p.stem: p for p in files}
            missing = [s for s in stems if s not in by_stem]
            if missing:
                raise UserError(f"{img_dir} lacks the images {missing[:3]} listed in the split file")
            files = [by_stem[s] for s in stems]
        out = [(f, masks[f.stem]) for f in files if f.stem in masks]
        if not out:
            raise UserError(f"no image in {img_dir} has a mask PNG of the same name in {mask_dir}")
        sizes = image_sizes([p for pair in out for p in pair])
        for (image, mask), image_size, mask_size in zip(out, sizes[::2], sizes[1::2]):
            if image_size != mask_size:
                raise UserError(f"mask {mask} is {mask_size[0]}x{mask_size[1]} but its image {image} is "
                                f"{image_size[0]}x{image_size[1]}: a mask must have its image's size")
        return out

    if (folder / "JPEGImages").is_dir() and (folder / "SegmentationClass").is_dir():
        sets = folder / "ImageSets" / "Segmentation"
        splits: dict[str, list[tuple[Path, Path]]] = {}
        for split, name in (("train", "train"), ("val", "val"), ("test", "test")):
            f = sets / f"{name}.txt"
            if f.is_file():
                stems = [s.strip() for s in f.read_text().split() if s.strip()]
                splits[split] = pairs(folder / "JPEGImages", folder / "SegmentationClass", stems)
        if not splits:
            splits["all"] = pairs(folder / "JPEGImages", folder / "SegmentationClass")
        return splits
    splits = {}
    for split, names in (("train", ("train",)), ("val", ("val", "validation")), ("test", ("test",))):
        for name in names:
            if (folder / name / "images").is_dir() and (folder / name / "masks").is_dir() and split not in splits:
                splits[split] = pairs(folder / name / "images", folder / name / "masks")
    if splits:
        return splits
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return {"all": pairs(folder / "images", folder / "masks")}
    raise UserError(f"{folder} is not a segmentation folder: expected images/ + masks/, <split>/images + <split>/masks, "
                    "or VOC's JPEGImages/ + SegmentationClass/")


class MaskFolderDataset(Dataset):
    def __init__(self, pairs: list[tuple[Path, Path]], mode: str) -> None:
        self.pairs, self.mode = pairs, mode

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img, mask = self.pairs[i]
        return {"index": i, "image": read_image(img, self.mode), "mask": read_mask(mask)}


# --- Hugging Face datasets ---------------------------------------------------------------------------


class HFDenseDataset(Dataset):
    """A split of a Hugging Face dataset: ``image_key`` and either a mask column (segmentation)
    or an objects column with ``bbox`` and ``category`` (detection; ``bbox_format`` xywh or xyxy)."""

    def __init__(self, ds: Any, mode: str, image_key: str, mask_key: str | None, objects_key: str | None, bbox_format: str) -> None:
        self.ds, self.mode, self.image_key, self.mask_key, self.objects_key = ds, mode, image_key, mask_key, objects_key
        self.bbox_format = bbox_format

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.ds[i]
        out: dict[str, Any] = {"index": i, "image": v2.functional.pil_to_tensor(row[self.image_key].convert(self.mode))}
        if self.mask_key:
            out["mask"] = torch.from_numpy(np.asarray(row[self.mask_key]).astype(np.uint8))
        if self.objects_key:
            obj = row[self.objects_key]
            boxes = torch.tensor(obj["bbox"], dtype=torch.float32).reshape(-1, 4)
            if self.bbox_format == "xywh":
                boxes[:, 2:] += boxes[:, :2]
            h, w = out["image"].shape[-2:]
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            out["boxes"] = boxes
            out["labels"] = torch.tensor(obj["category"], dtype=torch.long).reshape(-1)
        return out


class PredictFiles(Dataset):
    def __init__(self, files: list[Path], mode: str) -> None:
        self.files, self.mode = files, mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": i, "image": read_image(self.files[i], self.mode)}


# --- transforms ---------------------------------------------------------------------------------------


class DenseTransform:
    """One sample -> the same sample transformed: the image, its masks and its boxes together.

    ``train``: random resized crop (``crop_scale``, when set) or a resize to ``size``, then a
    horizontal flip with probability ``hflip``; evaluation: a resize to ``size`` only. Randomness
    comes from torch's global RNG, which :class:`~tfm.data.loading.SeededTransform` seeds per batch.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], train: bool, hflip: float = 0.5,
                 crop_scale: tuple[float, float] | None = None, crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size, self.train = size, train
        ops: list[Any] = []
        if train and crop_scale:
            ops.append(v2.RandomResizedCrop((size, size), scale=tuple(crop_scale), ratio=tuple(crop_ratio), antialias=True))
        else:
            ops.append(v2.Resize((size, size), antialias=True))
        if train and hflip:
            ops.append(v2.RandomHorizontalFlip(hflip))
        self.geometric = v2.Compose(ops)
        self.normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = sample["image"]
        h, w = image.shape[-2:]
        parts: dict[str, Any] = {"image": tv_tensors.Image(image)}
        for key in ("mask", "instances"):
            if key in sample:
                parts[key] = tv_tensors.Mask(sample[key])
        if "boxes" in sample:
            parts["boxes"] = tv_tensors.BoundingBoxes(sample["boxes"], format="XYXY", canvas_size=(h, w))
        if (h, w) != (self.size, self.size) or self.train:
            parts = self.geometric(parts)
        out = {k: v for k, v in sample.items() if k not in parts}
        out["orig_size"] = torch.tensor([h, w])
        out["image"] = self.normalize(parts["image"].as_subclass(Tensor))
        if "mask" in parts:
            out["mask"] = parts["mask"].as_subclass(Tensor)
        if "boxes" in parts:
            labels = sample["labels"]
            if "instances" in parts:  # boxes of the visible pixels, as they are now
                instances = parts["instances"].as_subclass(Tensor)
                boxes, present = masks_to_boxes(instances, len(labels))
            else:
                boxes = parts["boxes"].as_subclass(Tensor).clone()
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, self.size)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, self.size)
                present = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
            out["boxes"], out["labels"] = boxes[present], labels[present]
            if "instances" in parts:
                out["instances"] = instances
        elif "instances" in parts:
            out["instances"] = parts["instances"].as_subclass(Tensor)
        return out


class Collate:
    """Samples -> a batch (after the per-sample transform); ``keys`` say what the task needs."""

    def __init__(self, transform: DenseTransform, masks: bool, boxes: bool) -> None:
        self.transform, self.masks, self.boxes = transform, masks, boxes

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.boxes:  # segmentation: no boxes or instance masks to carry through the transform
            samples = [{k: v for k, v in s.items() if k not in ("boxes", "instances", "labels")} for s in samples]
        with single_thread():
            samples = [self.transform(s) for s in samples]
        batch: dict[str, Any] = {
            "images": torch.stack([s["image"] for s in samples]),
            "index": torch.tensor([s["index"] for s in samples]),
            "orig_size": torch.stack([s["orig_size"] for s in samples]),
        }
        if self.masks and all("mask" in s for s in samples):
            batch["masks"] = torch.stack([s["mask"] for s in samples]).long()
        if self.boxes and all("boxes" in s for s in samples):
            batch["boxes"] = [s["boxes"] for s in samples]
            batch["labels"] = [s["labels"] for s in samples]
        return batch


# --- DataModules ----------------------------------------------------------------------------------------


class _DenseDataModule(ResumableDataModule):
    """What the segmentation and detection DataModules share (see their docstrings)."""

    task: str = ""  # "segmentation" | "detection"

    def __init__(
        self,
        dataset: str = "scenes",
        data_dir: str = "data/fashion_mnist",
        image_size: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        seed: int = 0,
        scene_seed: int = 0,
        num_train_scenes: int = 200_000,
        num_val_scenes: int = 1000,
        num_test_scenes: int = 1000,
        item_size: tuple[int, int] = (16, 40),
        items: tuple[int, int] = (1, 6),
        min_visible: float = 0.5,
        channels: int = 1,
        hflip: float = 0.5,
        crop_scale: tuple[float, float] | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        class_names: list[str] | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        image_root: str | None = None,
        image_key: str = "image",
        mask_key: str = "annotation",
        objects_key: str = "objects",
        bbox_format: str = "xywh",
        predict_path: str | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.dataset, self.data_dir = dataset, Path(data_dir)
        self.scene_seed = scene_seed
        self.num_scenes = {"train": num_train_scenes, "val": num_val_scenes, "test": num_test_scenes}
        self.item_size, self.items, self.min_visible, self.channels = tuple(item_size), tuple(items), min_visible, channels
        self.hflip, self.crop_scale = hflip, tuple(crop_scale) if crop_scale else None
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.image_root = Path(image_root) if image_root else None
        self.image_key, self.mask_key, self.objects_key = image_key, mask_key, objects_key
        if bbox_format not in ("xywh", "xyxy"):
            raise UserError(f"--data.bbox_format={bbox_format!r}: use xywh (COCO) or xyxy")
        self.bbox_format = bbox_format
        self.predict_path = Path(predict_path) if predict_path else None
        if self.predict_path is not None and not self.predict_path.exists():
            raise UserError(f"--data.predict_path {self.predict_path} does not exist")
        self._user_names = list(class_names) if class_names else None
        self._splits: dict[str, Any] = {}
        self.category_ids: list[int] | None = None
        self._image_ids: dict[str, list[Any]] = {}
        self._inspect_source()
        self.image_size = image_size or self._native_size
        grey = self.in_chans == 1
        if mean is None:
            mean = SCENE_MEAN * self.in_chans if self.kind == "scenes" else ((0.5,) if grey else IMAGENET_MEAN)
        if std is None:
            std = SCENE_STD * self.in_chans if self.kind == "scenes" else ((0.5,) if grey else IMAGENET_STD)
        self.mean, self.std = tuple(mean), tuple(std)

    # --- what the data is -------------------------------------------------------------------------
    def _inspect_source(self) -> None:
        name = self.dataset
        if name == "scenes":
            self.kind, self.in_chans, self._native_size = "scenes", self.channels, 64
            for f in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
                if not (self.data_dir / f).is_file():
                    raise UserError(f"Fashion-MNIST file {self.data_dir / f} does not exist: set --data.data_dir to the folder holding it")
            self.object_names = list(FASHION_MNIST_CLASSES)
            return
        path = Path(name)
        if name.startswith("hf:") or (not path.exists() and not _looks_like_path(name)):
            self._inspect_hf(name.removeprefix("hf:"), local=False)
            return
        if not path.exists():
            raise UserError(f"data path {path} does not exist: pass 'scenes', {self._source_help()} or hf:<name>")
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()):
            self._inspect_hf(str(path), local=True)
            return
        self._inspect_files(path)

    def _source_help(self) -> str:
        raise NotImplementedError

    def _inspect_files(self, path: Path) -> None:
        raise NotImplementedError

    def _inspect_hf(self, name: str, local: bool) -> None:
        ds = load_splits(name if local else HubSpec.parse("hf:" + name, "--data.dataset", "hf:scene_parse_150"))
        require_train(ds, name)
        feats = ds["train"].features
        key = self.mask_key if self.task == "segmentation" else self.objects_key
        require_columns(feats, {self.image_key: "image_key", key: "mask_key" if self.task == "segmentation" else "objects_key"}, name)
        self.kind, self._hf = "hf", ds
        first = ds["train"][0][self.image_key]
        self.in_chans = 1 if first.mode in ("L", "1") else 3
        self._native_size = 224
        if self.task == "detection":
            cat = feats[self.objects_key]
            cat = cat.feature if hasattr(cat, "feature") else cat
            cat = cat.get("category") if isinstance(cat, dict) else None
            cat = getattr(cat, "feature", cat)
            if self._user_names:
                self.object_names = self._user_names
            elif hasattr(cat, "names"):
                self.object_names = list(cat.names)
            else:
                top = max((max(r["category"], default=-1) for r in ds["train"][self.objects_key]), default=-1)
                self.object_names = [str(i) for i in range(top + 1)]
        else:
            self.seg_names = self._user_names
            if self.seg_names is None:
                top = max(int(np.asarray(m).max(initial=0)) for m in ds["train"][: min(len(ds["train"]), 200)][self.mask_key])
                self.seg_names = [str(i) for i in range(top + 1)]

    # --- transforms and loaders ---------------------------------------------------------------------
    def _collate(self, train: bool) -> Collate:
        t = DenseTransform(self.image_size, self.mean, self.std, train, self.hflip, self.crop_scale)
        return Collate(t, masks=self.task == "segmentation", boxes=self.task == "detection")

    def _generator(self, split: str) -> SceneGenerator:
        images, labels = load_fashion_mnist(self.data_dir, "train" if split == "train" else "test")
        seed = {"train": 0, "val": 1, "test": 2}[split] + 1000 * self.scene_seed
        return SceneGenerator(images, labels, self._native_size if self.image_size is None else self.image_size, self.item_size,
                              self.items, self.min_visible, channels=self.channels, seed=seed)

    def _make(self, split: str) -> Dataset:
        if self.kind == "scenes":
            return SceneDataset(self._generator(split), self.num_scenes[split])
        return self._make_files(split)

    def _make_files(self, split: str) -> Dataset:
        raise NotImplementedError

    def _pick(self, split: str, items: list) -> list:
        """``split`` of a source with only some splits: a held-out part of train, or of everything."""
        if split in self._splits:
            return self._splits[split]
        if "all" in self._splits:
            everything = self._splits["all"]
            rest, test = split_indices(len(everything), 0.1, self.split_seed)
            train, val = split_indices(len(rest), self.val_fraction, self.split_seed + 1)
            pick = {"train": [rest[i] for i in train], "val": [rest[i] for i in val], "test": test}[split]
            return [everything[i] for i in pick]
        train_items = self._splits["train"]
        if split == "test" and "val" in self._splits:
            return self._splits["val"]
        train, val = split_indices(len(train_items), self.val_fraction, self.split_seed)
        return [train_items[i] for i in (train if split == "train" else val)]

    def setup(self, stage: str) -> None:
        setup_image_splits(self, stage, PredictFiles)

    @property
    def predict_ids(self) -> list[str]:
        """A name for each predicted image: its file, or its index in the test split."""
        ds = self.predict_set
        if isinstance(ds, PredictFiles):
            return [str(f) for f in ds.files]
        if isinstance(ds, CocoDataset):
            return [str(r["image_id"]) for r in ds.records]
        if isinstance(ds, MaskFolderDataset):
            return [str(p[0]) for p in ds.pairs]
        return [str(i) for i in range(len(ds))]

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.train_set, self._collate(True), collate=True)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.val_set, self._collate(False), collate=True)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set, self._collate(False), collate=True)

    def predict_dataloader(self) -> DataLoader:
        return self.eval_loader(self.predict_set, self._collate(False), collate=True)


class SegmentationDataModule(_DenseDataModule):
    """Images and per-pixel class masks for :class:`~tfm.tasks.SemanticSegmentation`.

    Args:
        dataset: ``scenes`` (generated from the bundled Fashion-MNIST: 11 classes, background
            first), a folder of images and mask PNGs (``images/`` + ``masks/``, per split
            ``<split>/images`` + ``<split>/masks``, or VOC's ``JPEGImages`` + ``SegmentationClass``
            + ``ImageSets/Segmentation/*.txt``; masks are palette or grey index PNGs; class names
            from ``class_names``, a ``classes.txt`` beside them, VOC's names for a VOC folder, or
            numbers), a ``datasets.save_to_disk`` folder or a Hugging Face name (``hf:<name>``;
            columns ``image_key`` and ``mask_key``).
        data_dir: where the Fashion-MNIST IDX files are (``scenes``).
        image_size: the side images (and masks) are resized to; default 64 for scenes, 224 else.
        batch_size, eval_batch_size, num_workers, seed: as every tfm DataModule.
        scene_seed: which scenes are generated (train, validation and test scenes differ).
        num_train_scenes, num_val_scenes, num_test_scenes: scenes per split.
        item_size: range of the side (pixels) of a pasted 28x28 item; ``items``: how many per scene.
        min_visible: an item less visible than this after occlusion is removed.
        channels: 1 (grey scenes) or 3 (colour scenes, e.g. for ImageNet weights).
        hflip: probability of a horizontal flip while training.
        crop_scale: ``[min, max]`` area of a random resized crop while training (None: off).
        mean, std: normalisation; default: measured for scenes, ImageNet's for RGB files.
        class_names: class names, background (id 0) first; ids outside ``0..K-1`` are an error
            except ``ignore_index`` (255, VOC's boundary colour).
        val_fraction, split_seed: a deterministic held-out split when the source has none.
        image_key, mask_key: Hugging Face columns.
        predict_path: an image file or folder to predict; default: the test split.
    """

    task = "segmentation"
    ignore_index = 255

    def _source_help(self) -> str:
        return "a folder of images/ and masks/"

    @property
    def class_names(self) -> list[str]:
        if self.kind == "scenes":
            return ["background", *self.object_names]
        return list(self.seg_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _inspect_files(self, path: Path) -> None:
        if not path.is_dir():
            raise UserError(f"data path {path} is a file: pass a folder of images/ and masks/ (or VOC's JPEGImages/ and SegmentationClass/)")
        self.kind = "folder"
        self._splits = scan_mask_folder(path)
        names = self._user_names
        if names is None and (path / "classes.txt").is_file():
            names = [ln.strip() for ln in (path / "classes.txt").read_text().splitlines() if ln.strip()]
        voc = (path / "SegmentationClass").is_dir()
        if names is None and voc:
            names = list(VOC_CLASSES)
        top, worst = -1, None
        for pairs in self._splits.values():
            for _, m in pairs:
                ids = torch.unique(read_mask(m))
                ids = ids[ids != self.ignore_index]
                if len(ids) and int(ids.max()) > top:
                    top, worst = int(ids.max()), m
        if names is not None and top >= len(names):
            raise UserError(f"mask {worst} has class id {top} but there are {len(names)} classes (ids 0..{len(names) - 1}, "
                            f"{self.ignore_index} = ignore): fix the mask or list every class in --data.class_names / classes.txt")
        self.seg_names = names or [str(i) for i in range(top + 1)]
        if len(self.seg_names) < 2:
            raise UserError(f"the masks in {path} hold only class 0: segmentation needs at least two classes")
        first = next(iter(self._splits.values()))[0][0]
        self.in_chans = image_channels(first)
        self._native_size = 224

    def _make_files(self, split: str) -> Dataset:
        mode = "L" if self.in_chans == 1 else "RGB"
        if self.kind == "folder":
            return MaskFolderDataset(self._pick(split, []), mode)
        return _hf_split(self, split, mode, mask_key=self.mask_key, objects_key=None)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.kind == "hf":  # ids above the classes: one clear line before training, not mid-epoch
            for name in ("train_set", "val_set", "test_set"):
                ds = getattr(self, name, None)
                if isinstance(ds, HFDenseDataset):
                    _check_hf_masks(ds, self.num_classes, self.ignore_index)


class DetectionDataModule(_DenseDataModule):
    """Images, boxes and class labels for :class:`~tfm.tasks.ObjectDetection`.

    Args:
        dataset: ``scenes`` (generated from the bundled Fashion-MNIST: 10 classes), a COCO
            detection JSON file (``instances_train.json``; its images beside it, in ``images/``
            or under ``image_root``; another split's file is found by name: ``*val*``/``*test*``
            in the same folder), a folder holding COCO files named ``train.json``/``val.json``/
            ``test.json`` (or ``annotations/instances_<split>*.json``), a ``datasets.save_to_disk``
            folder or a Hugging Face name (``hf:<name>``; columns ``image_key`` and ``objects_key``
            holding ``bbox`` in ``bbox_format`` and ``category``).
        image_root: where the images of a COCO file are, when not beside it.
        Other arguments: as :class:`SegmentationDataModule`.
    """

    task = "detection"

    def _source_help(self) -> str:
        return "a COCO JSON file or a folder of them"

    @property
    def class_names(self) -> list[str]:
        return list(self.object_names)

    @property
    def num_classes(self) -> int:
        return len(self.object_names)

    def _inspect_files(self, path: Path) -> None:
        files: dict[str, Path] = {}
        if path.is_file():
            files["train"] = path
            for other in sorted(path.parent.glob("*.json")):
                for split, key in (("val", "val"), ("test", "test")):
                    if other != path and key in other.stem and split not in files:
                        files[split] = other
        else:
            for split, names in (("train", ("train",)), ("val", ("val", "validation")), ("test", ("test",))):
                for n in names:
                    cands = [path / f"{n}.json", *sorted((path / "annotations").glob(f"instances_{n}*.json"))]
                    found = next((c for c in cands if c.is_file()), None)
                    if found is not None and split not in files:
                        files[split] = found
            if "train" not in files:
                raise UserError(f"{path} holds no train.json or annotations/instances_train*.json: pass a COCO file or such a folder")
        roots = [self.image_root] if self.image_root else []
        self.kind, names, ids = "coco", None, None
        for split, f in files.items():
            split_roots = [*roots, f.parent / split, f.parent.parent / split, *f.parent.parent.glob(f"{split}20*")]
            records, n, c = read_coco(f, split_roots)
            if names is None:
                names, ids = n, c
            elif c != ids:
                raise UserError(f"{f} has categories {c} but {files['train']} has {ids}: every split needs the same categories")
            self._splits[split] = records
        self.object_names = self._user_names or names
        if len(self.object_names) != len(ids):
            raise UserError(f"--data.class_names has {len(self.object_names)} names but the COCO file has {len(ids)} categories")
        self.category_ids = ids
        first = next(iter(self._splits.values()))[0]["file"]
        self.in_chans = image_channels(first)
        self._native_size = 224

    def _make_files(self, split: str) -> Dataset:
        mode = "L" if self.in_chans == 1 else "RGB"
        if self.kind == "coco":
            return CocoDataset(self._pick(split, []), mode)
        return _hf_split(self, split, mode, mask_key=None, objects_key=self.objects_key)

    @property
    def predict_image_ids(self) -> list[Any]:
        """The COCO ``image_id`` of each predicted image (indices for scenes and image files)."""
        ds = self.predict_set
        if isinstance(ds, CocoDataset):
            return [r["image_id"] for r in ds.records]
        return list(range(len(ds)))


def _hf_split(dm: _DenseDataModule, split: str, mode: str, mask_key: str | None, objects_key: str | None) -> Dataset:
    ds = dm._hf
    val_name = next((n for n in ("validation", "val", "valid") if n in ds), None)
    if split == "test" and "test" in ds:
        part = ds["test"]
    elif split == "test" and val_name is None:
        raise UserError(f"the dataset has no test or validation split (it has {', '.join(ds)})")
    elif split == "test" or (split == "val" and val_name is not None):
        part = ds[val_name]
    elif val_name is not None:
        part = ds["train"]
    else:
        train, val = split_indices(len(ds["train"]), dm.val_fraction, dm.split_seed)
        part = ds["train"].select(train if split == "train" else val)
    return HFDenseDataset(part, mode, dm.image_key, mask_key, objects_key, dm.bbox_format)


def _check_hf_masks(ds: HFDenseDataset, num_classes: int, ignore_index: int) -> None:
    for i, m in enumerate(ds.ds[ds.mask_key]):
        arr = np.asarray(m)
        bad = arr[(arr >= num_classes) & (arr != ignore_index)]
        if bad.size:
            raise UserError(f"mask of row {i} has class id {int(bad.max())} but there are {num_classes} classes "
                            f"(ids 0..{num_classes - 1}, {ignore_index} = ignore): set --data.class_names")
