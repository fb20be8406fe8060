"""Detection and segmentation data: generated Fashion-MNIST scenes (:mod:`tfm.data.synthetic.scenes`), COCO detection
JSON, image + mask-PNG folders (VOC-style palette or index PNGs) and Hugging Face datasets.

Samples are dicts: ``image`` uint8 ``(C, H, W)``; where known ``mask`` (semantic ``(H, W)``: 0 background, ``k + 1``
class ``k``, ``ignore_index`` not scored), ``instances`` (``j``: the ``j``-th object), ``boxes`` float ``(n, 4)`` xyxy
pixels and ``labels`` ``(n,)`` classes ``0..K-1``. Batches: ``images`` ``(B, C, H, W)`` normalised, ``masks``
``(B, H, W)`` long, ``boxes``/``labels`` lists, ``index`` (the position in the split), ``orig_size`` ``(B, 2)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import UserError
from ..nn.dense import masks_to_boxes, single_thread
from .images import (
    FASHION_MNIST_CLASSES,
    SPLIT_DIRS,
    ImageSource,
    Rows,
    image_channels,
    image_files,
    image_sizes,
    load_fashion_mnist,
    read_image,
)
from .synthetic.scenes import SCENE_MEAN, SCENE_STD, SceneGenerator

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]


def read_coco(path: str | Path, image_roots: Sequence[Path] = ()) -> tuple[list[dict[str, Any]], list[str], list[int]]:
    """A COCO detection file: records ``{"file", "image_id", "width", "height", "boxes" (n, 4) xyxy, "labels" (n,)}``
    (labels ``0..K-1`` in the order of the sorted category ids; crowd annotations left out, images without any kept),
    the class names and the category ids."""
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
        raise UserError(f"COCO annotation file {path} has no images: it needs a non-empty 'images' list (and "
                        "'annotations', 'categories')")
    cats = sorted(data.get("categories") or [], key=lambda c: c["id"])
    if not cats:
        raise UserError(f"COCO annotation file {path} has no 'categories': list the classes as "
                        "{'id': 1, 'name': '...'}")
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    images = {im["id"]: {"file": im["file_name"], "image_id": im["id"], "width": int(im["width"]),
                         "height": int(im["height"]), "boxes": [], "labels": []} for im in data["images"]}
    for ann in data.get("annotations") or []:
        if ann.get("iscrowd", 0):
            continue
        rec, where = images.get(ann.get("image_id")), f"{path}: annotation {ann.get('id')}"
        if rec is None:
            raise UserError(f"{where} refers to image_id {ann.get('image_id')}, which is not in 'images'")
        if ann.get("category_id") not in cat_index:
            raise UserError(f"{where} has category_id {ann.get('category_id')}, not one of {sorted(cat_index)} in "
                            "'categories'")
        x, y, w, h = (float(v) for v in ann["bbox"])
        W, H = rec["width"], rec["height"]
        if w <= 0 or h <= 0 or x < -1 or y < -1 or x + w > W + 1 or y + h > H + 1:  # a pixel of tolerance
            raise UserError(f"{where} of image {rec['file']} ({W}x{H}) has box [x, y, w, h] = {[x, y, w, h]}, outside "
                            "the image or empty: boxes must lie within 0..width, 0..height")
        rec["boxes"].append([max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)])
        rec["labels"].append(cat_index[ann["category_id"]])
    roots = [path.parent, path.parent / "images", path.parent.parent / "images", *map(Path, image_roots)]
    for rec in images.values():
        name, rec["file"] = rec["file"], next((r / rec["file"] for r in roots if (r / rec["file"]).is_file()), None)
        if rec["file"] is None:
            raise UserError(f"{path}: image file {name} was found in none of {', '.join(map(str, roots))}: set "
                            "--data.image_root")
        rec["boxes"] = torch.tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4)
        rec["labels"] = torch.tensor(rec["labels"], dtype=torch.long)
    return list(images.values()), [str(c.get("name", c["id"])) for c in cats], [c["id"] for c in cats]


def read_mask(path: Path) -> Tensor:
    """A mask PNG of class ids, ``(H, W)`` uint8: a palette PNG (VOC: the palette index is the class) or a grey one."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L", "I", "I;16", "1"):
            raise UserError(f"mask {path} is a {im.mode} image: masks must be palette (VOC-style) or grey index PNGs "
                            "of class ids")
        arr = np.asarray(im)
    if arr.max(initial=0) > 255:
        raise UserError(f"mask {path} has class id {int(arr.max())}: ids must be 0..255")
    return torch.from_numpy(arr.astype(np.uint8))


