"""The Transformer translation model (Vaswani et al. 2017) on the shared
:class:`~tfm.nn.transformer.EncoderDecoder`, and named builders (``transformer_tiny()`` ...).

:class:`Seq2SeqTransformer` is a source :class:`~tfm.nn.embeddings.TextEmbedding`, a target one,
the shared encoder/decoder stacks of the one :class:`~tfm.nn.layers.TransformerLayer`, and an
output projection onto the target vocabulary. The defaults are the paper's base model: post-LN,
ReLU feed-forward, sinusoidal positions (sines in the first half of the vector, cosines in the
second, as fairseq and Marian), tokens scaled by ``sqrt(dim)``, one embedding matrix shared by
the encoder, the decoder and the output projection. Marian / OPUS-MT checkpoints of
Hugging Face load with :func:`tfm.nn.convert.load_hf_marian`; beam search and greedy decoding
are in :mod:`tfm.nn.generation`.

Teacher-forced training, with ``tgt_in`` the target shifted right behind the decoder start token::

    logits = model(src_ids, tgt_in)                   # (B, T, tgt_vocab)
    loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=pad, label_smoothing=0.1)

or, cheaper, logits only at the real target tokens (``positions``: flat indices into ``(B*T)``)::

    pos = (tgt_out != pad).flatten().nonzero().squeeze(1)
    logits = model(src_ids, tgt_in, positions=pos)   # (N, tgt_vocab)
    loss = label_smoothed_cross_entropy(logits, tgt_out.flatten()[pos], smoothing=0.1)
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import KVCache, MultiHeadAttention, padding_mask
from .config import Activation, ConfigError, TransformerConfig
from .embeddings import TextEmbedding
from .generation import BeamKVCache
from .transformer import EncoderDecoder


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer for translation.

    Parameter names: ``src_embed.tokens``, ``tgt_embed.tokens`` (the same tensor as
    ``src_embed.tokens`` with a joint vocabulary and ``share_embeddings``),
    ``transformer.{encoder,decoder}.blocks.i.{attn.qkv,attn.proj,norm1,cross_attn.q,cross_attn.kv,
    cross_attn.proj,norm_cross,mlp.fc1,mlp.fc2,norm2}``, ``lm_head`` (tied to ``tgt_embed.tokens``
    with ``share_embeddings``), ``final_logits_bias`` (a buffer, as Marian's).

    Args:
        vocab_size: source vocabulary (the joint one when ``tgt_vocab_size`` is None).
        pad_token_id: padding id; its embedding row is zero and gets no gradient.
        tgt_vocab_size: target vocabulary; None = the joint vocabulary ``vocab_size``.
        share_embeddings: joint vocabulary: one matrix for the encoder and decoder embeddings and
            the output projection (Press & Wolf 2017); separate vocabularies: the decoder
            embedding tied to the output projection. False: three (two) independent matrices.
        scale_embedding: multiply token embeddings by ``sqrt(dim)`` before adding positions.
        final_logits_bias: a fixed (non-trained) bias on the logits, as Marian has.
        norm_first: pre-LN (with a final LayerNorm after each stack) instead of post-LN.
        position: ``"sinusoidal"`` (fixed) or ``"learned"``.
        bos_token_id / eos_token_id: decoder start and end tokens, the defaults of
            :func:`tfm.nn.generation.generate` (Marian starts decoding with the pad token).
    """

    def __init__(
        self,
        vocab_size: int,
        pad_token_id: int | None = 0,
        tgt_vocab_size: int | None = None,
        dim: int = 512,
        encoder_layers: int = 6,
        decoder_layers: int = 6,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        activation: Activation = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        max_positions: int = 1024,
        position: Literal["sinusoidal", "learned"] = "sinusoidal",
        share_embeddings: bool = True,
        scale_embedding: bool = True,
        final_logits_bias: bool = False,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
    ) -> None:
        super().__init__()
        if vocab_size < 1 or (tgt_vocab_size is not None and tgt_vocab_size < 1):
            raise ConfigError(f"vocab_size={vocab_size}, tgt_vocab_size={tgt_vocab_size}: need at least one token")
        self.vocab_size = vocab_size
        self.tgt_vocab_size = tgt_vocab_size if tgt_vocab_size is not None else vocab_size
        self.joint_vocab = tgt_vocab_size is None
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.dim = dim
        self.max_positions = max_positions
        self.share_embeddings = share_embeddings
        for name, value in (("pad", pad_token_id), ("bos", bos_token_id), ("eos", eos_token_id)):
            if value is not None and not 0 <= value < self.tgt_vocab_size:
                raise ConfigError(f"{name}_token_id={value} is outside the vocabulary of {self.tgt_vocab_size} tokens")

        def stack(depth: int, cross: bool) -> TransformerConfig:
            return TransformerConfig(
                dim=dim,
                depth=depth,
                num_heads=num_heads,
                ffn_dim=ffn_dim,
                activation=activation,
                norm_first=norm_first,
                layer_norm_eps=layer_norm_eps,
                dropout=dropout,
                attn_dropout=attn_dropout,
                activation_dropout=activation_dropout,
                cross_attention=cross,
            )

        def embedding(vocab: int) -> TextEmbedding:
            return TextEmbedding(
                vocab,
                dim,
                max_positions,
                position=position,
                padding_idx=pad_token_id if pad_token_id is not None and pad_token_id < vocab else None,
                layer_norm_eps=None,
                dropout=dropout,
                scale=scale_embedding,
            )

        self.src_embed = embedding(vocab_size)
        self.tgt_embed = embedding(self.tgt_vocab_size)
        self.transformer = EncoderDecoder(stack(encoder_layers, False), stack(decoder_layers, True))
        self.lm_head = nn.Linear(dim, self.tgt_vocab_size, bias=False)
        if final_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(self.tgt_vocab_size))
        else:
            self.final_logits_bias = None
        self.reset_parameters()
        if share_embeddings:
            if self.joint_vocab:
                self.tgt_embed.tokens.weight = self.src_embed.tokens.weight
            self.lm_head.weight = self.tgt_embed.tokens.weight

    @property
    def encoder(self) -> nn.Module:
        return self.transformer.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.transformer.decoder

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """fairseq's initialisation: Xavier-uniform linear weights (query, key and value each as
        its own ``dim x dim`` matrix), zero biases, token embeddings ``N(0, dim**-0.5)`` with a
        zero pad row, unit LayerNorms. Deterministic under ``torch.manual_seed``."""
        done: set[int] = set()
        for m in self.modules():
            if isinstance(m, MultiHeadAttention):
                fused = [(m.q, 1), (m.kv, 2)] if m.cross else [(m.qkv, 3)]
                for lin, parts in fused:
                    for w in lin.weight.chunk(parts, 0):
                        nn.init.xavier_uniform_(w)
                    done.add(id(lin))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if id(m) not in done and m is not self.lm_head:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=self.dim**-0.5)
                if m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.lm_head.weight is not self.tgt_embed.tokens.weight:  # not tied: as fairseq's output projection
            nn.init.normal_(self.lm_head.weight, std=self.dim**-0.5)
        if self.final_logits_bias is not None:
            self.final_logits_bias.zero_()

    def source_padding_mask(self, src_ids: Tensor, src_padding_mask: Tensor | None = None) -> Tensor | None:
        """``src_padding_mask`` (True at pads), else one derived from ``pad_token_id``; None when
        there is no padding at all (so attention takes its fastest path)."""
        if src_padding_mask is not None:
            return src_padding_mask.bool()
        if self.pad_token_id is None:
            return None
        mask = src_ids.eq(self.pad_token_id)
        return mask if bool(mask.any()) else None

    def encode(self, src_ids: Tensor, src_padding_mask: Tensor | None = None) -> Tensor:
        """Encoder output ``(B, S, dim)``. ``src_padding_mask``: ``(B, S)``, True at pads; None derives
        it from ``pad_token_id``. Pass the same mask to :meth:`decode`."""
        mask = self.source_padding_mask(src_ids, src_padding_mask)
        return self.transformer.encoder(self.src_embed(src_ids), mask)

    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor | None,
        src_padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
        tgt_padding_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Logits ``(B, T, tgt_vocab)`` of the next token after each of ``tgt_ids`` (``(B, T)``).

        ``src_padding_mask``: the encoder's (True at source pads; not derived here, the memory has
        no ids). With a ``cache`` (:meth:`new_cache`), ``tgt_ids`` holds only the new positions,
        their positions start at ``cache.length``, and the cache keeps every layer's keys and values
        (the memory's are computed at the first call: ``memory`` may be None afterwards).
        ``tgt_padding_mask`` (True at pads) is needed only for left-padded targets: a causal mask
        already keeps real positions away from right padding. ``positions``: flat indices into
        ``(B * T)``; the output projection then runs only there and the logits are ``(N, V)``.
        """
        offset = cache.length if cache is not None else 0
        x = self.tgt_embed(tgt_ids, offset=offset)
        h = self.transformer.decoder(x, memory, src_padding_mask, tgt_padding_mask, cache)
        if positions is not None:
            h = h.reshape(-1, h.shape[-1]).index_select(0, positions)
        return self.project(h)

    def project(self, hidden: Tensor) -> Tensor:
        """Decoder hidden states to target-vocabulary logits."""
        return F.linear(hidden, self.lm_head.weight, self.final_logits_bias)

    def forward(
        self,
        src_ids: Tensor,
        tgt_ids: Tensor,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced logits ``(B, T, tgt_vocab)`` (or ``(N, tgt_vocab)`` at ``positions``, flat
        indices into ``(B * T)``). ``tgt_ids`` starts with the decoder start token. The source
        mask is derived from ``pad_token_id`` when not given; the target needs none when it is
        right-padded (the decoder start may well be the pad token, as in Marian)."""
        mask = self.source_padding_mask(src_ids, src_padding_mask)
        memory = self.transformer.encoder(self.src_embed(src_ids), mask)
        return self.decode(tgt_ids, memory, mask, None, tgt_padding_mask, positions)

    def new_cache(self) -> KVCache:
        """An empty decoder cache for incremental decoding."""
        return self.transformer.decoder.new_cache()

    def new_beam_cache(self, num_beams: int) -> BeamKVCache:
        """An empty cache for :meth:`decode_beams`."""
        return BeamKVCache(len(self.transformer.decoder.blocks), num_beams)

    def decode_beams(
        self, tgt_ids: Tensor, memory: Tensor | None, src_padding_mask: Tensor | None, cache: BeamKVCache
    ) -> Tensor:
        """One step of beam search with each sentence's beams decoded together: logits
        ``(B, beams, V)`` of the next token after ``tgt_ids`` ``(B, beams)``, the last token of
        each beam (``(B, 1)`` at the first step, when all beams are the same).

        The beams are the queries of their sentence's batch row, all at position
        ``cache.length``: cross-attention runs once per sentence for all its beams, against keys
        and values computed once (at the first step, from ``memory``; None afterwards);
        self-attention sees each beam's own history through ``cache.self_attention_mask``. The
        same numbers as :meth:`decode` on one row per beam, with less copying
        (:func:`tfm.nn.generation.beam_search` uses it)."""
        b, n = tgt_ids.shape
        x = self.tgt_embed(tgt_ids.reshape(b * n, 1), offset=cache.length).view(b, n, -1)
        self_mask = cache.self_attention_mask(b, n, x.dtype, x.device)
        memory_mask = padding_mask(src_padding_mask)
        decoder = self.transformer.decoder
        for block, layer in zip(decoder.blocks, cache.layers):
            x = block(x, attn_mask=self_mask, memory=memory, memory_mask=memory_mask, cache=layer)
        return self.project(decoder.norm(x))

    def no_weight_decay(self) -> set[str]:
        """Nothing beyond biases and LayerNorms (every 1-d tensor, left out by ``param_groups``)."""
        return set()

    def num_parameters(self) -> int:
        """Distinct trained parameters (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())


class _LabelSmoothedCE(torch.autograd.Function):
    """Label-smoothed cross-entropy over rows of logits with a single ``(N, V)`` buffer: the fp32
    log-probs of the forward pass become, in place, the gradient of the backward pass
    (``F.cross_entropy(label_smoothing=)`` materialises log-probs, a smoothing sum, their
    gradients and a one-hot scatter)."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, smoothing: float, ignore_index: int) -> Tensor:
        lp = torch.log_softmax(logits.float(), dim=-1)
        valid = target != ignore_index
        tgt = target.masked_fill(~valid, 0)
        per_row = -(1.0 - smoothing) * lp.gather(1, tgt[:, None]).squeeze(1) - smoothing * lp.mean(-1)
        count = valid.sum().clamp(min=1)
        ctx.save_for_backward(lp, tgt, valid, count)
        ctx.smoothing, ctx.dtype = smoothing, logits.dtype
        return per_row.masked_fill(~valid, 0.0).sum() / count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        lp, tgt, valid, count = ctx.saved_tensors
        eps = ctx.smoothing
        g = lp.exp_()  # softmax, in the log-probs' buffer (backward runs once)
        g.sub_(eps / g.shape[-1])
        g[torch.arange(g.shape[0], device=g.device), tgt] -= 1.0 - eps
        g.mul_((grad / count * valid)[:, None])
        return g.to(ctx.dtype), None, None, None


def label_smoothed_cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float = 0.1, ignore_index: int = -100
) -> Tensor:
    """``F.cross_entropy(logits, target, ignore_index=, label_smoothing=)`` (mean over the
    targets that are not ``ignore_index``), computed in fp32 with less memory traffic: the loss of
    translation training over a large vocabulary. ``logits``: ``(N, V)``; ``target``: ``(N,)``."""
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)}: want (N, V) and (N,)")
    return _LabelSmoothedCE.apply(logits, target, float(smoothing), int(ignore_index))


