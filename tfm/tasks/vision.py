"""ViTTask: the base of the tasks on a ViT backbone (classification, segmentation, detection): the backbone's
settings declared once, as a preset and overrides, and its starting weights (``init_from``)."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from ..errors import UserError
from ..nn.models import VIT_PRESETS, VisionTransformer
from ..pretrained import load_vit
from .base import TaskModule


class ViTTask(TaskModule):
    """A task on a Vision Transformer. A subclass builds ``self.net`` from ``self.arch`` and ``self.vit``
    (the keyword arguments of :func:`~tfm.nn.models.create_vit`); ``init_from`` is loaded after its ``__init__``.

    Args:
        arch: a ViT preset (``vit_tiny``, ``vit_small``, ``vit_base``, ``vit_large``); the fields below that are set
            override it.
        image_size: linked from the DataModule by the CLI.
        in_chans: linked from the DataModule by the CLI.
        patch_size: side of the square patches.
        dim: width (default: the preset's).
        depth: number of blocks (default: the preset's).
        num_heads: attention heads (default: the preset's).
        mlp_ratio: feed-forward width over ``dim`` (default: the preset's).
        drop_path_rate: stochastic depth of the last block (linear from 0 at the first).
        dropout: dropout on the residual branches.
        stem: ``patch`` (linear patch projection, the paper's) or ``conv`` (a small convolutional stem with the same
            token grid, Xiao et al. 2021: converges much faster on small data).
        init_from: a tfm checkpoint (any task's ViT) or timm ViT weights (``.safetensors``/``.pth``/``.bin``) to start
            the backbone from; position embeddings are resized to ``image_size``, a head of another size is dropped.
        **kwargs: optimisation settings of :class:`~tfm.tasks.base.TaskModule` (``lr`` ...).
    """

    def __init__(
        self,
        arch: str = "vit_tiny",
        image_size: int = 224,
        in_chans: int = 3,
        patch_size: int = 16,
        dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
        drop_path_rate: float = 0.1,
        dropout: float = 0.0,
        stem: Literal["patch", "conv"] = "patch",
        init_from: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if arch not in VIT_PRESETS:
            raise UserError(f"arch={arch!r} is not a ViT preset: use one of {', '.join(VIT_PRESETS)}")
        self.save_hyperparameters()  # this task's arguments and its subclass's (Lightning reads both frames)
        self.arch, self.init_from = arch, init_from
        self.vit = dict(image_size=image_size, patch_size=patch_size, in_chans=in_chans, dim=dim, depth=depth,
                        num_heads=num_heads, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, dropout=dropout, stem=stem)

    @property
    def backbone(self) -> VisionTransformer:
        return self.net

    def after_init(self) -> None:
        if self.init_from:  # before the EMA copies the weights
            load_vit(self.backbone, self.init_from)
        super().after_init()

    def count_tokens(self, images: Tensor) -> tuple[int, int]:
        """(images, tokens) of a batch of images, for throughput: each is its patches and prefix tokens."""
        pe = self.backbone.patch_embed
        h, w = images.shape[-2:]
        return len(images), len(images) * ((h // pe.patch_size[0]) * (w // pe.patch_size[1]) + pe.num_prefix_tokens)
