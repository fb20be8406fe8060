"""Weights from outside a run, read in one place: a tfm checkpoint, a weights file (``.safetensors``, or a torch
file of tensors, e.g. timm's ``.pth``/``.bin``) or a Hugging Face folder, into a model under a prefix.

Nothing in a file is ever run: torch files are read with ``weights_only=True`` (tfm's checkpoints hold plain types
and tensors only), so a crafted pickle is refused with one line instead of executing its code.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from .errors import UserError
from .nn.convert import (
    ConversionError,
    load_into,
    load_state_dict_file,
    load_timm_vit,
    load_vit_backbone,
    state_dict_of,
)

M = TypeVar("M", bound=nn.Module)


def read_checkpoint(path: str | Path, mmap: bool = True) -> dict[str, Any]:
    """A torch file (a Lightning checkpoint, a weights file) read with ``weights_only=True``; one line when it can't
    be: a pickle that would run code, or a broken file."""
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e).lower():
            raise UserError(f"checkpoint {path} cannot be read (UnpicklingError): it is corrupted or not a torch file")
        raise UserError(f"checkpoint {path} cannot be read: it holds Python objects that a weights-only load refuses "
                        "(loading them would run code from the file); tfm reads only plain types and tensors") from None
    except Exception as e:  # truncated, corrupted, not a torch file at all
        raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}): it is truncated, corrupted or not a "
                        "tfm checkpoint") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {path} cannot be read: it holds a {type(ckpt).__name__}, not a checkpoint")
    return ckpt


class Pretrained:
    """What ``--model.init_from`` names, read once: a file's weights (``hparams``: a tfm checkpoint's
    hyper-parameters, else empty) or, with ``folders``, a Hugging Face folder. ``kind``: what may be passed."""

    def __init__(self, source: str, kind: str, folders: bool = False, option: str = "--model.init_from") -> None:
        self.source, self.option = source, option
        path = Path(source).expanduser()
        self.is_file = path.is_file()
        if not self.is_file and not (folders and (path.is_dir() or "/" in source)):
            raise self.error(f"does not exist: pass {kind}")
        self.state: dict[str, Tensor] = {}
        self.hparams: dict[str, Any] = {}
        if self.is_file and path.suffix == ".safetensors":
            self.state = load_state_dict_file(path)
        elif self.is_file:
            ckpt = read_checkpoint(path, mmap=False)
            self.hparams = dict(ckpt.get("hyper_parameters") or {})
            self.state = state_dict_of(ckpt)

    def error(self, message: str) -> UserError:
        return UserError(f"{self.option} {self.source} {message}")

    def weights(self, *prefixes: str) -> dict[str, Tensor]:
        """The weights under the first of ``prefixes`` that has any, the prefix stripped (``""``: all of them)."""
        for prefix in prefixes:
            found = {k[len(prefix):]: v for k, v in self.state.items() if k.startswith(prefix)}
            if found:
                return found
        return {}

    def load(self, model: M, state: dict[str, Tensor], loader: Callable[..., Any] = load_into, hint: str = "") -> M:
        """``loader(model, state, what)`` (shapes checked); a mismatch is one line."""
        try:
            loader(model, state, f"checkpoint {self.source}")
        except ConversionError as e:
            raise UserError(f"{self.option} {self.source}: {e}{hint}") from None
        return model

    def hf(self, loader: Callable[..., M], *args: Any, **kwargs: Any) -> M:
        """A model from a Hugging Face folder through one of :mod:`tfm.nn.convert`'s importers."""
        try:
            return loader(self.source, *args, **kwargs)
        except ConversionError as e:
            raise UserError(f"{self.option} {self.source}: {e}") from None


def load_vit(model: M, init_from: str) -> M:
    """A tfm checkpoint (any task's ViT: ``net.backbone.`` or ``net.`` weights) or timm ViT weights into ``model``:
    position embeddings resized to its image size, a head kept only where it fits."""
    src = Pretrained(init_from, "a tfm .ckpt or timm ViT weights (.safetensors, .pth, .bin)")
    hint = " (the backbone settings, e.g. patch_size, stem, dim, in_chans, must be those it was trained with)"
    if state := src.weights("net.backbone.", "net."):
        return src.load(model, state, load_vit_backbone, hint)
    return src.load(model, src.state, lambda m, sd, _: load_timm_vit(sd, m), hint)
