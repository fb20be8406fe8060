"""Whole models on the shared backbone, and named builders (``vit_tiny()``, ...)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from .attention import MultiHeadAttention
from .config import ConfigError, TransformerConfig
from .embeddings import PatchEmbedding
from .transformer import Encoder


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal linear/embedding weights, zero biases, unit LayerNorms (timm, BERT)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VisionTransformer(nn.Module):
    """ViT (Dosovitskiy et al. 2021) with timm's contract.

    ``forward_features(images)`` gives the normalised tokens ``(B, 1 + N, dim)``,
    ``forward_head(tokens)`` the logits, ``no_weight_decay()`` the parameters kept out of weight
    decay. Parameter names follow timm's where they can (``patch_embed.proj``, ``blocks.i.attn.qkv``,
    ``mlp.fc1``...), behind ``encoder.``; :func:`tfm.nn.convert.load_timm_vit` maps the rest.
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        head_dropout: float = 0.0,
        global_pool: Literal["token", "avg"] = "token",
        class_token: bool = True,
        layer_norm_eps: float = 1e-6,
        stem: Literal["patch", "conv"] = "patch",
    ) -> None:
        super().__init__()
        if global_pool == "token" and not class_token:
            raise ConfigError("global_pool='token' needs class_token=True")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.dim = dim
        self.cfg = TransformerConfig(
            dim=dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            activation="gelu",
            norm_first=True,
            layer_norm_eps=layer_norm_eps,
            qkv_bias=qkv_bias,
            dropout=dropout,
            attn_dropout=attn_dropout,
            drop_path=drop_path_rate,
            final_norm=global_pool == "token",
        )
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_chans, dim, class_token, dropout, stem)
        self.encoder = Encoder(self.cfg)
        self.fc_norm = nn.LayerNorm(dim, eps=layer_norm_eps) if global_pool == "avg" else nn.Identity()
        self.head_drop = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)
        nn.init.trunc_normal_(self.patch_embed.pos_embed, std=0.02, a=-0.04, b=0.04)
        if self.patch_embed.cls_token is not None:
            nn.init.normal_(self.patch_embed.cls_token, std=1e-6)

    # timm contract ---------------------------------------------------------------------------
    def forward_features(self, images: Tensor) -> Tensor:
        return self.encoder(self.patch_embed(images))

    def pool(self, tokens: Tensor) -> Tensor:
        if self.global_pool == "token":
            return tokens[:, 0]
        return tokens[:, self.patch_embed.num_prefix_tokens :].mean(dim=1)

    def forward_head(self, tokens: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(self.fc_norm(self.pool(tokens)))
        return x if pre_logits else self.head(x)

    def forward(self, images: Tensor) -> Tensor:
        if self.global_pool == "token":
            # Only [CLS] reaches the head: the last block computes its output alone (same logits,
            # a large share of the last block's work saved).
            return self.forward_head(self.encoder(self.patch_embed(images), output_positions=slice(0, 1)))
        return self.forward_head(self.forward_features(images))

    def no_weight_decay(self) -> set[str]:
        return {"patch_embed.pos_embed", "patch_embed.cls_token"}

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            init_weights(self.head)

    # helpers for tasks -------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Depth for layer-wise LR decay: embeddings are layer 0, block i is i + 1, the head last."""
        return len(self.encoder.blocks) + 1

    def layer_id(self, name: str) -> int:
        if name.startswith("patch_embed."):
            return 0
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        return self.num_layers

    @torch.no_grad()
    def attention_maps(self, images: Tensor) -> list[Tensor]:
        """Softmax attention of every block, ``(B, heads, T, T)`` each, for pictures."""
        maps: list[Tensor] = []
        hooks = [
            m.register_forward_pre_hook(lambda mod, args, kwargs: maps.append(mod.attention_probs(args[0])), with_kwargs=True)
            for m in self.encoder.modules()
            if isinstance(m, MultiHeadAttention)
        ]
        try:
            self.forward_features(images)
        finally:
            for h in hooks:
                h.remove()
        return maps


VIT_PRESETS: dict[str, dict[str, Any]] = {
    "vit_tiny": dict(dim=192, depth=12, num_heads=3),
    "vit_small": dict(dim=384, depth=12, num_heads=6),
    "vit_base": dict(dim=768, depth=12, num_heads=12),
    "vit_large": dict(dim=1024, depth=24, num_heads=16),
}


def create_vit(arch: str, **overrides: Any) -> VisionTransformer:
    """``create_vit("vit_tiny", image_size=28, patch_size=4, in_chans=1, num_classes=10)``."""
    if arch not in VIT_PRESETS:
        raise ConfigError(f"unknown ViT arch {arch!r}: use one of {', '.join(VIT_PRESETS)}")
    kwargs = {**VIT_PRESETS[arch], **{k: v for k, v in overrides.items() if v is not None}}
    return VisionTransformer(**kwargs)


def vit_tiny(**kwargs: Any) -> VisionTransformer:
    """ViT-Ti/16: dim 192, 12 layers, 3 heads (5.7M parameters at 224)."""
    return create_vit("vit_tiny", **kwargs)


def vit_small(**kwargs: Any) -> VisionTransformer:
    """ViT-S/16: dim 384, 12 layers, 6 heads (22M parameters at 224)."""
    return create_vit("vit_small", **kwargs)


def vit_base(**kwargs: Any) -> VisionTransformer:
    """ViT-B/16: dim 768, 12 layers, 12 heads (86M parameters at 224)."""
    return create_vit("vit_base", **kwargs)


def vit_large(**kwargs: Any) -> VisionTransformer:
    """ViT-L/16: dim 1024, 24 layers, 16 heads (304M parameters at 224)."""
    return create_vit("vit_large", **kwargs)
