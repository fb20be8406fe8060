"""Image classification data (bundled Fashion-MNIST, image folders, Hugging Face datasets) and what every image
DataModule shares: image files, sources and splits."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2

from ..errors import UserError
from .loading import ResumableDataModule
from .sources import STAGE_SPLITS, HubSpec, cpu_count, is_saved_dataset, load_splits, require_columns, require_train

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_DIRS = (("train", "train"), ("validation", "val"), ("validation", "validation"), ("test", "test"))  # split, dir


def read_idx(path: str | Path) -> Tensor:
    """An IDX file (the MNIST format), gzipped or not, as a uint8 tensor."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file (the MNIST format)")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(shape)


def fashion_mnist_files(root: str | Path, split: str) -> tuple[Path, Path]:
    """The images and labels IDX files of the ``train`` or ``test`` split, checked to exist."""
    prefix = {"train": "train", "test": "t10k"}[split]
    files = Path(root) / f"{prefix}-images-idx3-ubyte.gz", Path(root) / f"{prefix}-labels-idx1-ubyte.gz"
    for f in files:
        if not f.is_file():
            raise UserError(f"Fashion-MNIST file {f} does not exist: set --data.data_dir to the folder holding it")
    return files


def load_fashion_mnist(root: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """Images ``(N, 1, 28, 28)`` uint8 and labels ``(N,)`` of the ``train`` or ``test`` split."""
    images, labels = fashion_mnist_files(root, split)
    return read_idx(images).unsqueeze(1), read_idx(labels).long()


def image_files(folder: Path, check: bool = True) -> list[Path]:
    """The image files under ``folder``; ``check``: each must be an image (:func:`image_sizes`)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if check:
        image_sizes(files)
    return files


def image_sizes(files: Sequence[Path]) -> list[tuple[int, int]]:
    """Each file's ``(width, height)`` from its header (threads: file I/O), so that a file PIL cannot read is named
    at scan time, not mid-training."""

    def size(path: Path) -> tuple[int, int]:
        try:
            with Image.open(path) as im:
                return im.size
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"{path} is not an image PIL can read ({type(e).__name__}): remove it or replace it with "
                            "the real image") from None

    with ThreadPoolExecutor(max_workers=min(16, cpu_count() * 2)) as pool:
        return list(pool.map(size, files, chunksize=256))


def read_image(path: Path, mode: str) -> Tensor:
    """An image file as uint8 ``(C, H, W)``; one that cannot be decoded (a truncated JPEG) is named."""
    try:
        with Image.open(path) as im:
            return v2.functional.pil_to_tensor(im.convert(mode))
    except OSError as e:
        raise UserError(f"image {path} cannot be decoded ({e}): it is truncated or corrupted; remove it or replace "
                        "it") from None


def image_channels(path: Path) -> int:
    """1 for a grey image file (modes L, 1, I, I;16), else 3."""
    with Image.open(path) as im:
        return 1 if im.mode in ("L", "1", "I;16", "I") else 3


def scan_image_folder(folder: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """``folder/<class>/<image>`` (torchvision ``ImageFolder`` layout) -> ``(file, label)`` rows and the classes."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"image folder {folder} has no class sub-folders: expected {folder}/<class name>/<image files>")
    rows = [(f, i) for i, c in enumerate(classes) for f in image_files(folder / c)]
    if not rows:
        raise UserError(f"image folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    return rows, classes


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic ``(rest, held_out)`` split of ``range(n)``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = round(n * fraction)
    return sorted(perm[k:]), sorted(perm[:k])


def take(part: Any, indices: list[int]) -> Any:
    """Rows ``indices`` of a list or of a ``datasets.Dataset``."""
    return part.select(indices) if hasattr(part, "select") else [part[i] for i in indices]


def pick_split(parts: Mapping[str, Any], split: str, fraction: float, seed: int,
               test: Sequence[str] = ("validation", "held-out")) -> Any:
    """``split`` (train, val or test) of a source's ``parts``: train, validation and test splits, or ``all`` (one
    pool, 80/10/10). Without a validation split, val is a held-out ``fraction`` of train; a missing test split is the
    first of ``test`` there (``held-out``: that part). Deterministic for ``seed``."""
    if "train" not in parts:
        rest, held_out = split_indices(len(parts["all"]), 0.1, seed)
        train, val = split_indices(len(rest), fraction, seed + 1)
        picked = held_out if split == "test" else [rest[i] for i in (train if split == "train" else val)]
        return take(parts["all"], picked)
    key = "validation" if split == "val" else split
    if key == "test" and key not in parts:
        key = next((k for k in test if k in parts or k == "held-out"), "")
        if not key:
            raise UserError(f"the dataset has no test {'or validation ' if 'validation' in test else ''}split (it has "
                            f"{', '.join(parts)})")
    if key in parts and (key != "train" or "validation" in parts):
        return parts[key]
    train, val = split_indices(len(parts["train"]), fraction, seed)
    return take(parts["train"], train if key == "train" else val)


class Rows(Dataset):
    """Item ``i`` is ``read(rows[i])``, a dict sample with its position as ``index``; ``name(row)`` names a row in
    predictions (its file, COCO image id), else its position does."""

    def __init__(self, rows: Sequence[Any], read: Callable[[Any], Any], name: Callable[[Any], Any] | None = None
                 ) -> None:
        self.rows, self.read, self.name = rows, read, name

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        sample = self.read(self.rows[i])
        return {"index": i, **sample} if isinstance(sample, dict) else sample

    @property
    def names(self) -> list[Any]:
        return [self.name(r) for r in self.rows] if self.name else list(range(len(self)))


def _labelled(mode: str, keys: tuple[str, str] | None, row: Any) -> tuple[Tensor, int]:
    """A ``(file, label)`` row, or a Hugging Face row of ``keys`` (image, label), as ``(image, label)``."""
    if keys is None:
        return read_image(row[0], mode), row[1]
    return v2.functional.pil_to_tensor(row[keys[0]].convert(mode)), int(row[keys[1]])


class BatchCropFlip:
    """Random crop after zero padding and horizontal flip, drawn per image, on a whole uint8 batch ``(B, C, H, W)``
    (the per-image torchvision ops, vectorised for small in-memory images)."""

    def __init__(self, size: int, padding: int, flip_p: float) -> None:
        self.size, self.padding, self.flip_p = size, padding, flip_p

    def __call__(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p, s = self.padding, self.size
        if p:
            x = torch.nn.functional.pad(x, (p, p, p, p))
        rows = torch.randint(0, h + 2 * p - s + 1, (b,))[:, None] + torch.arange(s)
        cols = torch.randint(0, w + 2 * p - s + 1, (b,))[:, None] + torch.arange(s)
        if self.flip_p:
            cols = torch.where((torch.rand(b) < self.flip_p)[:, None], cols.flip(1), cols)
        return x[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows[:, None, :, None],
                 cols[:, None, None, :]]


class ImageSource(ResumableDataModule):
    """What the image DataModules share: the source (:meth:`_open`), its ``_splits`` (:func:`pick_split`), size and
    normalisation, ``setup``, the evaluation loaders and the names of predicted images. Subclasses make a split
    (``_make``), a dataset of image files to predict (``_files``) and an evaluation loader (``_eval_loader``)."""

    builtin = ""  # the bundled source's name
    hint = ""  # what a dataset may be, for an error
    example = ""  # a Hugging Face dataset, for an error
    hf_test: tuple[str, ...] = ()  # what a Hugging Face dataset's missing test split is (see pick_split)

    def __init__(self, dataset: str, data_dir: str, batch_size: int, eval_batch_size: int | None,
                 num_workers: int | None, seed: int, val_fraction: float, split_seed: int, image_key: str,
                 predict_path: str | None) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.dataset, self.data_dir, self.image_key = dataset, Path(data_dir), image_key
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.predict_path = Path(predict_path) if predict_path else None
        if self.predict_path is not None and not self.predict_path.exists():
            raise UserError(f"--data.predict_path {self.predict_path} does not exist")
        self._splits: Any = {}  # split -> rows (a DatasetDict for "hf")

    def _open(self, needed: dict[str, str]) -> Path | None:
        """Sets ``kind``: the builtin dataset (its files checked), ``hf`` (a hub name or ``save_to_disk`` folder with a
        train split and the ``needed`` columns, in ``_splits``) or ``files``: an existing path, returned."""
        name = self.dataset
        path, label = Path(name), name.removeprefix("hf:")
        if name == self.builtin:
            self.kind = name
            for split in ("train", "test"):
                fashion_mnist_files(self.data_dir, split)
            return None
        if name.startswith("hf:") or (not path.exists() and not _looks_like_path(name)):
            ds = load_splits(HubSpec.parse("hf:" + label, "--data.dataset", self.example))
        elif not path.exists():
            raise UserError(f"data path {path} does not exist: pass {self.hint}")
        elif not is_saved_dataset(path):
            self.kind = "files"
            return path
        else:
            ds, label = load_splits(path), str(path)
        require_train(ds, label)
        require_columns(ds["train"].features, needed, label)
        self.kind, self._splits = "hf", ds
        self.in_chans = 1 if ds["train"][0][self.image_key].mode in ("L", "1") else 3
        return None

    def _size(self, image_size: int | None, mean: Sequence[float] | None, std: Sequence[float] | None,
              own: tuple[Sequence[float], Sequence[float]]) -> None:
        """Image size (default: native) and normalisation: given, ``own`` (builtin data), 0.5 (grey) or ImageNet's."""
        self.image_size = image_size or self._native_size
        grey, builtin = self.in_chans == 1, self.kind == self.builtin
        self.mean = tuple(mean or (own[0] if builtin else (0.5,) if grey else IMAGENET_MEAN))
        self.std = tuple(std or (own[1] if builtin else (0.5,) if grey else IMAGENET_STD))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def mode(self) -> str:
        return "L" if self.in_chans == 1 else "RGB"

    def _pick(self, split: str) -> Any:
        test = self.hf_test if self.kind == "hf" else ("validation", "held-out")
        return pick_split(self._splits, split, self.val_fraction, self.split_seed, test)

    def setup(self, stage: str) -> None:
        for split in STAGE_SPLITS.get(stage, ()):
            split = "val" if split == "validation" else split
            setattr(self, f"{split}_set", self._predict_set() if split == "predict" else self._make(split))

    def _predict_set(self) -> Dataset:
        if self.predict_path is None:
            return self._make("test")
        files = [self.predict_path] if self.predict_path.is_file() else image_files(self.predict_path)
        if not files:
            raise UserError(f"--data.predict_path {self.predict_path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return self._files(files)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.predict_set)

    @property
    def predict_ids(self) -> list[str]:
        """A name for each predicted image: its file (COCO: its image id), or its index in the test split."""
        ds = self.predict_set
        return [str(n) for n in ds.names] if isinstance(ds, Rows) else [str(i) for i in range(len(ds))]


class ImageDataModule(ImageSource):
    """Images and class labels for :class:`~tfm.tasks.ImageClassification`.

    Args:
        dataset: ``fashion_mnist`` (bundled in ``data/``), a folder in ``ImageFolder`` layout (with ``train``/``val``/
            ``test`` sub-folders, or one folder that is split), a ``datasets.save_to_disk`` folder, or a Hugging Face
            dataset name (``hf:cifar10``, or a name with no such local path).
        data_dir: where the bundled Fashion-MNIST IDX files are.
        image_size: size the model sees; default: the images' own (Fashion-MNIST 28), 224 for large images.
        batch_size: training batch size per device; ``eval_batch_size`` defaults to it.
        num_workers: DataLoader worker processes (default: none on a CPU, up to 8 on a GPU).
        seed: data order and augmentation seed (runs resume with exactly the same batches).
        val_fraction: part of train held out for validation where there is no validation split (seed: ``split_seed``).
        crop_padding: zero-padding of small images' random crop (default ``image_size // 8``; large: a resized crop).
        hflip: probability of a horizontal flip (0 where flips change the meaning).
        color_jitter: brightness/contrast/saturation jitter for RGB images (0 for none).
        rand_augment: a timm RandAugment spec such as ``rand-m9-mstd0.5``, or None.
        random_erasing: probability of timm-style random erasing, or 0.
        mean, std: normalisation; default: Fashion-MNIST's, 0.5 for grey images, ImageNet's for RGB.
        image_key, label_key: Hugging Face columns.
        predict_path: an image file or folder to predict; default: the test split.
    """

    builtin, example = "fashion_mnist", "hf:cifar10"
    hint = "an image folder, a saved dataset, 'fashion_mnist' or hf:<name>"

    def __init__(self, dataset: str = "fashion_mnist", data_dir: str = "data/fashion_mnist",
                 image_size: int | None = None, batch_size: int = 128, eval_batch_size: int | None = None,
                 num_workers: int | None = None, seed: int = 0, val_fraction: float = 0.1, split_seed: int = 0,
                 crop_padding: int | None = None, hflip: float = 0.5, color_jitter: float = 0.0,
                 rand_augment: str | None = None, random_erasing: float = 0.0, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, image_key: str = "image", label_key: str = "label",
                 predict_path: str | None = None) -> None:
        super().__init__(dataset, data_dir, batch_size, eval_batch_size, num_workers, seed, val_fraction, split_seed,
                         image_key, predict_path)
        self.label_key, self.hflip, self.color_jitter = label_key, hflip, color_jitter
        self.rand_augment, self.random_erasing = rand_augment, random_erasing
        path = self._open({image_key: "image_key", label_key: "label_key"})
        if self.kind == self.builtin:
            self.class_names, self.in_chans, self._native_size = list(FASHION_MNIST_CLASSES), 1, 28
        elif path is not None:
            self._scan(path)
        else:
            train, label = self._splits["train"], self._splits["train"].features[label_key]
            names = label.names if hasattr(label, "names") else [str(i) for i in range(max(train[label_key]) + 1)]
            self.class_names, side = list(names), max(train[0][image_key].size)
            self._native_size = 224 if side > 64 else side
        self._size(image_size, mean, std, (FASHION_MNIST_MEAN, FASHION_MNIST_STD))
        self.crop_padding = crop_padding if crop_padding is not None else self.image_size // 8

    def _scan(self, path: Path) -> None:
        if not path.is_dir():
            raise UserError(f"data path {path} is a file: pass a folder of <class>/<image> sub-folders")
        self.kind, train = "folder", path / "train"
        if not train.is_dir():
            self._splits["all"], self.class_names = scan_image_folder(path)
        else:
            self._splits["train"], self.class_names = scan_image_folder(train)
            for split, name in SPLIT_DIRS[1:]:
                if (path / name).is_dir() and split not in self._splits:
                    self._splits[split], classes = scan_image_folder(path / name)
                    if classes != self.class_names:
                        extra = sorted(set(classes) - set(self.class_names))
                        raise UserError(f"{path / name} has classes {extra or classes} that {train} lacks: every split "
                                        "needs the same class folders")
        self.in_chans, self._native_size = image_channels(next(iter(self._splits.values()))[0][0]), 224

    def train_transform(self) -> Callable:
        size, ops = self.image_size, []
        if self.rand_augment:
            # timm is slow to import: only with rand_augment
            from timm.data.auto_augment import rand_augment_transform

            fill = tuple(int(255 * m) for m in self.mean)
            augment = rand_augment_transform(self.rand_augment, {"img_mean": fill if len(fill) == 3 else fill[0]})
            ops += [v2.ToPILImage(), augment, v2.PILToTensor()]
        if size > 64:
            ops.append(v2.RandomResizedCrop(size, antialias=True))
        else:
            if self._native_size != size:
                ops.append(v2.Resize((size, size), antialias=True))
            if self.crop_padding:
                ops.append(v2.RandomCrop(size, padding=self.crop_padding))
        if self.hflip:
            ops.append(v2.RandomHorizontalFlip(self.hflip))
        if self.color_jitter and self.in_chans == 3:
            ops.append(v2.ColorJitter(self.color_jitter, self.color_jitter, self.color_jitter))
        ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        if self.random_erasing:
            ops.append(v2.RandomErasing(self.random_erasing, value=0))
        return v2.Compose(ops)

    def eval_transform(self) -> Callable:
        size = self.image_size
        if size > 64:
            resize = [v2.Resize(int(size / 0.875), antialias=True), v2.CenterCrop(size)]
        else:  # a no-op at the native size
            resize = [v2.Resize((size, size), antialias=True)]
        return v2.Compose([*resize, v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])

    def _make(self, split: str) -> Dataset:
        if self.kind == self.builtin:
            if split == "test":
                return TensorDataset(*load_fashion_mnist(self.data_dir, "test"))
            x, y = load_fashion_mnist(self.data_dir, "train")
            train, val = split_indices(len(y), self.val_fraction, self.split_seed)
            idx = torch.tensor(train if split == "train" else val)
            return TensorDataset(x[idx], y[idx])
        if self.kind == "hf":
            return Rows(self._pick(split), partial(_labelled, self.mode, (self.image_key, self.label_key)))
        return Rows(self._pick(split), partial(_labelled, self.mode, None), itemgetter(0))

    def _files(self, files: list[Path]) -> Dataset:
        return Rows([(f, -1) for f in files], partial(_labelled, self.mode, None), itemgetter(0))

    def train_dataloader(self) -> DataLoader:
        # in-memory images of one size, crop and flip only: a vectorised transform does what train_transform does
        if (self.kind == self.builtin and not self.rand_augment and not self.random_erasing
                and self.image_size == self._native_size):
            crop_flip = BatchCropFlip(self.image_size, self.crop_padding, self.hflip)
            batched = v2.Compose([crop_flip, v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])
            return self.train_loader(self.train_set, batched, batched=True)
        return self.train_loader(self.train_set, self.train_transform())

    def _eval_loader(self, ds: Dataset) -> DataLoader:  # in-memory images of one size: transformed as whole batches
        return self.eval_loader(ds, self.eval_transform(), batched=isinstance(ds, TensorDataset))


def _looks_like_path(name: str) -> bool:
    """A name meant as a local path (its first folder exists here, or it starts like one), not a hub name."""
    p = Path(name).expanduser()
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or (
        len(p.parts) > 1 and Path(p.parts[0]).exists())
