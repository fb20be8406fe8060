"""FeedForward, DropPath and the one TransformerLayer every encoder and decoder is made of."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import LayerCache, MultiHeadAttention
from .config import ConfigError, TransformerConfig

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,
    "swish": nn.SiLU,  # HF's name for SiLU (Marian / OPUS-MT)
}


class FeedForward(nn.Module):
    """Position-wise ``fc2(dropout(act(fc1(x))))``; names as timm's ``Mlp``."""

    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu", dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"activation={activation!r}: use one of {', '.join(_ACTIVATIONS)}")
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = _ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole sample's residual branch with probability ``p``
    and scale the kept ones by ``1/(1-p)``; identity in eval."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"drop path rate {p} must be in [0, 1)")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class TransformerLayer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; pre- or post-LN.

    Pre-LN (``norm_first``, ViT / GPT): ``x + f(norm(x))``. Post-LN (BERT, Vaswani):
    ``norm(x + f(x))``. Residual dropout and DropPath wrap each branch.
    """

    def __init__(self, cfg: TransformerConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm_first = cfg.norm_first
        eps = cfg.layer_norm_eps
        self.norm1 = nn.LayerNorm(cfg.dim, eps=eps)
        self.attn = MultiHeadAttention(cfg.dim, cfg.num_heads, cfg.qkv_bias, cfg.bias, cfg.attn_dropout)
        if cfg.cross_attention:
            self.norm_cross = nn.LayerNorm(cfg.dim, eps=eps)
            self.cross_attn = MultiHeadAttention(cfg.dim, cfg.num_heads, cfg.qkv_bias, cfg.bias, cfg.attn_dropout, cross=True)
        else:
            self.cross_attn = None
        self.norm2 = nn.LayerNorm(cfg.dim, eps=eps)
        self.mlp = FeedForward(cfg.dim, cfg.hidden_dim, cfg.activation, cfg.activation_dropout, cfg.bias)
        self.dropout = cfg.dropout
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _branch(self, y: Tensor) -> Tensor:
        if self.dropout > 0:
            y = F.dropout(y, self.dropout, self.training)
        return self.drop_path(y)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: LayerCache | None = None,
        positions: slice | Tensor | None = None,
    ) -> Tensor:
        """``positions`` (a slice, or ``(B, K)`` indices): compute the output only at these
        positions, attending over all of ``x``. A last layer whose head reads a few positions
        ([CLS], masked tokens) then skips the work of all the others; the result is the same."""
        if positions is not None and (is_causal or self.cross_attn is not None):
            raise ValueError("positions= is for the last layer of an encoder (no causal mask, no cross-attention)")
        if self.norm_first:
            h = self.norm1(x)
            if positions is None:
                x = x + self._branch(self.attn(h, attn_mask=attn_mask, is_causal=is_causal, cache=cache))
            else:
                x = select_positions(x, positions)
                x = x + self._branch(self.attn(h, attn_mask=attn_mask, queries=select_positions(h, positions)))
            if self.cross_attn is not None:
                x = x + self._branch(self.cross_attn(self.norm_cross(x), memory, memory_mask, cache=cache))
            return x + self._branch(self.mlp(self.norm2(x)))
        if positions is None:
            x = self.norm1(x + self._branch(self.attn(x, attn_mask=attn_mask, is_causal=is_causal, cache=cache)))
        else:
            q = select_positions(x, positions)
            x = self.norm1(q + self._branch(self.attn(x, attn_mask=attn_mask, queries=q)))
        if self.cross_attn is not None:
            x = self.norm_cross(x + self._branch(self.cross_attn(x, memory, memory_mask, cache=cache)))
        return self.norm2(x + self._branch(self.mlp(x)))


def select_positions(x: Tensor, positions: slice | Tensor) -> Tensor:
    """Rows of ``x`` (``B, T, D``) at a slice of positions or at ``(B, K)`` indices."""
    if isinstance(positions, slice):
        return x[:, positions]
    return torch.gather(x, 1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
