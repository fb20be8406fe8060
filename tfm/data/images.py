"""Image classification data: bundled Fashion-MNIST, image folders, Hugging Face datasets."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from ..errors import UserError
from .loading import ResumableDataModule
from .sources import HubSpec, load_splits, require_columns, require_train

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def read_idx(path: str | Path) -> Tensor:
    """An IDX file (the MNIST format), gzipped or not, as a uint8 tensor."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file (the MNIST format)")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(shape)


def load_fashion_mnist(root: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """Images ``(N, 1, 28, 28)`` uint8 and labels ``(N,)`` of the ``train`` or ``test`` split."""
    prefix = {"train": "train", "test": "t10k"}[split]
    root = Path(root)
    images, labels = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    for f in (images, labels):
        if not f.is_file():
            raise UserError(f"Fashion-MNIST file {f} does not exist: point --data.data_dir at the folder with the IDX files")
    return read_idx(images).unsqueeze(1), read_idx(labels).long()


class TensorImageDataset(Dataset):
    """Images held in memory as one uint8 tensor ``(N, C, H, W)``."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])


class FileImageDataset(Dataset):
    """Image files as uint8 tensors, with integer labels (-1 when unlabelled, for ``predict``)."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], mode: str) -> None:
        self.files, self.labels, self.mode = list(files), list(labels), mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return read_image(self.files[i], self.mode), self.labels[i]


class HFImageDataset(Dataset):
    """A split of a Hugging Face ``datasets`` image dataset, as uint8 tensors."""

    def __init__(self, ds: Any, image_key: str, label_key: str, mode: str) -> None:
        self.ds, self.image_key, self.label_key, self.mode = ds, image_key, label_key, mode

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        row = self.ds[i]
        return v2.functional.pil_to_tensor(row[self.image_key].convert(self.mode)), int(row[self.label_key])


class BatchCropFlip:
    """Random crop after zero padding, and horizontal flip, each drawn per image, on a whole
    uint8 batch ``(B, C, H, W)`` at once (the per-image torchvision ops, vectorised: the same
    augmentation at a fraction of the Python overhead for small in-memory images)."""

    def __init__(self, size: int, padding: int, flip_p: float) -> None:
        self.size, self.padding, self.flip_p = size, padding, flip_p

    def __call__(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p, s = self.padding, self.size
        if p:
            x = torch.nn.functional.pad(x, (p, p, p, p))
        oy = torch.randint(0, h + 2 * p - s + 1, (b,))
        ox = torch.randint(0, w + 2 * p - s + 1, (b,))
        rows = oy[:, None] + torch.arange(s)
        cols = ox[:, None] + torch.arange(s)
        if self.flip_p:
            flip = torch.rand(b) < self.flip_p
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        return x[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


def _image_files(folder: Path, check: bool = True) -> list[Path]:
    """The image files under ``folder``, each checked to be an image (see :func:`image_sizes`)
    unless the caller reads their headers itself (``check=False``)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if check:
        image_sizes(files)
    return files


def image_sizes(files: Sequence[Path]) -> list[tuple[int, int]]:
    """Each file's ``(width, height)`` from its header: a file that is not an image PIL reads is
    named at scan time, not in the middle of training (or never, by luck of the split). Only the
    headers are read (threads: the work is file I/O), so a folder the size of ImageNet costs seconds."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image, UnidentifiedImageError

    def size(path: Path) -> tuple[int, int]:
        try:
            with Image.open(path) as im:
                return im.size
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"{path} is not an image PIL can read ({type(e).__name__}): remove it or replace it with the real image") from None

    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(size, files, chunksize=256))


def read_image(path: Path, mode: str) -> Tensor:
    """An image file as a uint8 ``(C, H, W)`` tensor; a file that cannot be decoded (a truncated
    JPEG passes the header check) is named."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return v2.functional.pil_to_tensor(im.convert(mode))
    except OSError as e:
        raise UserError(f"image {path} cannot be decoded ({e}): it is truncated or corrupted; remove it or replace it") from None


def scan_image_folder(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """``folder/<class>/<image>`` (torchvision ``ImageFolder`` layout) -> files, labels, classes."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"image folder {folder} has no class sub-folders: expected {folder}/<class name>/<image files>")
    files, labels = [], []
    for i, c in enumerate(classes):
        found = _image_files(folder / c)
        files += found
        labels += [i] * len(found)
    if not files:
        raise UserError(f"image folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    return files, labels, classes


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic ``(rest, held_out)`` split of ``range(n)``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = int(round(n * fraction))
    return sorted(perm[k:]), sorted(perm[:k])


class ImageDataModule(ResumableDataModule):
    """Images and class labels for :class:`~tfm.tasks.ImageClassification`.

    Args:
        dataset: ``fashion_mnist`` (bundled in ``data/``), a folder in ``ImageFolder`` layout
            (with ``train``/``val``/``test`` sub-folders, or one folder that is split), a folder
            written by ``datasets.save_to_disk``, or a Hugging Face dataset name (``hf:cifar10``,
            or a name with no such local path).
        data_dir: where the bundled Fashion-MNIST IDX files are.
        image_size: size the model sees; default: the images' own size (Fashion-MNIST 28),
            224 for folders and HF datasets.
        batch_size: training batch size per device; ``eval_batch_size`` defaults to it.
        num_workers: DataLoader worker processes (default: none on a CPU, up to 8 on a GPU).
        seed: data order and augmentation seed (runs resume with exactly the same batches).
        val_fraction: part of the training data held out for validation when there is no
            validation split (deterministic for ``split_seed``).
        crop_padding: random crop after zero-padding by this many pixels (small images);
            default ``image_size // 8``. Large images get a random resized crop instead.
        hflip: probability of a horizontal flip (0 where flips change the meaning).
        color_jitter: brightness/contrast/saturation jitter for RGB images (0 for none).
        rand_augment: a timm RandAugment spec such as ``rand-m9-mstd0.5``, or None.
        random_erasing: probability of timm-style random erasing, or 0.
        predict_path: an image file or folder to predict; default: the test split.
    """

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        data_dir: str = "data/fashion_mnist",
        image_size: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        seed: int = 0,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        crop_padding: int | None = None,
        hflip: float = 0.5,
        color_jitter: float = 0.0,
        rand_augment: str | None = None,
        random_erasing: float = 0.0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        image_key: str = "image",
        label_key: str = "label",
        predict_path: str | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.dataset = dataset
        self.data_dir = Path(data_dir)
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.hflip, self.color_jitter, self.rand_augment = hflip, color_jitter, rand_augment
        self.random_erasing = random_erasing
        self.image_key, self.label_key = image_key, label_key
        self.predict_path = Path(predict_path) if predict_path else None
        if self.predict_path is not None and not self.predict_path.exists():
            raise UserError(f"--data.predict_path {self.predict_path} does not exist")
        self._splits: dict[str, Any] = {}
        self._inspect_source()
        self.image_size = image_size or self._native_size
        self.crop_padding = crop_padding if crop_padding is not None else self.image_size // 8
        grey = self.in_chans == 1
        self.mean = mean or (FASHION_MNIST_MEAN if self.kind == "fashion_mnist" else (0.5,) if grey else IMAGENET_MEAN)
        self.std = std or (FASHION_MNIST_STD if self.kind == "fashion_mnist" else (0.5,) if grey else IMAGENET_STD)

    # --- what the data is (cheap: runs in __init__ so the CLI can link it to the model) ------------
    def _inspect_source(self) -> None:
        name = self.dataset
        path = Path(name)
        if name == "fashion_mnist":
            self.kind, self.class_names, self.in_chans, self._native_size = "fashion_mnist", list(FASHION_MNIST_CLASSES), 1, 28
            for f in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
                if not (self.data_dir / f).is_file():
                    raise UserError(f"Fashion-MNIST file {self.data_dir / f} does not exist: set --data.data_dir to the folder holding it")
            return
        if name.startswith("hf:") or (not path.exists() and not _looks_like_path(name)):
            self._inspect_hf(name.removeprefix("hf:"), local=False)
            return
        if not path.exists():
            raise UserError(f"data path {path} does not exist: pass an image folder, a saved dataset, 'fashion_mnist' or hf:<name>")
        if not path.is_dir():
            raise UserError(f"data path {path} is a file: pass a folder of <class>/<image> sub-folders")
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            self._inspect_hf(str(path), local=True)
            return
        self.kind = "folder"
        roots = {s: path / s for s in ("train", "val", "validation", "test") if (path / s).is_dir()}
        if "train" in roots:
            files, labels, classes = scan_image_folder(roots["train"])
            self._splits["train"] = (files, labels)
            for split, key in (("val", "val"), ("val", "validation"), ("test", "test")):
                if key in roots and split not in self._splits:
                    f, lab, c = scan_image_folder(roots[key])
                    if c != classes:
                        extra = sorted(set(c) - set(classes))
                        raise UserError(f"{roots[key]} has classes {extra or c} that {roots['train']} lacks: every split needs the same class folders")
                    self._splits[split] = (f, lab)
        else:
            files, labels, classes = scan_image_folder(path)
            self._splits["all"] = (files, labels)
        self.class_names = classes
        self.in_chans = image_channels(files[0])
        self._native_size = 224

    def _inspect_hf(self, name: str, local: bool) -> None:
        ds = load_splits(name if local else HubSpec.parse("hf:" + name, "--data.dataset", "hf:cifar10"))
        require_train(ds, name)
        feats = ds["train"].features
        require_columns(feats, {self.image_key: "image_key", self.label_key: "label_key"}, name)
        label = feats[self.label_key]
        self.class_names = list(label.names) if hasattr(label, "names") else [str(i) for i in range(max(ds["train"][self.label_key]) + 1)]
        self.kind, self._hf = "hf", ds
        first = ds["train"][0][self.image_key]
        self.in_chans = 1 if first.mode in ("L", "1") else 3
        self._native_size = 224 if max(first.size) > 64 else max(first.size)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # --- transforms -------------------------------------------------------------------------------
    def train_transform(self) -> Callable:
        size, ops = self.image_size, []
        if self.rand_augment:
            from timm.data.auto_augment import rand_augment_transform

            fill = tuple(int(255 * m) for m in self.mean)
            ops += [v2.ToPILImage(), rand_augment_transform(self.rand_augment, {"img_mean": fill if len(fill) == 3 else fill[0]}), v2.PILToTensor()]
        if size <= 64:
            if self._native_size != size:
                ops.append(v2.Resize((size, size), antialias=True))
            if self.crop_padding:
                ops.append(v2.RandomCrop(size, padding=self.crop_padding))
        else:
            ops.append(v2.RandomResizedCrop(size, antialias=True))
        if self.hflip:
            ops.append(v2.RandomHorizontalFlip(self.hflip))
        if self.color_jitter and self.in_chans == 3:
            cj = self.color_jitter
            ops.append(v2.ColorJitter(cj, cj, cj))
        ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        if self.random_erasing:
            ops.append(v2.RandomErasing(self.random_erasing, value=0))
        return v2.Compose(ops)

    def eval_transform(self) -> Callable:
        size, ops = self.image_size, []
        if size > 64:
            ops += [v2.Resize(int(size / 0.875), antialias=True), v2.CenterCrop(size)]
        else:
            ops.append(v2.Resize((size, size), antialias=True))  # a no-op at the native size
        ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        return v2.Compose(ops)

    # --- splits -----------------------------------------------------------------------------------
    def _make(self, split: str) -> Dataset:
        mode = "L" if self.in_chans == 1 else "RGB"
        if self.kind == "fashion_mnist":
            if split == "test":
                return TensorImageDataset(*load_fashion_mnist(self.data_dir, "test"))
            x, y = load_fashion_mnist(self.data_dir, "train")
            train_idx, val_idx = split_indices(len(y), self.val_fraction, self.split_seed)
            idx = torch.tensor(train_idx if split == "train" else val_idx)
            return TensorImageDataset(x[idx], y[idx])
        if self.kind == "folder":
            if split in self._splits:
                return FileImageDataset(*self._splits[split], mode)
            if "all" in self._splits:  # one folder: 80/10/10, deterministic
                files, labels = self._splits["all"]
                rest, test = split_indices(len(files), 0.1, self.split_seed)
                train, val = split_indices(len(rest), self.val_fraction, self.split_seed + 1)
                pick = {"train": [rest[i] for i in train], "val": [rest[i] for i in val], "test": test}[split]
                return FileImageDataset([files[i] for i in pick], [labels[i] for i in pick], mode)
            files, labels = self._splits["train"]
            if split == "test" and "val" in self._splits:
                return FileImageDataset(*self._splits["val"], mode)
            train, val = split_indices(len(files), self.val_fraction, self.split_seed)
            pick = train if split == "train" else val
            return FileImageDataset([files[i] for i in pick], [labels[i] for i in pick], mode)
        ds = self._hf
        val_name = next((n for n in ("validation", "val", "valid") if n in ds), None)
        if split == "test" and "test" in ds:
            return HFImageDataset(ds["test"], self.image_key, self.label_key, mode)
        if split == "test":
            raise UserError(f"the dataset has no test split (it has {', '.join(ds)})")
        if val_name is not None:
            return HFImageDataset(ds["train" if split == "train" else val_name], self.image_key, self.label_key, mode)
        train, val = split_indices(len(ds["train"]), self.val_fraction, self.split_seed)
        pick = train if split == "train" else val
        return HFImageDataset(ds["train"].select(pick), self.image_key, self.label_key, mode)

    def setup(self, stage: str) -> None:
        setup_image_splits(self, stage, lambda files, mode: FileImageDataset(files, [-1] * len(files), mode))

    @property
    def predict_ids(self) -> list[str]:
        """A name for each predicted row: its file, or its index in the test split."""
        ds = self.predict_set
        if isinstance(ds, FileImageDataset):
            return [str(f) for f in ds.files]
        return [str(i) for i in range(len(ds))]

    def _batch_train_transform(self) -> Callable | None:
        """The vectorised train transform, where it does the same as :meth:`train_transform`:
        in-memory images of one size, crop and flip only."""
        if self.kind != "fashion_mnist" or self.rand_augment or self.random_erasing or self.image_size != self._native_size:
            return None
        return v2.Compose(
            [BatchCropFlip(self.image_size, self.crop_padding, self.hflip), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        )

    def train_dataloader(self) -> DataLoader:
        batched = self._batch_train_transform()
        if batched is not None:
            return self.train_loader(self.train_set, batched, batched=True)
        return self.train_loader(self.train_set, self.train_transform())

    def val_dataloader(self) -> DataLoader:
        # in-memory images of one size: the (deterministic) eval transform runs on whole batches
        return self.eval_loader(self.val_set, self.eval_transform(), batched=self.kind == "fashion_mnist")

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set, self.eval_transform(), batched=self.kind == "fashion_mnist")

    def predict_dataloader(self) -> DataLoader:
        return self.eval_loader(self.predict_set, self.eval_transform())


def image_channels(path: Path) -> int:
    """1 for a grey image file (modes L, 1, I, I;16), else 3."""
    from PIL import Image

    with Image.open(path) as im:
        return 1 if im.mode in ("L", "1", "I;16", "I") else 3


def setup_image_splits(dm: Any, stage: str, files_dataset: Callable[[list[Path], str], Dataset]) -> None:
    """The datasets of an image DataModule's ``stage`` from its ``_make(split)``; ``predict`` reads
    ``dm.predict_path`` (an image or a folder of them, via ``files_dataset(files, mode)``) or else
    the test split."""
    if stage == "fit":
        dm.train_set, dm.val_set = dm._make("train"), dm._make("val")
    elif stage == "validate":
        dm.val_set = dm._make("val")
    elif stage == "test":
        dm.test_set = dm._make("test")
    elif stage == "predict":
        if dm.predict_path is None:
            dm.predict_set = dm._make("test")
            return
        files = [dm.predict_path] if dm.predict_path.is_file() else _image_files(dm.predict_path)
        if not files:
            raise UserError(f"--data.predict_path {dm.predict_path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        dm.predict_set = files_dataset(files, "L" if dm.in_chans == 1 else "RGB")


def _looks_like_path(name: str) -> bool:
    """A name meant as a local path (its first folder exists here, or it starts like a path),
    rather than a Hugging Face hub name such as ``cifar10`` or ``uoft-cs/cifar10``."""
    p = Path(name).expanduser()
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or (len(p.parts) > 1 and Path(p.parts[0]).exists())
