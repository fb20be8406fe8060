"""Encoder, Decoder and EncoderDecoder: stacks of the one :class:`TransformerLayer`.

The stacks work on embeddings (``(B, T, dim)``); token, position and patch embeddings live in
:mod:`tfm.nn.embeddings` and the models in :mod:`tfm.nn.models` put the pieces together.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import KVCache, padding_mask
from .config import TransformerConfig
from .layers import TransformerLayer, select_positions


class Encoder(nn.Module):
    """Bidirectional self-attention stack with an optional final LayerNorm (pre-LN stacks)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        if cfg.cross_attention:
            raise ValueError("an Encoder has no cross-attention: set cross_attention=False")
        self.cfg = cfg
        self.blocks = nn.ModuleList(TransformerLayer(cfg, p) for p in cfg.drop_path_rates())
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps) if cfg.use_final_norm else nn.Identity()

    def forward(
        self, x: Tensor, key_padding_mask: Tensor | None = None, output_positions: slice | Tensor | None = None
    ) -> Tensor:
        """``key_padding_mask``: ``(B, T)``, True at padding positions. ``output_positions``: return
        only these positions (a slice or ``(B, K)`` indices); the last layer computes nothing else."""
        mask = padding_mask(key_padding_mask)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask=mask, positions=output_positions if i == last else None)
        if output_positions is not None and not self.blocks:
            x = select_positions(x, output_positions)
        return self.norm(x)


class Decoder(nn.Module):
    """Causal self-attention stack, with cross-attention to a memory when ``cfg.cross_attention``.

    Pass a :class:`KVCache` to decode incrementally: ``x`` then holds only the new positions and
    the cache keeps the keys and values of the earlier ones (and the memory's, computed once).
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(TransformerLayer(cfg, p) for p in cfg.drop_path_rates())
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps) if cfg.use_final_norm else nn.Identity()

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks))

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        memory_padding_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """``key_padding_mask`` (True = pad) is needed only for left padding: with right padding a
        causal mask already keeps every real position away from the pads."""
        past = cache.length if cache is not None else 0
        q_len = x.shape[1]
        if key_padding_mask is not None:
            mask, is_causal = padding_mask(key_padding_mask, causal=True, q_len=q_len), False
        elif past == 0:
            mask, is_causal = None, True
        elif q_len == 1:
            mask, is_causal = None, False
        else:  # several new positions after a cached prefix: bottom-right aligned causal mask
            total = past + q_len
            mask = torch.ones(q_len, total, dtype=torch.bool, device=x.device).tril(past)
            is_causal = False
        mem_mask = padding_mask(memory_padding_mask)
        for i, block in enumerate(self.blocks):
            x = block(
                x,
                attn_mask=mask,
                is_causal=is_causal,
                memory=memory,
                memory_mask=mem_mask,
                cache=cache[i] if cache is not None else None,
            )
        return self.norm(x)


class EncoderDecoder(nn.Module):
    """An :class:`Encoder` and a cross-attending :class:`Decoder` (Vaswani et al. 2017)."""

    def __init__(self, encoder: TransformerConfig, decoder: TransformerConfig) -> None:
        super().__init__()
        if not decoder.cross_attention:
            raise ValueError("the decoder of an EncoderDecoder needs cross_attention=True")
        self.encoder = Encoder(encoder)
        self.decoder = Decoder(decoder)

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor:
        memory = self.encoder(src, src_padding_mask)
        return self.decoder(tgt, memory, src_padding_mask, tgt_padding_mask)
