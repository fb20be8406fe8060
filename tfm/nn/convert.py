"""Import weights of other libraries into tfm models.

Each importer takes a state dict, a ``.safetensors`` file or a ``.bin``/``.pth`` file, maps the
names, checks every shape and fails with one clear message when something does not fit.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .models import VisionTransformer

StateDict = Mapping[str, Tensor]


class ConversionError(ValueError):
    """Weights that do not fit the model they are loaded into."""


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``model``/``state_dict`` keys unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    return dict(obj)


def _as_state_dict(source: StateDict | str | Path) -> dict[str, Tensor]:
    return load_state_dict_file(source) if isinstance(source, (str, Path)) else dict(source)


def load_into(model: nn.Module, state_dict: StateDict, what: str, strict: bool = True) -> None:
    """``model.load_state_dict`` with shape checks that name the first mismatching tensor."""
    own = model.state_dict()
    for k, v in state_dict.items():
        if k in own and own[k].shape != v.shape:
            raise ConversionError(
                f"{what}: tensor {k} has shape {tuple(v.shape)} but the model expects {tuple(own[k].shape)}"
            )
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if strict and (missing or unexpected):
        raise ConversionError(f"{what}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")


# timm ViT ------------------------------------------------------------------------------------------

_TIMM_VIT_RENAMES = [
    (r"^cls_token$", "patch_embed.cls_token"),
    (r"^pos_embed$", "patch_embed.pos_embed"),
    (r"^blocks\.", "encoder.blocks."),
    (r"^norm\.", "encoder.norm."),
]
_TIMM_VIT_UNSUPPORTED = ("reg_token", ".ls1.", ".ls2.", ".q_norm.", ".k_norm.", "norm_pre.", "attn_pool.")


def timm_vit_config(state_dict: StateDict, num_heads: int | None = None) -> dict[str, Any]:
    """Architecture arguments of :class:`VisionTransformer` read off a timm ViT state dict.

    The number of heads is not in the weights: pass it, or it is taken as ``dim // 64``."""
    sd = state_dict
    if "patch_embed.proj.weight" not in sd or "pos_embed" not in sd:
        raise ConversionError("not a timm VisionTransformer state dict: no patch_embed.proj.weight / pos_embed")
    w = sd["patch_embed.proj.weight"]
    dim, in_chans, patch = w.shape[0], w.shape[1], w.shape[-1]
    class_token = "cls_token" in sd
    n = sd["pos_embed"].shape[1] - (1 if class_token else 0)
    side = int(math.isqrt(n))
    if side * side != n:
        raise ConversionError(f"position embeddings of {n} patches are not a square grid")
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    return dict(
        image_size=side * patch,
        patch_size=patch,
        in_chans=in_chans,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
        dim=dim,
        depth=depth,
        num_heads=num_heads or max(1, dim // 64),
        mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        global_pool="avg" if "fc_norm.weight" in sd else "token",
        class_token=class_token,
    )


def timm_vit_to_tfm(state_dict: StateDict) -> dict[str, Tensor]:
    """Rename a timm ``VisionTransformer`` state dict to :class:`VisionTransformer` names."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if any(u in key for u in _TIMM_VIT_UNSUPPORTED):
            raise ConversionError(f"timm ViT weight {key} belongs to a variant tfm does not build (layer scale, registers, qk-norm)")
        new = key
        for pattern, repl in _TIMM_VIT_RENAMES:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out


def load_timm_vit(
    source: StateDict | str | Path,
    model: VisionTransformer | None = None,
    num_heads: int | None = None,
    **overrides: Any,
) -> VisionTransformer:
    """Load timm ViT weights into ``model``, or into a new model built from the weights' shapes.

    ``overrides`` change the built model: ``image_size=384`` resizes the position embeddings,
    ``num_classes=10`` starts a new classifier.
    """
    timm_sd = _as_state_dict(source)
    sd = timm_vit_to_tfm(timm_sd)
    if model is None:
        cfg = timm_vit_config(timm_sd, num_heads)
        image_size = overrides.pop("image_size", cfg["image_size"])
        model = VisionTransformer(**{**cfg, **overrides})
        load_into(model, _keep_head_if_it_fits(model, sd), "timm ViT", strict=False)
        if image_size != cfg["image_size"]:
            model.patch_embed.set_image_size(image_size)
        return model
    load_vit_backbone(model, sd, "timm ViT")
    return model


def load_vit_backbone(model: VisionTransformer, sd: StateDict, what: str) -> None:
    """Load tfm-named ViT weights; position embeddings are resized to the model's image size and
    the classifier is kept only when its number of classes matches."""
    sd = dict(sd)
    pe = sd.get("patch_embed.pos_embed")
    own = model.patch_embed
    if pe is not None and pe.shape != own.pos_embed.shape:
        old = pe.shape[1] - own.num_prefix_tokens
        side = int(math.isqrt(old))
        if side * side != old or pe.shape[-1] != own.pos_embed.shape[-1]:
            raise ConversionError(f"{what}: position embeddings {tuple(pe.shape)} do not fit {tuple(own.pos_embed.shape)}")
        from .embeddings import resize_pos_embed

        sd["patch_embed.pos_embed"] = resize_pos_embed(pe, own.grid_size, (side, side), own.num_prefix_tokens)
    load_into(model, _keep_head_if_it_fits(model, sd), what, strict=False)


def _keep_head_if_it_fits(model: VisionTransformer, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keep the classifier only when its number of classes matches the model's."""
    head = sd.get("head.weight")
    if head is not None and (model.num_classes == 0 or head.shape[0] != model.num_classes):
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    missing = sorted(k for k in set(model.state_dict()) - set(sd) if not k.startswith("head."))
    if missing:
        raise ConversionError(f"ViT weights lack {missing[:5]} (another ViT variant?)")
    return sd