def scan_mask_folder(folder: Path) -> dict[str, list[dict[str, Path]]]:
    """Image/mask records (``file``, ``mask``) per split: VOC (``JPEGImages/``, ``SegmentationClass/``,
    ``ImageSets/Segmentation/<split>.txt``), ``<split>/images`` + ``<split>/masks`` or ``images/`` + ``masks/`` (one
    pool: ``all``); a mask is the PNG of its image's stem and has its size."""

    def pairs(img_dir: Path, mask_dir: Path, stems: list[str] | None = None) -> list[dict[str, Path]]:
        masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
        files = image_files(img_dir, check=False)  # checked below with their masks, one header read each
        if stems is not None:
            by_stem = {p.stem: p for p in files}
            missing = [s for s in stems if s not in by_stem]
            if missing:
                raise UserError(f"{img_dir} lacks the images {missing[:3]} listed in the split file")
            files = [by_stem[s] for s in stems]
        out = [{"file": f, "mask": masks[f.stem]} for f in files if f.stem in masks]
        if not out:
            raise UserError(f"no image in {img_dir} has a mask PNG of the same name in {mask_dir}")
        sizes = image_sizes([p for r in out for p in (r["file"], r["mask"])])
        for r, (iw, ih), (mw, mh) in zip(out, sizes[::2], sizes[1::2]):
            if (iw, ih) != (mw, mh):
                raise UserError(f"mask {r['mask']} is {mw}x{mh} but its image {r['file']} is {iw}x{ih}: a mask must "
                                "have its image's size")
        return out

    images, masks, sets = folder / "JPEGImages", folder / "SegmentationClass", folder / "ImageSets" / "Segmentation"
    if images.is_dir() and masks.is_dir():
        splits = {split: pairs(images, masks, (sets / f"{name}.txt").read_text().split())
                  for split, name in (("train", "train"), ("validation", "val"), ("test", "test"))
                  if (sets / f"{name}.txt").is_file()}
        splits = splits or {"all": pairs(images, masks)}
    else:
        splits = {}
        for split, name in SPLIT_DIRS:
            if split not in splits and (folder / name / "images").is_dir() and (folder / name / "masks").is_dir():
                splits[split] = pairs(folder / name / "images", folder / name / "masks")
        if not splits and (folder / "images").is_dir() and (folder / "masks").is_dir():
            splits["all"] = pairs(folder / "images", folder / "masks")
    if not splits:
        raise UserError(f"{folder} is not a segmentation folder: expected images/ + masks/, <split>/images + "
                        "<split>/masks, or VOC's JPEGImages/ + SegmentationClass/")
    if "train" not in splits and "all" not in splits:
        raise UserError(f"{folder} has no training split (it has {', '.join(splits)}): add train/images + train/masks "
                        "(VOC: ImageSets/Segmentation/train.txt)")
    return splits


def file_sample(mode: str, row: dict[str, Any]) -> dict[str, Any]:
    """A record of files (``file``; ``mask`` or ``boxes`` and ``labels`` where known) read as a sample."""
    out = {"image": read_image(row["file"], mode)}
    if "mask" in row:
        out["mask"] = read_mask(row["mask"])
    if "boxes" in row:
        out["boxes"], out["labels"] = row["boxes"].clone(), row["labels"].clone()
    return out


def hf_sample(mode: str, image_key: str, mask_key: str | None, objects_key: str | None, bbox_format: str,
              row: dict[str, Any]) -> dict[str, Any]:
    """A Hugging Face row as a sample: the image and a mask column, or an objects column of ``bbox`` (``bbox_format``
    xywh or xyxy) and ``category``."""
    out: dict[str, Any] = {"image": v2.functional.pil_to_tensor(row[image_key].convert(mode))}
    if mask_key:
        out["mask"] = torch.from_numpy(np.asarray(row[mask_key]).astype(np.uint8))
    if objects_key:
        boxes = torch.tensor(row[objects_key]["bbox"], dtype=torch.float32).reshape(-1, 4)
        if bbox_format == "xywh":
            boxes[:, 2:] += boxes[:, :2]
        h, w = out["image"].shape[-2:]
        boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clamp(0, w), boxes[:, 1::2].clamp(0, h)
        out["boxes"], out["labels"] = boxes, torch.tensor(row[objects_key]["category"], dtype=torch.long).reshape(-1)
    return out


