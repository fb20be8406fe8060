"""Token, segment and position embeddings; the ViT patch embedding with its [CLS] token."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ConfigError


class LearnedPositionEmbedding(nn.Embedding):
    """A learned vector per position (BERT, ViT)."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__(max_positions, dim)

    def forward(self, seq_len: int, offset: int = 0) -> Tensor:  # type: ignore[override]
        if offset + seq_len > self.num_embeddings:
            raise ValueError(
                f"sequence of {offset + seq_len} positions is longer than the model's max_positions={self.num_embeddings}"
            )
        return self.weight[offset : offset + seq_len]


def sinusoid_table(max_positions: int, dim: int, interleave: bool = False) -> Tensor:
    """Fixed sinusoidal positions of Vaswani et al. (2017).

    ``interleave=False`` puts all sines in the first half and all cosines in the second
    (fairseq, Marian); ``interleave=True`` alternates them as the paper writes the formula.
    """
    pos = torch.arange(max_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.empty(max_positions, dim, dtype=torch.float64)
    if interleave:
        table[:, 0::2] = torch.sin(angle[:, 0::2])
        table[:, 1::2] = torch.cos(angle[:, 1::2])
    else:
        half = math.ceil(dim / 2)
        table[:, :half] = torch.sin(angle[:, 0::2])
        table[:, half:] = torch.cos(angle[:, 1::2])
    return table.float()


class SinusoidalPositionEmbedding(nn.Module):
    """Fixed sinusoidal positions, a non-persistent buffer (nothing to learn or to save)."""

    def __init__(self, max_positions: int, dim: int, interleave: bool = False) -> None:
        super().__init__()
        self.register_buffer("table", sinusoid_table(max_positions, dim, interleave), persistent=False)

    def forward(self, seq_len: int, offset: int = 0) -> Tensor:
        if offset + seq_len > self.table.shape[0]:
            raise ValueError(
                f"sequence of {offset + seq_len} positions is longer than max_positions={self.table.shape[0]}"
            )
        return self.table[offset : offset + seq_len]


class TextEmbedding(nn.Module):
    """Token (+ segment) + position embedding, then optional LayerNorm and dropout.

    BERT: learned positions, segments, LayerNorm. Vaswani / Marian: sinusoidal positions, tokens
    scaled by ``sqrt(dim)``, no LayerNorm.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        max_positions: int = 512,
        position: str = "learned",
        type_vocab_size: int = 0,
        padding_idx: int | None = None,
        layer_norm_eps: float | None = 1e-12,
        dropout: float = 0.0,
        scale: bool = False,
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        if position == "learned":
            self.positions: nn.Module = LearnedPositionEmbedding(max_positions, dim)
        elif position == "sinusoidal":
            self.positions = SinusoidalPositionEmbedding(max_positions, dim)
        else:
            raise ConfigError(f"position={position!r}: use 'learned' or 'sinusoidal'")
        self.segments = nn.Embedding(type_vocab_size, dim) if type_vocab_size else None
        self.norm = nn.LayerNorm(dim, eps=layer_norm_eps) if layer_norm_eps is not None else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scale = math.sqrt(dim) if scale else 1.0

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None, offset: int = 0) -> Tensor:
        x = self.tokens(input_ids)
        if self.scale != 1.0:
            x = x * self.scale
        x = x + self.positions(input_ids.shape[1], offset)
        if self.segments is not None:
            seg = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.segments(seg)
        return self.dropout(self.norm(x))


def resize_pos_embed(pos_embed: Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int], num_prefix: int = 1) -> Tensor:
    """Bicubic (antialiased) interpolation of a ``(1, prefix + H*W, D)`` grid of position
    embeddings to another grid; the [CLS] position is kept as it is. Same as timm's
    ``resample_abs_pos_embed``."""
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    dim = pos_embed.shape[-1]
    orig_dtype = grid.dtype
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(orig_dtype)
    return torch.cat([prefix, grid], dim=1)


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def conv_stem(in_chans: int, dim: int, patch_size: int) -> nn.Sequential:
    """Xiao et al. 2021, "Early convolutions help transformers see better": 3x3 stride-2
    convolutions (BatchNorm, ReLU) down to the patch grid, then a 1x1 projection to ``dim``.
    Same token grid as a ``patch_size`` patchify stem; it trains faster and more stably."""
    k = int(math.log2(patch_size))
    if 2**k != patch_size or k < 1:
        raise ConfigError(f"a conv stem needs a power-of-two patch size, not {patch_size}")
    layers: list[nn.Module] = []
    c_in = in_chans
    for i in range(k):
        c_out = max(dim // 2 ** (k - 1 - i), 16)
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        c_in = c_out
    layers.append(nn.Conv2d(c_in, dim, 1))
    return nn.Sequential(*layers)


class PatchEmbedding(nn.Module):
    """Image -> ``[CLS] + patches`` tokens with learned position embeddings.

    Non-overlapping ``patch_size`` patches are projected linearly (``stem="patch"``: a strided
    convolution, as in the paper and timm), or by a small convolutional stem (``stem="conv"``,
    :func:`conv_stem`) giving the same grid. Images of another size than ``image_size`` get
    position embeddings interpolated on the fly; :meth:`set_image_size` makes such a resize
    permanent.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        dim: int = 768,
        class_token: bool = True,
        dropout: float = 0.0,
        stem: str = "patch",
    ) -> None:
        super().__init__()
        self.image_size = _pair(image_size)
        self.patch_size = _pair(patch_size)
        if self.image_size[0] % self.patch_size[0] or self.image_size[1] % self.patch_size[1]:
            raise ConfigError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if stem == "patch":
            self.proj: nn.Module = nn.Conv2d(in_chans, dim, kernel_size=self.patch_size, stride=self.patch_size)
        elif stem == "conv":
            if self.patch_size[0] != self.patch_size[1]:
                raise ConfigError("a conv stem needs square patches")
            self.proj = conv_stem(in_chans, dim, self.patch_size[0])
        else:
            raise ConfigError(f"stem={stem!r}: use 'patch' or 'conv'")
        self.num_prefix_tokens = 1 if class_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_prefix_tokens + self.num_patches, dim) * 0.02)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])

    @property
    def num_patches(self) -> int:
        g = self.grid_size
        return g[0] * g[1]

    def forward(self, images: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        if h % self.patch_size[0] or w % self.patch_size[1]:
            raise ValueError(f"image of {h}x{w} is not a multiple of the patch size {self.patch_size}")
        x = self.proj(images).flatten(2).transpose(1, 2)
        grid = (h // self.patch_size[0], w // self.patch_size[1])
        pos = resize_pos_embed(self.pos_embed, grid, self.grid_size, self.num_prefix_tokens)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + pos)

    @torch.no_grad()
    def set_image_size(self, image_size: int | tuple[int, int]) -> None:
        """Resize the position embeddings for a new input size (fine-tuning at another resolution)."""
        new = _pair(image_size)
        old_grid = self.grid_size
        self.image_size = new
        resized = resize_pos_embed(self.pos_embed.data, self.grid_size, old_grid, self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(resized.contiguous())
