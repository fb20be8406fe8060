"""TaskModule: optimizer groups, LR schedules, layer-wise decay, EMA."""

from __future__ import annotations

import math

import pytest
import torch

from tfm.tasks import ImageClassification
from tfm.tasks.base import lr_lambda, param_groups


def tiny_task(**kw):
    args = dict(arch="vit_tiny", num_classes=4, image_size=16, in_chans=1, patch_size=4, dim=32, depth=3, num_heads=2)
    args.update(kw)
    return ImageClassification(**args)


def test_no_weight_decay_on_biases_norms_positions_and_cls():
    task = tiny_task()
    groups = param_groups(task.net, weight_decay=0.05)
    names = {id(p): n for n, p in task.net.named_parameters()}
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert {"patch_embed.pos_embed", "patch_embed.cls_token", "encoder.norm.weight", "head.bias"} <= no_decay
    assert all(n.endswith(".weight") and "norm" not in n for n in decay)
    assert "encoder.blocks.0.attn.qkv.weight" in decay and "patch_embed.proj.weight" in decay
    assert len(no_decay) + len(decay) == len(names)


def test_layer_decay_scales():
    task = tiny_task()
    groups = param_groups(task.net, 0.05, layer_decay=0.5)
    names = {id(p): n for n, p in task.net.named_parameters()}
    scale = {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    # 3 blocks: embeddings are layer 0, block i is i + 1, the head layer 4
    assert scale["patch_embed.proj.weight"] == 0.5**4
    assert scale["encoder.blocks.0.attn.qkv.weight"] == 0.5**3
    assert scale["encoder.blocks.2.mlp.fc1.weight"] == 0.5**1
    assert scale["head.weight"] == 1.0


def test_schedules():
    f = lr_lambda("cosine", warmup_steps=10, total_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(59) == pytest.approx(0.5) and f(109) == pytest.approx(0.0, abs=1e-9)
    g = lr_lambda("linear", warmup_steps=0, total_steps=100, min_lr_ratio=0.1)
    assert g(49) == pytest.approx(0.1 + 0.9 * 0.5)
    h = lr_lambda("inverse_sqrt", warmup_steps=4000, total_steps=10**6)
    assert h(3999) == pytest.approx(1.0) and h(15999) == pytest.approx(math.sqrt(4000 / 16000))
    assert lr_lambda("constant", 0, 10)(5) == 1.0


def test_ema_tracks_the_weights_and_is_used_for_evaluation():
    task = tiny_task(ema_decay=0.5)
    assert task.eval_net is task.net  # before any step
    before = task.net.head.weight.detach().clone()
    with torch.no_grad():
        task.net.head.weight.add_(1.0)
    task.ema.update_parameters(task.net)  # first update copies
    with torch.no_grad():
        task.net.head.weight.add_(1.0)
    task.ema.update_parameters(task.net)
    assert torch.allclose(task.eval_net.head.weight, before + 1.5)
    assert not any(p.requires_grad for p in task.ema.parameters())
    assert all(not n.startswith("ema") for n, _ in task.named_parameters() if _.requires_grad)
