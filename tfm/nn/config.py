"""One dataclass that describes every stack of :class:`~tfm.nn.layers.TransformerLayer`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Activation = Literal["relu", "gelu", "gelu_tanh", "silu", "swish"]


class ConfigError(ValueError):
    """A model configuration that cannot be built (heads that do not divide the width, patches
    that do not tile the image, ...); the message names the values. The CLI prints it as one line."""


@dataclass
class TransformerConfig:
    """Shape and variant of a Transformer stack (encoder or decoder).

    The variants of the classic models are fields, never copied classes:
    BERT is post-LN (``norm_first=False``) with exact GELU and eps 1e-12; ViT is pre-LN with exact
    GELU and eps 1e-6; the Vaswani translation model is post-LN with ReLU, Marian (OPUS-MT) post-LN
    with SiLU (``"silu"``, which HF calls ``"swish"``: both names are accepted).
    """

    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    ffn_dim: int | None = None  # overrides ``mlp_ratio`` when set
    activation: Activation = "gelu"
    norm_first: bool = True
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    bias: bool = True  # output projection and feed-forward biases
    dropout: float = 0.0  # on the residual branches (attention output, feed-forward output)
    attn_dropout: float = 0.0  # on the attention probabilities
    activation_dropout: float = 0.0  # inside the feed-forward, after the activation
    drop_path: float = 0.0  # stochastic depth of the last layer; linear from 0 at the first layer
    cross_attention: bool = False  # decoder layers attend to an encoder output
    final_norm: bool | None = None  # LayerNorm after the stack; default: exactly when ``norm_first``

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ConfigError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.activation not in ("relu", "gelu", "gelu_tanh", "silu", "swish"):
            raise ConfigError(f"activation={self.activation!r}: use one of relu, gelu, gelu_tanh, silu (= swish)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def hidden_dim(self) -> int:
        return self.ffn_dim if self.ffn_dim is not None else int(self.dim * self.mlp_ratio)

    @property
    def use_final_norm(self) -> bool:
        return self.norm_first if self.final_norm is None else self.final_norm

    def drop_path_rates(self) -> list[float]:
        """Stochastic-depth rate of each layer: linear from 0 to ``drop_path`` (timm, DeiT)."""
        if self.depth == 1:
            return [self.drop_path]
        return [self.drop_path * i / (self.depth - 1) for i in range(self.depth)]
