"""Semantic segmentation: decoders, the mIoU metric on a hand case, the task through the CLI
(validation pictures, predict masks and overlays), backbone reuse, bad masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import FEW_STEPS, TINY_VIT, write_mask_folder

from tfm.cli import main
from tfm.nn import LinearDecoder, ProgressiveDecoder, ViTSegmenter, resize_pos_embed
from tfm.tasks import SemanticSegmentation

CONFIG = "configs/vit_tiny_seg_scenes.yaml"
SMALL = [*TINY_VIT, "--model.decoder_channels=[16,16,16]", "--data.batch_size=8", "--data.num_val_scenes=16",
         "--data.num_test_scenes=16", "--trainer.limit_train_batches=3", "--trainer.val_check_interval=1.0",
         "--trainer.max_epochs=1", "--trainer.enable_model_summary=false", "--trainer.enable_progress_bar=false"]


def run(root: Path, *args: str, sub: str = "fit", config: str = CONFIG):
    return main([sub, "--config", config, f"--run.root={root}", *args])


def test_decoders_give_full_resolution_logits():
    feats, images = torch.randn(2, 32, 4, 6), torch.randn(2, 1, 32, 48)
    assert LinearDecoder(32, 5, 8)(feats).shape == (2, 5, 32, 48)
    assert ProgressiveDecoder(32, 5, 8, (16, 8), image_skip=True, in_chans=1)(feats, images).shape == (2, 5, 32, 48)
    net = ViTSegmenter(5, "vit_tiny", "progressive", (16, 8, 8), True, image_size=32, patch_size=8, in_chans=1, dim=32, depth=1, num_heads=2)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 5, 32, 32)
    assert "backbone.patch_embed.pos_embed" in net.no_weight_decay()
    assert net.layer_id("backbone.encoder.blocks.0.attn.qkv.weight") == 1 and net.layer_id("decoder.proj.weight") == net.num_layers


def test_patch_logits_add_the_upsampled_linear_decoder():
    torch.manual_seed(0)
    feats, images = torch.randn(2, 32, 4, 6), torch.randn(2, 1, 32, 48)
    dec = ProgressiveDecoder(32, 5, 8, (16, 8), image_skip=True, in_chans=1, patch_logits=True).eval()
    linear = LinearDecoder(32, 5, 8).eval()
    linear.norm.load_state_dict(dec.norm.state_dict())
    linear.proj.load_state_dict(dec.patch_classifier.state_dict())
    dec.patch_classifier = None
    stages_only = dec(feats, images)
    dec.patch_classifier = linear.proj
    torch.testing.assert_close(dec(feats, images), stages_only + linear(feats), rtol=0, atol=1e-6)


def test_miou_on_a_constructed_case_equals_the_hand_value():
    task = SemanticSegmentation(num_classes=4, image_size=16, in_chans=1, patch_size=8, dim=32, depth=1, num_heads=2)
    target = torch.tensor([[0, 0, 1, 1, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 2, 0, 2]])
    # class 0: 1 right, 1 false positive, 1 missed -> 1/3; class 1: 2 / 3; class 2: 1 / 2; class 3 absent
    # from both (not averaged in); the ignored pixel counts nowhere
    task.val_metrics.update(pred[:, :3], target[:, :3])  # accumulated over batches
    task.val_metrics.update(pred[:, 3:], target[:, 3:])
    m = task.val_metrics.compute()
    assert m["val/miou"].item() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert m["val/pixel_acc"].item() == pytest.approx(4 / 6)


def test_fit_validate_pictures_and_predict_through_the_cli(tmp_path):
    root = tmp_path / "runs"
    cli = run(root, *SMALL, "--model.ema_decay=0.9")
    m = cli.trainer.callback_metrics
    assert 0 <= m["test/miou"] <= 1 and "test/pixel_acc" in m
    (run_dir,) = (root / "vit_tiny_seg_scenes").iterdir()
    val = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "val/miou" in line]
    assert val and 0 <= val[-1]["val/miou"] <= 1
    assert list((run_dir / "media").glob("val_segmentation_step*.png"))
    wandb_run = next((run_dir / "wandb").glob("offline-run-*"))
    assert list(wandb_run.glob("files/media/images/val/segmentation_*.png"))
    assert list(wandb_run.glob("files/media/images/mask/val/segmentation_masks_*.mask.png"))  # the W&B masks (predictions, ground truth)

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cli = run(root, *TINY_VIT, "--model.decoder_channels=[16,16,16]", "--model.ema_decay=0.9", "--data.batch_size=4", "--data.num_test_scenes=6",
              f"--ckpt_path={ckpt}", "--trainer.enable_progress_bar=false", sub="predict")
    out = Path(cli.trainer.default_root_dir)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["id"] == "0" and Path(rows[0]["mask"]).name == "0.png"
    from PIL import Image

    with Image.open(out / "predictions" / "masks" / "5.png") as im:
        assert im.mode == "P" and im.size == (64, 64)
    with Image.open(out / "predictions" / "overlays" / "5.png") as im:
        assert im.size == (3 * 256, 256)  # image | predicted | true, enlarged 4x


def test_backbone_from_an_image_classification_checkpoint(tmp_path):
    main(["fit", "--config", "configs/vit_tiny_fashion.yaml", f"--run.root={tmp_path}", *TINY_VIT, *FEW_STEPS, "--model.patch_size=8",
          "--data.image_size=32", "--run.test_after_fit=false", "--trainer.max_steps=1"])
    (ckpt,) = tmp_path.glob("*/*/checkpoints/last.ckpt")
    task = SemanticSegmentation(num_classes=11, image_size=64, in_chans=1, patch_size=8, stem="conv", dim=32, depth=2, num_heads=2,
                                mlp_ratio=2.0, init_from=str(ckpt))
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    bb = task.net.backbone
    assert torch.equal(bb.encoder.blocks[1].mlp.fc1.weight, sd["net.encoder.blocks.1.mlp.fc1.weight"])
    assert torch.equal(bb.patch_embed.proj[0].weight, sd["net.patch_embed.proj.0.weight"])
    # position embeddings resized from the classifier's 4x4 grid to this 8x8 one
    assert torch.allclose(bb.patch_embed.pos_embed, resize_pos_embed(sd["net.patch_embed.pos_embed"], (8, 8), (4, 4)))
    from tfm.errors import UserError

    with pytest.raises(UserError, match="init_from .* must be those it was trained with"):
        SemanticSegmentation(num_classes=11, image_size=64, in_chans=1, patch_size=8, stem="conv", dim=48, depth=2, num_heads=2,
                             init_from=str(ckpt))


def test_mask_above_the_classes_through_the_cli_is_one_line(tmp_path, capsys):
    root = write_mask_folder(tmp_path / "seg", top=4)
    (root / "classes.txt").write_text("background\nround\nsquare\n")
    with pytest.raises(SystemExit) as e:
        run(tmp_path / "runs", *SMALL, f"--data.dataset={root}")
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("tfm: error: mask ") and "has class id 4 but there are 3 classes" in err[-1]


def test_soft_dice_loss_on_hand_values():
    from tfm.nn.dense import soft_dice_loss

    target = torch.tensor([[[0, 0, 1, 1, 255]]])
    uniform = torch.zeros(1, 3, 1, 5)  # p = 1/3 for each of 3 classes
    # class 0: inter 2/3, sum p 4/3 (the ignored pixel counts nowhere) + 2 -> (4/3 + 1) / (10/3 + 1) = 7/13; class 1 the
    # same; class 2 is absent from the target and not averaged in
    assert soft_dice_loss(uniform, target).item() == pytest.approx(1 - 7 / 13)
    perfect = torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0, abs=1e-6)