class DenseTransform:
    """A sample's image, masks and boxes transformed together (``orig_size``: its height, width before): ``train``, a
    random resized crop (``crop_scale``, when set) or a resize to ``size``, then a flip with probability ``hflip``;
    evaluation, the resize. Boxes are the tight boxes of the visible instances where there is an instance map, else
    clipped and dropped when empty. Randomness: torch's RNG, which :class:`~tfm.data.loading.SeededTransform` seeds."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], train: bool, hflip: float = 0.5,
                 crop_scale: tuple[float, float] | None = None) -> None:
        self.size, self.train = size, train
        if train and crop_scale:
            ops: list[Any] = [v2.RandomResizedCrop((size, size), scale=tuple(crop_scale), antialias=True)]
        else:
            ops = [v2.Resize((size, size), antialias=True)]
        if train and hflip:
            ops.append(v2.RandomHorizontalFlip(hflip))
        self.geometric = v2.Compose(ops)
        self.normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = sample["image"]
        h, w = image.shape[-2:]
        parts: dict[str, Any] = {"image": tv_tensors.Image(image)}
        parts.update({key: tv_tensors.Mask(sample[key]) for key in ("mask", "instances") if key in sample})
        if "boxes" in sample:
            parts["boxes"] = tv_tensors.BoundingBoxes(sample["boxes"], format="XYXY", canvas_size=(h, w))
        if (h, w) != (self.size, self.size) or self.train:
            parts = self.geometric(parts)
        parts = {k: v.as_subclass(Tensor) for k, v in parts.items()}
        out = {**sample, **parts, "orig_size": torch.tensor([h, w]), "image": self.normalize(parts["image"])}
        if "boxes" in parts:
            if "instances" in parts:
                boxes, present = masks_to_boxes(parts["instances"], len(sample["labels"]))
            else:
                boxes = parts["boxes"].clone()
                boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clamp(0, self.size), boxes[:, 1::2].clamp(0, self.size)
                present = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
            out["boxes"], out["labels"] = boxes[present], sample["labels"][present]
        return out


def collate(transform: DenseTransform, task: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples -> a batch, each transformed first; ``task`` says what it carries (masks or boxes)."""
    if task == "segmentation":  # no boxes or instance masks to carry through the transform
        samples = [{k: v for k, v in s.items() if k not in ("boxes", "instances", "labels")} for s in samples]
    with single_thread():
        samples = [transform(s) for s in samples]
    batch: dict[str, Any] = {"images": torch.stack([s["image"] for s in samples]),
                             "index": torch.tensor([s["index"] for s in samples]),
                             "orig_size": torch.stack([s["orig_size"] for s in samples])}
    if task == "segmentation" and all("mask" in s for s in samples):
        batch["masks"] = torch.stack([s["mask"] for s in samples]).long()
    if task == "detection" and all("boxes" in s for s in samples):
        batch["boxes"], batch["labels"] = [s["boxes"] for s in samples], [s["labels"] for s in samples]
    return batch


