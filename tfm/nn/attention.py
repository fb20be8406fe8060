"""Multi-head attention on ``torch.nn.functional.scaled_dot_product_attention``.

Masks follow SDPA: a boolean ``attn_mask`` broadcastable to ``(batch, heads, queries, keys)``
where ``True`` means *may attend*. :func:`padding_mask` turns a ``(batch, keys)`` padding mask
(``True`` at padding, the ``nn.MultiheadAttention`` convention) into one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ConfigError


def padding_mask(key_padding_mask: Tensor | None, causal: bool = False, q_len: int | None = None) -> Tensor | None:
    """SDPA boolean mask from a ``(B, S)`` padding mask (True = pad), optionally also causal.

    With ``causal``, query ``i`` of ``q_len`` sees the keys up to its own position, the queries
    being the last ``q_len`` of the ``S`` positions (incremental decoding). Returns ``None`` when
    there is nothing to mask, so SDPA can take its fastest path. Right-padded sequences under a
    causal mask need no padding mask at all: a real query never sees a later pad.
    """
    if key_padding_mask is None:
        return None
    mask = ~key_padding_mask.bool()[:, None, None, :]
    if causal:
        s = key_padding_mask.shape[1]
        q = s if q_len is None else q_len
        mask = mask & torch.ones(q, s, dtype=torch.bool, device=mask.device).tril(s - q)
    return mask


class LayerCache:
    """Keys and values one decoder layer has already computed.

    ``k``/``v`` grow by one position per decoding step (self-attention); ``ck``/``cv`` are the
    cross-attention keys and values of the encoder output, computed once per sentence.
    """

    __slots__ = ("k", "v", "ck", "cv")

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.ck: Tensor | None = None
        self.cv: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        for name in self.__slots__:
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.index_select(0, index))


class KVCache:
    """Incremental-decoding state of a whole decoder: one :class:`LayerCache` per layer."""

    def __init__(self, num_layers: int) -> None:
        self.layers = [LayerCache() for _ in range(num_layers)]

    def __getitem__(self, i: int) -> LayerCache:
        return self.layers[i]

    @property
    def length(self) -> int:
        """Number of positions already decoded."""
        k = self.layers[0].k
        return 0 if k is None else k.shape[2]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search reorders hypotheses after every step)."""
        for layer in self.layers:
            layer.reorder(index)


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with fused projections.

    Self-attention projects queries, keys and values with one ``qkv`` matmul (as timm does);
    cross-attention projects queries with ``q`` and keys/values of the memory with one ``kv``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        bias: bool = True,
        attn_dropout: float = 0.0,
        cross: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.cross = cross
        self.attn_dropout = attn_dropout
        if cross:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def _heads(self, x: Tensor, n: int) -> tuple[Tensor, ...]:
        b, t, _ = x.shape
        return x.view(b, t, n, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def project(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        cache: LayerCache | None = None,
        queries: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values as ``(B, heads, T, head_dim)``, using and filling ``cache``.

        ``queries`` (self-attention only): the rows of ``x`` that need an output; keys and values
        still come from all of ``x``, and only those rows are projected to queries.
        """
        if not self.cross:
            if queries is None:
                q, k, v = self._heads(self.qkv(x), 3)
            else:
                dim = x.shape[-1]
                w, b = self.qkv.weight, self.qkv.bias
                (q,) = self._heads(F.linear(queries, w[:dim], None if b is None else b[:dim]), 1)
                k, v = self._heads(F.linear(x, w[dim:], None if b is None else b[dim:]), 2)
            if cache is not None:
                k, v = cache.append(k, v)
            return q, k, v
        (q,) = self._heads(self.q(x), 1)
        if cache is not None and cache.ck is not None:
            return q, cache.ck, cache.cv
        if memory is None:
            raise ValueError("cross-attention needs the encoder output (memory)")
        k, v = self._heads(self.kv(memory), 2)
        if cache is not None:
            cache.ck, cache.cv = k, v
        return q, k, v

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: LayerCache | None = None,
        queries: Tensor | None = None,
    ) -> Tensor:
        q, k, v = self.project(x, memory, cache, queries)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=is_causal and attn_mask is None,
        )
        b, _, t, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, t, -1))

    @torch.no_grad()
    def attention_probs(self, x: Tensor, memory: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        """The softmax attention weights ``(B, heads, T, S)`` (for pictures; SDPA never forms them)."""
        q, k, _ = self.project(x, memory)
        scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        return scores.softmax(-1)
