"""Detection / segmentation data: the scene generator, consistent augmentation, COCO JSON, mask
folders, Hugging Face datasets, and the bad input that must end in one clear line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FASHION, write_coco, write_mask_folder

from tfm.data import DetectionDataModule, SegmentationDataModule
from tfm.data.images import load_fashion_mnist
from tfm.data.scenes import DenseTransform, read_coco, read_mask
from tfm.data.synthetic.scenes import SceneGenerator
from tfm.errors import UserError


@pytest.fixture(scope="module")
def pool():
    x, y = load_fashion_mnist(FASHION, "test")
    return x[:2000], y[:2000]


def tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_generator_is_deterministic_for_a_seed(pool):
    a, b, c = SceneGenerator(*pool, seed=3), SceneGenerator(*pool, seed=3), SceneGenerator(*pool, seed=4)
    for i in range(10):
        sa, sb = a(i), b(i)
        assert all(torch.equal(sa[k], sb[k]) for k in ("image", "mask", "instances", "boxes", "labels"))
    assert any(not torch.equal(a(i)["image"], c(i)["image"]) for i in range(3))
    assert a(0)["image"].shape == (1, 64, 64) and a(0)["image"].dtype == torch.uint8


def test_boxes_are_the_tight_boxes_of_the_visible_masks(pool):
    gen = SceneGenerator(*pool, image_size=64, item_size=(16, 40), items=(1, 6), min_visible=0.5, seed=0)
    counts = []
    for i in range(60):
        s = gen(i)
        inst, sem, boxes, labels = s["instances"].numpy(), s["mask"].numpy(), s["boxes"], s["labels"]
        n = len(labels)
        counts.append(n)
        assert inst.max() == n and boxes.shape == (n, 4)
        for k in range(1, n + 1):
            own = inst == k
            assert own.sum() >= 12
            assert boxes[k - 1].tolist() == tight_box(own)
            assert (sem[own] == int(labels[k - 1]) + 1).all()  # the class of its pixels
        assert (sem[inst == 0] == 0).all()  # background elsewhere
        # an item's pixels show that item: the image differs from the background there (mostly)
        assert s["image"].shape == (1, 64, 64)
    assert min(counts) >= 1 and max(counts) >= 4  # occlusion drops some, never all of a scene


def test_hidden_items_are_dropped_and_later_items_occlude(pool):
    x, y = pool
    # two copies of one item at the same place: the second hides the first completely
    gen = SceneGenerator(x[:1], y[:1], image_size=32, item_size=(28, 28), items=(2, 2), min_visible=0.3, seed=0)
    s = gen(0)
    assert len(s["labels"]) == 1 and s["instances"].max() == 1  # the hidden one is gone


def test_train_scenes_use_train_images_and_eval_scenes_test_images():
    dm = SegmentationDataModule(data_dir=str(FASHION), num_val_scenes=8, num_test_scenes=8)
    assert (dm.num_classes, dm.in_chans, dm.image_size) == (11, 1, 64) and dm.class_names[0] == "background"
    train, val, test = dm._generator("train"), dm._generator("val"), dm._generator("test")
    assert len(train.pool) == 60000 and len(val.pool) == 10000 and len(test.pool) == 10000
    assert len({train.seed, val.seed, test.seed}) == 3
    assert not torch.equal(val(0)["image"], test(0)["image"])
    det = DetectionDataModule(data_dir=str(FASHION))
    assert det.num_classes == 10 and det.class_names[0] == "T-shirt/top"


@pytest.mark.parametrize("crop", [None, (0.3, 1.0)])
def test_augmentation_keeps_boxes_inside_and_aligned_with_masks(pool, crop):
    gen = SceneGenerator(*pool, seed=1)
    t = DenseTransform(48, (0.37,), (0.22,), train=True, hflip=0.5, crop_scale=crop)
    flipped = 0
    for i in range(40):
        s = gen(i)
        torch.manual_seed(i)
        out = t(s)
        assert out["image"].shape == (1, 48, 48) and out["mask"].shape == (48, 48)
        boxes, inst, sem = out["boxes"], out["instances"].numpy(), out["mask"].numpy()
        assert ((boxes >= 0) & (boxes <= 48)).all()
        assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
        present = [k for k in range(1, len(s["labels"]) + 1) if (inst == k).any()]
        assert len(boxes) == len(present) == len(out["labels"])
        for box, k in zip(boxes, present):
            assert box.tolist() == tight_box(inst == k)
            assert (sem[inst == k] > 0).all()
        assert ((sem > 0) == (inst > 0)).all()
        flipped += int(crop is None and not torch.equal(out["mask"], torch.nn.functional.interpolate(
            s["mask"][None, None].float(), size=(48, 48), mode="nearest")[0, 0].to(torch.uint8)))
    assert crop is not None or flipped > 5  # the flip happened, with the masks


def test_boxes_without_masks_are_clipped_and_empty_ones_dropped():
    t = DenseTransform(32, (0.5,), (0.5,), train=True, hflip=1.0)
    s = {"index": 0, "image": torch.zeros(1, 64, 64, dtype=torch.uint8), "boxes": torch.tensor([[0.0, 0, 32, 16], [10, 10, 10.2, 20]]),
         "labels": torch.tensor([3, 4])}
    out = t(s)
    assert out["boxes"].tolist() == [[16.0, 0.0, 32.0, 8.0]] and out["labels"].tolist() == [3]  # flipped and halved


def test_training_batches_are_seeded_and_resumable():
    def first(seed: int):
        dm = DetectionDataModule(data_dir=str(FASHION), batch_size=4, seed=seed, crop_scale=(0.5, 1.0), num_train_scenes=40)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))

    a, b, c = first(0), first(0), first(1)
    assert torch.equal(a["images"], b["images"]) and all(torch.equal(x, y) for x, y in zip(a["boxes"], b["boxes"]))
    assert not torch.equal(a["images"], c["images"])
    assert a["images"].shape == (4, 1, 64, 64) and len(a["labels"]) == 4 and a["index"].shape == (4,)


# --- COCO ------------------------------------------------------------------------------------------


def test_read_coco(tmp_path):
    records, names, ids = read_coco(write_coco(tmp_path / "coco"))
    assert names == ["dog", "cat"] and ids == [3, 7]
    assert records[0]["boxes"].tolist() == [[2, 3, 12, 8], [20, 10, 40, 30]] and records[0]["labels"].tolist() == [1, 0]
    assert len(records[2]["boxes"]) == 0  # an image with nothing in it is valid data
    dm = DetectionDataModule(dataset=str(tmp_path / "coco" / "train.json"), image_size=32, batch_size=3, val_fraction=0.34)
    assert (dm.num_classes, dm.in_chans, dm.category_ids) == (2, 3, [3, 7])
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["images"].shape[1:] == (3, 32, 32) and len(batch["boxes"]) == len(batch["images"])


def test_coco_bad_input_is_one_clear_line(tmp_path):
    bad = write_coco(tmp_path / "a", annotations=[{"id": 9, "image_id": 1, "category_id": 7, "bbox": [30, 20, 20, 5]}])
    with pytest.raises(UserError, match=r"annotation 9 of image im1.png \(40x30\) has box .* outside the image"):
        read_coco(bad)
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        read_coco(empty)
    empty.write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(UserError, match="has no images"):
        read_coco(empty)


# --- mask folders and HF -------------------------------------------------------------------------------


def test_mask_folder(tmp_path):
    root = write_mask_folder(tmp_path / "seg")
    assert read_mask(root / "masks" / "1.png")[5, 5] == 2  # the palette index is the class
    dm = SegmentationDataModule(dataset=str(root), image_size=16, batch_size=2, val_fraction=0.2)
    assert dm.num_classes == 3 and dm.class_names == ["0", "1", "2"] and dm.in_chans == 3
    (root / "classes.txt").write_text("background\nround\nsquare\n")
    dm = SegmentationDataModule(dataset=str(root), image_size=16, batch_size=2, val_fraction=0.2)
    assert dm.class_names == ["background", "round", "square"]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (2, 3, 16, 16) and batch["masks"].shape == (2, 16, 16)
    assert set(batch["masks"].unique().tolist()) <= {0, 1, 2, 255}


def test_mask_with_a_class_id_above_the_classes_is_one_clear_line(tmp_path):
    root = write_mask_folder(tmp_path / "seg", top=4)
    (root / "classes.txt").write_text("background\nround\nsquare\n")
    with pytest.raises(UserError, match=r"mask .*\.png has class id 4 but there are 3 classes \(ids 0..2, 255 = ignore\)"):
        SegmentationDataModule(dataset=str(root))


def test_mask_folder_without_a_training_split_is_one_clear_line(tmp_path):
    write_mask_folder(tmp_path / "seg" / "val")
    with pytest.raises(UserError, match=r"seg has no training split \(it has validation\): add train/images"):
        SegmentationDataModule(dataset=str(tmp_path / "seg"))


def test_hf_datasets_saved_to_disk(tmp_path):
    import datasets
    from PIL import Image

    imgs = [Image.fromarray(np.full((20, 20, 3), 30 * i, dtype=np.uint8)) for i in range(4)]
    masks = [Image.fromarray(np.eye(20, dtype=np.uint8) * (1 + i % 2)) for i in range(4)]
    objects = [{"bbox": [[1.0, 2.0, 5.0, 6.0]], "category": [i % 2]} for i in range(4)]
    feats = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image(),
                               "objects": {"bbox": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                           "category": datasets.Sequence(datasets.ClassLabel(names=["a", "b"]))}})
    ds = datasets.Dataset.from_dict({"image": imgs, "annotation": masks, "objects": objects}, features=feats)
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "hf"))
    seg = SegmentationDataModule(dataset=str(tmp_path / "hf"), image_size=16, batch_size=2)
    assert seg.num_classes == 3
    seg.setup("fit")
    assert next(iter(seg.val_dataloader()))["masks"].shape == (2, 16, 16)
    det = DetectionDataModule(dataset=str(tmp_path / "hf"), image_size=40, batch_size=2)
    assert det.class_names == ["a", "b"]
    det.setup("fit")
    batch = next(iter(det.val_dataloader()))
    assert batch["boxes"][0].tolist() == [[2.0, 4.0, 12.0, 16.0]]  # xywh -> xyxy, scaled 20 -> 40
