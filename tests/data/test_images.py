"""Image data: the bundled Fashion-MNIST, image folders, HF datasets, transforms, bad paths."""

from __future__ import annotations

import pytest
import torch
from conftest import FASHION, make_image_folder

from tfm.data import ImageDataModule
from tfm.data.images import load_fashion_mnist, read_idx, split_indices
from tfm.errors import UserError


def test_fashion_mnist_idx_files():
    x, y = load_fashion_mnist(FASHION, "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [1000] * 10
    assert read_idx(FASHION / "train-labels-idx1-ubyte.gz").shape == (60000,)


def test_fashion_splits_are_deterministic_and_disjoint():
    a_train, a_val = split_indices(60000, 0.1, seed=0)
    b_train, b_val = split_indices(60000, 0.1, seed=0)
    assert a_val == b_val and len(a_val) == 6000
    assert not set(a_train) & set(a_val) and len(a_train) + len(a_val) == 60000


def test_fashion_datamodule_batches():
    dm = ImageDataModule(data_dir=str(FASHION), batch_size=32, val_fraction=0.1)
    assert (dm.num_classes, dm.in_chans, dm.image_size) == (10, 1, 28)
    assert dm.class_names[0] == "T-shirt/top"
    dm.setup("fit")
    assert len(dm.train_set) == 54000 and len(dm.val_set) == 6000
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (32,)
    xv, _ = next(iter(dm.val_dataloader()))
    # evaluation images are only normalised: mean/std of the data set
    assert -0.3 < xv.mean() < 0.3


def test_train_augmentation_crops_and_flips():
    dm = ImageDataModule(data_dir=str(FASHION), crop_padding=2, hflip=1.0)
    img = torch.zeros(1, 28, 28, dtype=torch.uint8)
    img[:, :, :14] = 255  # left half white
    torch.manual_seed(0)
    out = dm.train_transform()(img)
    assert out.shape == (1, 28, 28)
    # always flipped: the white half moved to the right (give or take the 2-pixel crop shift)
    assert out[0, :, 18:].mean() > out[0, :, :10].mean()


def test_image_folder_with_splits(tmp_path):
    make_image_folder(tmp_path / "train", per_class=5)
    make_image_folder(tmp_path / "val", per_class=2)
    dm = ImageDataModule(dataset=str(tmp_path), image_size=32, batch_size=4)
    assert dm.class_names == ["cat", "dog"] and dm.in_chans == 3
    dm.setup("fit")
    assert len(dm.train_set) == 10 and len(dm.val_set) == 4
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32)


def test_single_image_folder_is_split(tmp_path):
    make_image_folder(tmp_path, per_class=10, mode="L")
    dm = ImageDataModule(dataset=str(tmp_path), image_size=32, batch_size=4)
    assert dm.in_chans == 1
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 20


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(8)]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    ds = datasets.Dataset.from_dict({"img": images, "label": [0, 1] * 4}, features=features)
    datasets.DatasetDict({"train": ds, "test": ds.select(range(4))}).save_to_disk(str(tmp_path / "ds"))
    dm = ImageDataModule(dataset=str(tmp_path / "ds"), image_key="img", batch_size=4, val_fraction=0.25)
    assert dm.class_names == ["a", "b"] and dm.image_size == 16
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) == 6 and len(dm.val_set) == 2 and len(dm.test_set) == 4
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16)


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ImageDataModule(dataset="data/no_such_folder")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="has no images"):
        ImageDataModule(dataset=str(tmp_path / "empty"))
    (tmp_path / "flat").mkdir()
    with pytest.raises(UserError, match="no class sub-folders"):
        ImageDataModule(dataset=str(tmp_path / "flat"))
    with pytest.raises(UserError, match="Fashion-MNIST file"):
        ImageDataModule(data_dir=str(tmp_path))


def test_batched_crop_flip_is_a_per_image_crop_and_flip():
    from tfm.data.images import BatchCropFlip

    x = torch.arange(4 * 1 * 6 * 6, dtype=torch.uint8).reshape(4, 1, 6, 6)
    torch.manual_seed(0)
    out = BatchCropFlip(6, 2, 0.5)(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(4):  # each image is some 6x6 window of its own padded image, maybe mirrored
        windows = [padded[i, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    torch.manual_seed(1)
    flips = BatchCropFlip(6, 0, 0.5)(x.repeat(50, 1, 1, 1))
    flipped = sum(torch.equal(f, x[0].flip(-1)) for f in flips[::4])
    assert 10 < flipped < 40  # about half


@pytest.mark.parametrize("rand_augment", [None, "rand-m9-mstd0.5"])
def test_fashion_training_batches_are_the_same_for_a_seed(rand_augment):
    """Also with timm's RandAugment, which draws from Python's ``random``."""
    def first_batch():
        dm = ImageDataModule(data_dir=str(FASHION), batch_size=16, seed=3, rand_augment=rand_augment)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))
    (x1, y1), (x2, y2) = first_batch(), first_batch()
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
