"""Task heads on top of an encoder: BERT's masked-LM and next-sentence heads, and the three small
fine-tuning heads (sequence classification, token classification, span extraction).

Heads take hidden states and return logits; losses live with the tasks. Parameter names are
short (``dense``, ``norm``, ``decoder``, ``proj``); :mod:`tfm.nn.convert` maps HF's onto them.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import _ACTIVATIONS


class MLMHead(nn.Module):
    """Masked-LM head: ``decoder(norm(act(dense(h))))`` onto the vocabulary.

    The decoder weight is meant to be the word-embedding matrix (:meth:`tie_to`); its bias is
    the head's own. Works on any leading shape: ``(N, dim)`` hidden states at the masked
    positions only (cheap) or ``(B, T, dim)``.
    """

    def __init__(self, dim: int, vocab_size: int, layer_norm_eps: float = 1e-12, activation: str = "gelu") -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.act = _ACTIVATIONS[activation]()
        self.norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.decoder = nn.Linear(dim, vocab_size)

    def tie_to(self, embedding: nn.Embedding) -> None:
        """Share the decoder weight with ``embedding`` (``(vocab_size, dim)``)."""
        if embedding.weight.shape != self.decoder.weight.shape:
            own, other = tuple(self.decoder.weight.shape), tuple(embedding.weight.shape)
            raise ValueError(f"cannot tie a {own} decoder to a {other} embedding")
        self.decoder.weight = embedding.weight

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden))))


class NSPHead(nn.Module):
    """Next-sentence prediction: two logits from the pooled [CLS] vector (0: B follows A)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.proj(pooled)


class SequenceClassificationHead(nn.Module):
    """``proj(dropout(pooled))``: one vector of ``num_labels`` logits per sequence."""

    def __init__(self, dim: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = dropout
        self.proj = nn.Linear(dim, num_labels)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.proj(F.dropout(pooled, self.dropout, self.training))


class TokenClassificationHead(SequenceClassificationHead):
    """``proj(dropout(h))`` at every position: ``(B, T, num_labels)`` tagging logits."""


class SpanHead(nn.Module):
    """Extractive QA: a start and an end logit per position, each ``(B, T)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2)

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        start, end = self.proj(hidden).unbind(-1)
        return start, end
