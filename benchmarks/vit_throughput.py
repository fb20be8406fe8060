"""Training-step throughput (forward + backward + AdamW step), tfm ViT vs timm ViT.

    python benchmarks/vit_throughput.py [--quick]

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
from benchmarks.common import emit, interleaved  # noqa: E402
from tfm.nn import create_vit  # noqa: E402
from tfm.tasks.base import param_groups  # noqa: E402

CASES = {
    # the make-demo model (configs/vit_tiny_fashion.yaml): its convolutional stem goes into timm's
    # PatchEmbed too (as its ``proj``), so both sides run the same network
    "vit_tiny_fashion": dict(img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0, num_classes=10, batch=128, stem="conv"),
    # ViT-Ti/16 at 224
    "vit_tiny_224": dict(img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, num_classes=1000, batch=32, stem="patch"),
}


def to_timm_names(sd):
    """tfm ViT names -> timm names (the inverse of tfm.nn.convert.timm_vit_to_tfm)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("patch_embed.cls_token", "cls_token").replace("patch_embed.pos_embed", "pos_embed")
        out[k.removeprefix("encoder.")] = v
    return out


def train_step(model, optimizer, x, y):
    def step():
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args()
    reps = args.reps or (5 if args.quick else 15)
    for name, c in CASES.items():
        cfg = dict(c)
        batch, stem = cfg.pop("batch"), cfg.pop("stem")
        torch.manual_seed(0)
        ours = create_vit("vit_tiny", image_size=cfg["img_size"], patch_size=cfg["patch_size"], in_chans=cfg["in_chans"],
                          dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
                          num_classes=cfg["num_classes"], stem=stem)
        ref = timm.models.vision_transformer.VisionTransformer(**cfg, drop_path_rate=0.0)
        ref.patch_embed.proj = copy.deepcopy(ours.patch_embed.proj)
        ref.load_state_dict(to_timm_names(ours.state_dict()))
        ref.train(), ours.train()
        x = torch.randn(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"])
        y = torch.randint(0, cfg["num_classes"], (batch,))
        opt_ours = torch.optim.AdamW(param_groups(ours, 0.05), lr=1e-4, fused=True)
        opt_ref = create_optimizer_v2(ref, "adamw", lr=1e-4, weight_decay=0.05)
        t = interleaved({"ours": train_step(ours, opt_ours, x, y), "timm": train_step(ref, opt_ref, x, y)}, warmup=3, reps=reps)
        emit("vit_throughput", "images_per_s", batch / t["ours"], batch / t["timm"], "timm VisionTransformer + timm AdamW",
             {"case": name, "batch": batch, "stem": stem, **cfg, "threads": torch.get_num_threads(), "reps": reps})


if __name__ == "__main__":
    main()