class _DenseDataModule(ImageSource):
    """What the segmentation and detection DataModules share (see their docstrings)."""

    task = ""  # "segmentation" | "detection"
    builtin, example, hf_test = "scenes", "hf:scene_parse_150", ("validation",)

    def __init__(self, dataset: str = "scenes", data_dir: str = "data/fashion_mnist", image_size: int | None = None,
                 batch_size: int = 32, eval_batch_size: int | None = None, num_workers: int | None = None,
                 seed: int = 0, scene_seed: int = 0, num_train_scenes: int = 200_000, num_val_scenes: int = 1000,
                 num_test_scenes: int = 1000, item_size: tuple[int, int] = (16, 40), items: tuple[int, int] = (1, 6),
                 min_visible: float = 0.5, channels: int = 1, hflip: float = 0.5,
                 crop_scale: tuple[float, float] | None = None, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, class_names: list[str] | None = None, val_fraction: float = 0.1,
                 split_seed: int = 0, image_root: str | None = None, image_key: str = "image",
                 mask_key: str = "annotation", objects_key: str = "objects", bbox_format: str = "xywh",
                 predict_path: str | None = None) -> None:
        if bbox_format not in ("xywh", "xyxy"):
            raise UserError(f"--data.bbox_format={bbox_format!r}: use xywh (COCO) or xyxy")
        super().__init__(dataset, data_dir, batch_size, eval_batch_size, num_workers, seed, val_fraction, split_seed,
                         image_key, predict_path)
        self.scene_seed, self.channels = scene_seed, channels
        self.num_scenes = {"train": num_train_scenes, "val": num_val_scenes, "test": num_test_scenes}
        self.item_size, self.items, self.min_visible = tuple(item_size), tuple(items), min_visible
        self.hflip, self.crop_scale = hflip, tuple(crop_scale) if crop_scale else None
        self.image_root = Path(image_root) if image_root else None
        self.mask_key, self.objects_key, self.bbox_format = mask_key, objects_key, bbox_format
        self.class_names = list(class_names) if class_names else None
        self.category_ids: list[int] | None = None
        seg = self.task == "segmentation"
        path = self._open({image_key: "image_key", **({mask_key: "mask_key"} if seg else {objects_key: "objects_key"})})
        if self.kind == self.builtin:
            self.in_chans, self.class_names = channels, (["background"] if seg else []) + FASHION_MNIST_CLASSES
        elif path is not None:
            self._scan(path)
            self.in_chans = image_channels(next(iter(self._splits.values()))[0]["file"])
        else:
            self.class_names = self.class_names or self._hub_names()
        self._native_size = 64 if self.kind == self.builtin else 224
        self._size(image_size, mean, std, (SCENE_MEAN * self.in_chans, SCENE_STD * self.in_chans))

    def _generator(self, split: str) -> SceneGenerator:
        images, labels = load_fashion_mnist(self.data_dir, "train" if split == "train" else "test")
        seed = {"train": 0, "val": 1, "test": 2}[split] + 1000 * self.scene_seed
        return SceneGenerator(images, labels, self.image_size, self.item_size, self.items, self.min_visible,
                              channels=self.channels, seed=seed)

    def _make(self, split: str) -> Dataset:
        if self.kind == self.builtin:
            return Rows(range(self.num_scenes[split]), self._generator(split))
        if self.kind == "hf":
            seg = self.task == "segmentation"
            read = partial(hf_sample, self.mode, self.image_key, self.mask_key if seg else None,
                           None if seg else self.objects_key, self.bbox_format)
            return Rows(self._pick(split), read)
        name = itemgetter("image_id" if self.kind == "coco" else "file")
        return Rows(self._pick(split), partial(file_sample, self.mode), name)

    def _files(self, files: list[Path]) -> Dataset:
        return Rows([{"file": f} for f in files], partial(file_sample, self.mode), itemgetter("file"))

    def _collate(self, train: bool) -> Any:
        transform = DenseTransform(self.image_size, self.mean, self.std, train, self.hflip, self.crop_scale)
        return partial(collate, transform, self.task)

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.train_set, self._collate(True), collate=True)

    def _eval_loader(self, ds: Dataset) -> DataLoader:
        return self.eval_loader(ds, self._collate(False), collate=True)


class SegmentationDataModule(_DenseDataModule):
    """Images and per-pixel class masks for :class:`~tfm.tasks.SemanticSegmentation`.

    Args:
        dataset: ``scenes`` (generated from the bundled Fashion-MNIST: 11 classes, background first), a folder of
            images and mask PNGs (``images/`` + ``masks/``, per split ``<split>/images`` + ``<split>/masks``, or VOC's
            ``JPEGImages`` + ``SegmentationClass`` + ``ImageSets/Segmentation/*.txt``; palette or grey index PNGs;
            class names from ``class_names``, a ``classes.txt`` beside them, VOC's for a VOC folder, or numbers), a
            ``datasets.save_to_disk`` folder or a Hugging Face name (``hf:<name>``; columns ``image_key`` and
            ``mask_key``).
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
        class_names: class names, background (id 0) first; ids outside ``0..K-1`` are an error except
            ``ignore_index`` (255, VOC's boundary colour).
        val_fraction, split_seed: a deterministic held-out split when the source has none.
        image_key, mask_key: Hugging Face columns.
        predict_path: an image file or folder to predict; default: the test split.
    """

    task = "segmentation"
    ignore_index = 255
    hint = "'scenes', a folder of images/ and masks/ or hf:<name>"

    def _scan(self, path: Path) -> None:
        if not path.is_dir():
            raise UserError(f"data path {path} is a file: pass a folder of images/ and masks/ (or VOC's JPEGImages/ "
                            "and SegmentationClass/)")
        self.kind, self._splits, names = "folder", scan_mask_folder(path), self.class_names
        if names is None and (path / "classes.txt").is_file():
            names = [ln.strip() for ln in (path / "classes.txt").read_text().splitlines() if ln.strip()]
        if names is None and (path / "SegmentationClass").is_dir():
            names = list(VOC_CLASSES)
        masks = [r["mask"] for rows in self._splits.values() for r in rows]
        tops = [max(set(read_mask(m).unique().tolist()) - {self.ignore_index}, default=-1) for m in masks]
        top, worst = max(tops), masks[tops.index(max(tops))]
        if names is not None and top >= len(names):
            raise UserError(f"mask {worst} has class id {top} but there are {len(names)} classes (ids "
                            f"0..{len(names) - 1}, {self.ignore_index} = ignore): fix the mask or list every class in "
                            "--data.class_names / classes.txt")
        self.class_names = names or [str(i) for i in range(top + 1)]
        if len(self.class_names) < 2:
            raise UserError(f"the masks in {path} hold only class 0: segmentation needs at least two classes")

    def _hub_names(self) -> list[str]:
        train = self._splits["train"]
        top = max(int(np.asarray(m).max(initial=0)) for m in train[: min(len(train), 200)][self.mask_key])
        return [str(i) for i in range(top + 1)]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # Hugging Face masks with ids above the classes: one clear line before training, not mid-epoch
        sets = [getattr(self, n) for n in ("train_set", "val_set", "test_set") if hasattr(self, n)]
        for ds in sets if self.kind == "hf" else []:
            for i, m in enumerate(ds.rows[self.mask_key]):
                arr = np.asarray(m)
                bad = arr[(arr >= self.num_classes) & (arr != self.ignore_index)]
                if bad.size:
                    raise UserError(f"mask of row {i} has class id {int(bad.max())} but there are {self.num_classes} "
                                    f"classes (ids 0..{self.num_classes - 1}, {self.ignore_index} = ignore): set "
                                    "--data.class_names")