def token_losses(logits: Tensor, target: Tensor, epsilon: float, ignore_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """Label-smoothed cross-entropy and plain NLL of every target token ``(B, T)`` (zero at
    padding), and the mask of real tokens.

    With ``V`` classes the smoothed target puts ``1 - epsilon + epsilon / V`` on the true token and
    ``epsilon / V`` on every other one (as ``torch.nn.functional.cross_entropy(label_smoothing=)``):
    ``loss = (1 - epsilon) * nll + epsilon * mean_v(-log p_v)``.
    """
    lprobs = F.log_softmax(logits.float(), dim=-1)
    keep = target != ignore_index
    nll = -lprobs.gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)
    smooth = -lprobs.mean(-1)
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    return torch.where(keep, loss, zero), torch.where(keep, nll, zero), keep


def label_smoothed_loss(logits: Tensor, target: Tensor, epsilon: float, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Mean label-smoothed cross-entropy over the non-pad target tokens, and the mean NLL."""
    loss, nll, keep = token_losses(logits, target, epsilon, ignore_index)
    n = keep.sum().clamp(min=1)
    return loss.sum() / n, nll.sum() / n


# builders ------------------------------------------------------------------------------------------

TRANSFORMER_PRESETS: dict[str, dict[str, Any]] = {
    # tiny: tests, smoke runs and demos (seconds on a laptop CPU)
    "transformer_tiny": dict(dim=128, encoder_layers=2, decoder_layers=2, num_heads=4, ffn_dim=512),
    # small: a model that trains on a 2-core CPU in hours (7.4M parameters + vocab x 256)
    "transformer_small": dict(dim=256, encoder_layers=4, decoder_layers=4, num_heads=4, ffn_dim=1024),
    # Vaswani et al. 2017, Table 3
    "transformer_base": dict(dim=512, encoder_layers=6, decoder_layers=6, num_heads=8, ffn_dim=2048),
    "transformer_big": dict(dim=1024, encoder_layers=6, decoder_layers=6, num_heads=16, ffn_dim=4096, dropout=0.3),
}


def create_transformer(arch: str, **overrides: Any) -> Seq2SeqTransformer:
    """``create_transformer("transformer_small", vocab_size=8000, pad_token_id=0)``; post-LN,
    ReLU, sinusoidal positions, shared embeddings, dropout 0.1 unless overridden (``None``
    values are ignored, so data-dependent arguments can be passed through unset)."""
    if arch not in TRANSFORMER_PRESETS:
        raise ConfigError(f"unknown Transformer arch {arch!r}: use one of {', '.join(TRANSFORMER_PRESETS)}")
    kwargs = {**TRANSFORMER_PRESETS[arch], **{k: v for k, v in overrides.items() if v is not None}}
    if "vocab_size" not in kwargs:
        raise ConfigError(f"{arch} needs vocab_size= (the size of the tokenizer's vocabulary)")
    return Seq2SeqTransformer(**kwargs)


def transformer_tiny(**kwargs: Any) -> Seq2SeqTransformer:
    """dim 128, 2 + 2 layers, 4 heads, FFN 512 (0.9M parameters + vocab x 128): for tests and smoke runs."""
    return create_transformer("transformer_tiny", **kwargs)


def transformer_small(**kwargs: Any) -> Seq2SeqTransformer:
    """dim 256, 4 + 4 layers, 4 heads, FFN 1024 (7.4M parameters + vocab x 256): trainable on a 2-core CPU."""
    return create_transformer("transformer_small", **kwargs)


def transformer_base(**kwargs: Any) -> Seq2SeqTransformer:
    """Vaswani et al. base: dim 512, 6 + 6 layers, 8 heads, FFN 2048 (44.1M parameters + vocab x 512)."""
    return create_transformer("transformer_base", **kwargs)


def transformer_big(**kwargs: Any) -> Seq2SeqTransformer:
    """Vaswani et al. big: dim 1024, 6 + 6 layers, 16 heads, FFN 4096, dropout 0.3 (176.4M parameters + vocab x 1024)."""
    return create_transformer("transformer_big", **kwargs)
