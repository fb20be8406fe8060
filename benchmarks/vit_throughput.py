"""Training-step throughput (forward + backward + AdamW step), tfm ViT vs timm ViT.

    python benchmarks/vit_throughput.py [--quick] [--device cuda --precision bf16-mixed]

Both models have the same config and the same weights and see the same batch; steps alternate
(tfm, timm, tfm, ...) after warm-up, in one process with the same threads. Each side takes the
optimizer its framework builds: tfm's TaskModule parameter groups with fused AdamW, and timm's
``create_optimizer_v2(model, "adamw")`` as timm's train.py does. Both use label-smoothed
cross-entropy. Prints one JSON line per case: images/s and the ratio tfm / timm.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Runtime, add_runtime_args, emit, interleaved  # noqa: E402
from tfm.nn import create_vit  # noqa: E402
from tfm.tasks.base import param_groups  # noqa: E402

CASES = {
    # the make-demo model (configs/vit_tiny_fashion.yaml): its convolutional stem goes into timm's
    # PatchEmbed too (as its ``proj``), so both sides run the same network
    "vit_tiny_fashion": dict(img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0, num_classes=10, batch=128, stem="conv"),
    # ViT-Ti/16 at 224
    "vit_tiny_224": dict(img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, num_classes=1000, batch=32, stem="patch"),
}
# on a GPU: ViT-B/16 at 224 (configs/vit_base.yaml) at its per-GPU batch
GPU_CASES = {"vit_base_224": dict(img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                                  num_classes=1000, batch=128, stem="patch")}
SMOKE_CASES = {"smoke": dict(img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10,
                             batch=4, stem="patch")}


def to_timm_names(sd):
    """tfm ViT names -> timm names (the inverse of tfm.nn.convert.timm_vit_to_tfm)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("patch_embed.cls_token", "cls_token").replace("patch_embed.pos_embed", "pos_embed")
        out[k.removeprefix("encoder.")] = v
    return out


def loss_fn(model, x, y):
    return lambda: F.cross_entropy(model(x), y, label_smoothing=0.1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    add_runtime_args(ap)
    args = ap.parse_args(argv)
    rt = Runtime.from_args(args)
    reps = args.reps or rt.pick(args, smoke=1, quick=5, full=15)
    cases = rt.pick(args, smoke=SMOKE_CASES, quick=CASES, full=CASES, gpu={**CASES, **GPU_CASES})
    for name, c in cases.items():
        cfg = dict(c)
        batch, stem = cfg.pop("batch"), cfg.pop("stem")
        torch.manual_seed(0)
        ours = create_vit("vit_tiny", image_size=cfg["img_size"], patch_size=cfg["patch_size"], in_chans=cfg["in_chans"],
                          dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
                          num_classes=cfg["num_classes"], stem=stem)
        ref = timm.models.vision_transformer.VisionTransformer(**cfg, drop_path_rate=0.0)
        ref.patch_embed.proj = copy.deepcopy(ours.patch_embed.proj)
        ref.load_state_dict(to_timm_names(ours.state_dict()))
        ref, ours = ref.train().to(rt.device), ours.train().to(rt.device)
        x = torch.randn(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"], device=rt.device)
        y = torch.randint(0, cfg["num_classes"], (batch,), device=rt.device)
        opt_ours = torch.optim.AdamW(param_groups(ours, 0.05), lr=1e-4, fused=True)
        opt_ref = create_optimizer_v2(ref, "adamw", lr=1e-4, weight_decay=0.05)
        t = interleaved({"ours": rt.train_step(loss_fn(ours, x, y), opt_ours), "timm": rt.train_step(loss_fn(ref, x, y), opt_ref)},
                        warmup=1 if args.smoke else 3, reps=reps)
        emit("vit_throughput", "images_per_s", batch / t["ours"], batch / t["timm"], "timm VisionTransformer + timm AdamW",
             {"case": name, "batch": batch, "stem": stem, **cfg, **rt.describe(), "reps": reps})


if __name__ == "__main__":
    main()