class DetectionDataModule(_DenseDataModule):
    """Images, boxes and class labels for :class:`~tfm.tasks.ObjectDetection`.

    Args:
        dataset: ``scenes`` (generated from the bundled Fashion-MNIST: 10 classes), a COCO detection JSON file
            (``instances_train.json``; its images beside it, in ``images/`` or under ``image_root``; another split's
            file is found by name: ``*val*``/``*test*`` in the same folder), a folder holding COCO files named
            ``train.json``/``val.json``/``test.json`` (or ``annotations/instances_<split>*.json``), a
            ``datasets.save_to_disk`` folder or a Hugging Face name (``hf:<name>``; columns ``image_key`` and
            ``objects_key`` holding ``bbox`` in ``bbox_format`` and ``category``).
        image_root: where the images of a COCO file are, when not beside it.
        Other arguments: as :class:`SegmentationDataModule`.
    """

    task = "detection"
    hint = "'scenes', a COCO JSON file or a folder of them or hf:<name>"

    def _scan(self, path: Path) -> None:
        files: dict[str, Path] = {}
        if path.is_file():  # the other splits' files beside it, by name
            files["train"] = path
            for other in sorted(path.parent.glob("*.json")):
                for split, key in (("validation", "val"), ("test", "test")):
                    if other != path and key in other.stem and split not in files:
                        files[split] = other
        for split, name in SPLIT_DIRS if path.is_dir() else ():
            found = [path / f"{name}.json", *sorted((path / "annotations").glob(f"instances_{name}*.json"))]
            if split not in files and any(c.is_file() for c in found):
                files[split] = next(c for c in found if c.is_file())
        if "train" not in files:
            raise UserError(f"{path} holds no train.json or annotations/instances_train*.json: pass a COCO file or "
                            "such a folder")
        self.kind, ids = "coco", None
        for split, f in files.items():
            d = "val" if split == "validation" else split  # images in val/, val2017/ ...
            roots = [*([self.image_root] if self.image_root else []), f.parent / d, f.parent.parent / d,
                     *f.parent.parent.glob(f"{d}20*")]
            self._splits[split], names, cats = read_coco(f, roots)
            if ids is None:
                self.class_names, ids = self.class_names or names, cats
            elif cats != ids:
                raise UserError(f"{f} has categories {cats} but {files['train']} has {ids}: every split needs the same "
                                "categories")
        if len(self.class_names) != len(ids):
            raise UserError(f"--data.class_names has {len(self.class_names)} names but the COCO file has {len(ids)} "
                            "categories")
        self.category_ids = ids

    def _hub_names(self) -> list[str]:
        objects = self._splits["train"].features[self.objects_key]
        objects = getattr(objects, "feature", objects)  # a list of dicts: their features
        category = objects.get("category") if isinstance(objects, dict) else None
        category = getattr(category, "feature", category)
        if hasattr(category, "names"):
            return list(category.names)
        top = max((max(r["category"], default=-1) for r in self._splits["train"][self.objects_key]), default=-1)
        return [str(i) for i in range(top + 1)]

    @property
    def predict_image_ids(self) -> list[Any]:
        """The COCO ``image_id`` of each predicted image (indices for scenes and image files)."""
        ds = self.predict_set
        return ds.names if self.kind == "coco" and self.predict_path is None else list(range(len(ds)))
