"""Object detection: box utilities, target assignment on hand-built cases, decoding, mAP of
perfect predictions, the task through the CLI (pictures, COCO results, overlays), COCO input,
backbone reuse from timm weights, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FASHION, TINY_VIT, write_coco

from tfm.cli import main
from tfm.nn import box_iou, center_targets, decode_centers, generalized_box_iou, masks_to_boxes
from tfm.nn.dense import decode_boxes
from tfm.tasks import ObjectDetection
from tfm.tasks.detection import mean_average_precision

CONFIG = "configs/vit_tiny_det_scenes.yaml"
SMALL = [*TINY_VIT, "--model.fpn_channels=16", "--model.head_channels=16", "--data.batch_size=8", "--data.num_val_scenes=16",
         "--data.num_test_scenes=16", "--trainer.limit_train_batches=3", "--trainer.val_check_interval=1.0",
         "--trainer.max_epochs=1", "--trainer.enable_model_summary=false", "--trainer.enable_progress_bar=false"]


def run(root: Path, *args: str, sub: str = "fit"):
    return main([sub, "--config", CONFIG, f"--run.root={root}", *args])


def test_box_utilities_on_hand_values():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 5, 15, 15], [20, 20, 30, 30]])
    assert box_iou(a, b).tolist() == [[pytest.approx(25 / 175), 0.0]]
    # disjoint: IoU 0, hull 30x30 = 900, union 200 -> GIoU = -(900 - 200) / 900
    assert generalized_box_iou(a[0], b[1]).item() == pytest.approx(-700 / 900)
    inst = torch.zeros(6, 8, dtype=torch.uint8)
    inst[1:3, 2:5] = 1
    inst[4, 7] = 2
    boxes, present = masks_to_boxes(inst, 3)
    assert boxes.tolist() == [[2, 1, 5, 3], [7, 4, 8, 5], [0, 0, 0, 0]] and present.tolist() == [True, True, False]


def test_center_targets_on_a_hand_built_box():
    box = torch.tensor([[8.0, 8, 24, 40]])  # centre (16, 24) -> cell (x 4, y 6) at stride 4
    heat, box_t, weight = center_targets(box, torch.tensor([2]), 3, (16, 16), stride=4)
    assert heat.shape == (3, 16, 16) and heat[2, 6, 4] == 1 and heat[[0, 1]].sum() == 0
    assert (heat[2] == 1).sum() == 1 and heat[2, 6, 3] < heat[2, 5, 4] < 1  # taller than wide: wider spread in y
    cells = weight.nonzero().tolist()
    assert [6, 4] in cells and weight[6, 4] == weight.max()
    for y, x in cells:  # only cells whose centres lie inside the box regress it
        assert 8 <= (x + 0.5) * 4 < 24 and 8 <= (y + 0.5) * 4 < 40
        assert box_t[:, y, x].tolist() == [8, 8, 24, 40]
    assert weight.sum().item() == pytest.approx(math.log(16 * 32), rel=1e-5)
    assert box_t[:, weight == 0].abs().sum() == 0


def test_center_targets_give_the_overlap_to_the_smaller_box():
    boxes = torch.tensor([[0.0, 0, 64, 64], [20, 20, 36, 36]])
    heat, box_t, weight = center_targets(boxes, torch.tensor([0, 1]), 2, (16, 16), stride=4)
    assert heat[0, 8, 8] == 1 and heat[1, 7, 7] == 1
    assert box_t[:, 7, 7].tolist() == [20, 20, 36, 36] and box_t[:, 8, 8].tolist() == [0, 0, 64, 64]
    assert weight[7, 7] > 0 and weight[8, 8] > 0


def test_decoding_perfect_outputs_gives_back_the_boxes_and_map_1():
    boxes = torch.tensor([[4.0, 4, 20, 28], [36, 8, 60, 24], [30, 40, 50, 62]])
    labels = torch.tensor([1, 0, 1])
    heat, box_t, weight = center_targets(boxes, labels, 2, (16, 16), stride=4)
    logits = torch.logit(heat.clamp(1e-4, 1 - 1e-4))[None]
    xs = (torch.arange(16) + 0.5) * 4
    cx, cy = xs[None, :].expand(16, 16), xs[:, None].expand(16, 16)
    sides = torch.stack([cx - box_t[0], cy - box_t[1], box_t[2] - cx, box_t[3] - cy])[None]
    assert torch.allclose(decode_boxes(sides, 4)[0][:, weight > 0], box_t[:, weight > 0])
    (det,) = decode_centers(logits, sides, 4, (64, 64), max_detections=10, score_threshold=0.5)
    order = det["boxes"][:, 0].argsort()
    assert det["boxes"][order].tolist() == boxes[boxes[:, 0].argsort()].tolist()
    assert sorted(det["labels"].tolist()) == [0, 1, 1]
    metric = mean_average_precision()
    metric.update([det], [{"boxes": boxes, "labels": labels}])
    result = metric.compute()
    assert result["map"] == 1.0 and result["map_50"] == 1.0


def test_map_of_ground_truth_fed_as_predictions_is_1():
    from tfm.data.images import load_fashion_mnist
    from tfm.data.synthetic.scenes import SceneGenerator

    gen = SceneGenerator(*load_fashion_mnist(FASHION, "test"), seed=5)
    metric = mean_average_precision()
    scenes = [gen(i) for i in range(20)]
    metric.update([{"boxes": s["boxes"], "labels": s["labels"], "scores": torch.ones(len(s["labels"]))} for s in scenes],
                  [{"boxes": s["boxes"], "labels": s["labels"]} for s in scenes])
    result = metric.compute()
    assert result["map"].item() == 1.0 and result["map_50"].item() == 1.0
    # one box of each scene moved off its object: mAP falls
    metric.reset()
    moved = [{"boxes": s["boxes"] + torch.tensor([20.0, 0, 20, 0]) * (torch.arange(len(s["boxes"]))[:, None] == 0),
              "labels": s["labels"], "scores": torch.ones(len(s["labels"]))} for s in scenes]
    metric.update(moved, [{"boxes": s["boxes"], "labels": s["labels"]} for s in scenes])
    assert metric.compute()["map_50"] < 1.0


def test_fit_validate_pictures_and_predict_through_the_cli(tmp_path):
    root = tmp_path / "runs"
    cli = run(root, *SMALL)
    assert 0 <= cli.trainer.callback_metrics["test/map_50"] <= 1 and "test/map" in cli.trainer.callback_metrics
    (run_dir,) = (root / "vit_tiny_det_scenes").iterdir()
    val = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "val/map_50" in line]
    assert val and 0 <= val[-1]["val/map_50"] <= 1 and "val/map" in val[-1]
    assert list((run_dir / "media").glob("val_detection_step*.png"))
    wandb_run = next((run_dir / "wandb").glob("offline-run-*"))
    assert list(wandb_run.glob("files/media/images/val/detection_boxes_*.png"))

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cli = run(root, *TINY_VIT, "--model.fpn_channels=16", "--model.head_channels=16", "--data.batch_size=4", "--data.num_test_scenes=6",
              "--model.score_threshold=0.0", "--model.max_detections=5", f"--ckpt_path={ckpt}", "--trainer.enable_progress_bar=false",
              sub="predict")
    out = Path(cli.trainer.default_root_dir)
    results = json.loads((out / "predictions" / "detections.json").read_text())
    assert len(results) == 6 * 5 and set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    assert {r["image_id"] for r in results} == set(range(6))
    assert all(0 <= r["bbox"][0] and r["bbox"][0] + r["bbox"][2] <= 64.01 for r in results)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and set(rows[0]) == {"id", "boxes", "classes", "scores"}
    from PIL import Image

    with Image.open(out / "predictions" / "overlays" / "3.png") as im:
        assert im.size == (2 * 256, 256)  # predicted | true, enlarged 4x


def test_coco_files_through_the_cli_and_bad_boxes(tmp_path, capsys):
    folder = tmp_path / "coco"
    write_coco(folder)
    write_coco(folder, name="val.json")
    cli = run(tmp_path / "runs", *SMALL, f"--data.dataset={folder}", "--data.image_size=32", "--data.batch_size=2",
              "--run.test_after_fit=false")
    assert cli.model.num_classes == 2 and cli.model.class_names == ["dog", "cat"] and cli.trainer.global_step == 1
    ckpt = next((tmp_path / "runs").glob("*/*/checkpoints/last.ckpt"))
    cli = run(tmp_path / "runs", *TINY_VIT, "--model.fpn_channels=16", "--model.head_channels=16", f"--data.dataset={folder}",
              "--data.image_size=32", "--data.batch_size=2", "--model.max_detections=3", f"--ckpt_path={ckpt}", sub="predict")
    results = json.loads((Path(cli.trainer.default_root_dir) / "predictions" / "detections.json").read_text())
    assert {r["image_id"] for r in results} == {1, 2, 3} and {r["category_id"] for r in results} <= {3, 7}
    assert max(r["bbox"][0] + r["bbox"][2] for r in results if r["image_id"] == 1) <= 40.01  # back in the image's 40x30 pixels

    bad = tmp_path / "bad"
    write_coco(bad, annotations=[{"id": 5, "image_id": 2, "category_id": 3, "bbox": [-8, 0, 10, 10]}])
    empty = tmp_path / "empty" / "train.json"
    empty.parent.mkdir()
    empty.write_text("")
    for dataset, expected in ((bad / "train.json", "annotation 5 of image im2.png (40x30) has box"), (empty, "is empty")):
        with pytest.raises(SystemExit) as e:
            run(tmp_path / "runs2", *SMALL, f"--data.dataset={dataset}")
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and "Traceback" not in "\n".join(err)
        assert err[-1].startswith("tfm: error: ") and expected in err[-1]


def test_backbone_from_timm_weights(tmp_path):
    import timm

    ref = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=32, depth=2, num_heads=2,
                                                           mlp_ratio=2.0, num_classes=7)
    torch.save(ref.state_dict(), tmp_path / "vit.pth")
    task = ObjectDetection(num_classes=10, image_size=64, in_chans=1, patch_size=8, dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                           fpn_channels=16, head_channels=16, init_from=str(tmp_path / "vit.pth"))
    bb = task.net.backbone
    assert torch.equal(bb.encoder.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)
    assert torch.equal(bb.patch_embed.proj.weight, ref.patch_embed.proj.weight)
    assert bb.patch_embed.pos_embed.shape == (1, 1 + 64, 32)  # resized from 4x4 to 8x8
    heat, sides = task(torch.randn(2, 1, 64, 64))
    assert heat.shape == (2, 10, 16, 16) and sides.shape == (2, 4, 16, 16) and (sides >= 0).all()


def test_patch_logits_add_the_tokens_class_logits_to_the_heatmap():
    import torch.nn.functional as F

    from tfm.nn import ViTDetector, vit_feature_map

    torch.manual_seed(0)
    net = ViTDetector(3, "vit_tiny", 4, 16, 16, 1, patch_logits=True, image_size=32, patch_size=8, in_chans=1, dim=32, depth=1,
                      num_heads=2).eval()
    torch.nn.init.normal_(net.patch_classifier[1].weight)  # not the near-zero start
    images = torch.randn(2, 1, 32, 32)
    heat, sides = net(images)
    patch = net.patch_classifier(vit_feature_map(net.backbone, images))  # (2, 3, 4, 4)
    classifier, net.patch_classifier = net.patch_classifier, None
    heat_head, sides_head = net(images)
    torch.testing.assert_close(heat, heat_head + F.interpolate(patch, size=(8, 8), mode="bilinear", align_corners=False))
    assert torch.equal(sides, sides_head) and classifier is not None
