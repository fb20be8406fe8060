"""BERT (Devlin et al. 2019) on the shared backbone, its pretraining and fine-tuning models, and
named builders (``bert_tiny()`` ... ``bert_large()``).

:class:`Bert` is :class:`~tfm.nn.embeddings.TextEmbedding` + the shared post-LN
:class:`~tfm.nn.transformer.Encoder` + a tanh pooler on [CLS]. The task models wrap a ``Bert``
(as ``.bert``) and add a head from :mod:`tfm.nn.heads`; HF checkpoints load with
:func:`tfm.nn.convert.load_hf_bert`.

Pretraining, from a batch with ``labels`` (-100 where nothing is predicted)::

    pos = masked_positions(batch["labels"])
    out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], pos)
    total, mlm, nsp = pretraining_loss(out.mlm_logits, batch["labels"].flatten()[pos],
                                       out.nsp_logits, batch["next_sentence_label"])
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Activation, ConfigError, TransformerConfig
from .embeddings import TextEmbedding
from .heads import MLMHead, NSPHead, SequenceClassificationHead, SpanHead, TokenClassificationHead
from .models import init_weights
from .transformer import Encoder


class BertOutput(NamedTuple):
    sequence_output: Tensor  # (B, T, dim), or (B, K, dim) at ``output_positions``
    pooled_output: Tensor | None  # (B, dim) tanh pooler of the first returned position; None without a pooler


class PretrainingOutput(NamedTuple):
    mlm_logits: Tensor  # (N, vocab) at the masked positions, or (B, T, vocab) without them
    nsp_logits: Tensor  # (B, 2)


class Bert(nn.Module):
    """The BERT encoder: embeddings, post-LN Transformer layers, optional tanh pooler.

    Parameter names: ``embeddings.{tokens,positions,segments,norm}``,
    ``encoder.blocks.i.{attn.qkv,attn.proj,norm1,mlp.fc1,mlp.fc2,norm2}``, ``pooler``.
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        ffn_dim: int | None = None,
        max_positions: int = 512,
        type_vocab_size: int = 2,
        pad_token_id: int | None = 0,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        activation: Activation = "gelu",
        add_pooler: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.dim = dim
        self.cfg = TransformerConfig(
            dim=dim,
            depth=depth,
            num_heads=num_heads,
            ffn_dim=ffn_dim if ffn_dim is not None else 4 * dim,
            activation=activation,
            norm_first=False,
            layer_norm_eps=layer_norm_eps,
            dropout=dropout,
            attn_dropout=attn_dropout,
            final_norm=False,
        )
        self.embeddings = TextEmbedding(
            vocab_size,
            dim,
            max_positions,
            position="learned",
            type_vocab_size=type_vocab_size,
            padding_idx=pad_token_id,
            layer_norm_eps=layer_norm_eps,
            dropout=dropout,
        )
        self.encoder = Encoder(self.cfg)
        self.pooler = nn.Linear(dim, dim) if add_pooler else None
        self.apply(init_weights)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        output_positions: slice | Tensor | None = None,
    ) -> BertOutput:
        """``attention_mask``: ``(B, T)``, 1 at real tokens and 0 at padding (as HF).
        ``output_positions`` (a slice or ``(B, K)`` indices): return only these positions; the
        last layer computes nothing else. The pooled output is taken from the first returned
        position, which is [CLS] unless ``output_positions`` starts elsewhere."""
        x = self.embeddings(input_ids, token_type_ids)
        key_padding_mask = None if attention_mask is None else attention_mask == 0
        x = self.encoder(x, key_padding_mask, output_positions)
        return BertOutput(x, self.pool(x[:, 0]) if self.pooler is not None else None)

    def pool(self, cls: Tensor) -> Tensor:
        """The tanh pooler on [CLS] hidden states ``(B, dim)``."""
        if self.pooler is None:
            raise ValueError("this Bert was built with add_pooler=False")
        return torch.tanh(self.pooler(cls))

    def no_weight_decay(self) -> set[str]:
        """Nothing beyond biases and LayerNorms (every 1-d tensor, left out by ``param_groups``):
        BERT decays its embedding matrices, position embeddings included."""
        return set()

    @property
    def num_layers(self) -> int:
        """Depth for layer-wise LR decay: embeddings are layer 0, block i is i + 1, pooler/heads last."""
        return len(self.encoder.blocks) + 1

    def layer_id(self, name: str) -> int:
        if name.startswith("embeddings."):
            return 0
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        return self.num_layers


class _BertTask(nn.Module):
    """A :class:`Bert` as ``.bert`` plus heads; layer ids and weight decay follow the Bert."""

    def __init__(self, bert: Bert) -> None:
        super().__init__()
        self.bert = bert

    def no_weight_decay(self) -> set[str]:
        return {f"bert.{n}" for n in self.bert.no_weight_decay()}

    @property
    def num_layers(self) -> int:
        return self.bert.num_layers

    def layer_id(self, name: str) -> int:
        return self.bert.layer_id(name[len("bert.") :]) if name.startswith("bert.") else self.num_layers

    def _init_heads(self) -> None:
        for name, child in self.named_children():
            if name != "bert":
                child.apply(init_weights)


class BertForPretraining(_BertTask):
    """BERT with its masked-LM head (decoder tied to the word embeddings) and NSP head.

    With ``masked_positions`` (flat indices into ``input_ids.flatten()``, see
    :func:`masked_positions`), the last encoder layer computes only [CLS] and those positions and
    the MLM head projects only them onto the vocabulary, as google-research/bert does; without,
    every position gets MLM logits (as HF's ``BertForPreTraining``).
    """

    def __init__(self, bert: Bert) -> None:
        super().__init__(bert)
        if bert.pooler is None:
            raise ValueError("BertForPretraining needs a Bert with a pooler (add_pooler=True)")
        cfg = bert.cfg
        self.mlm = MLMHead(cfg.dim, bert.vocab_size, cfg.layer_norm_eps, cfg.activation)
        self.nsp = NSPHead(cfg.dim)
        self._init_heads()
        self.mlm.tie_to(bert.embeddings.tokens)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        masked_positions: Tensor | None = None,
    ) -> PretrainingOutput:
        if masked_positions is None:
            seq, pooled = self.bert(input_ids, token_type_ids, attention_mask)
            return PretrainingOutput(self.mlm(seq), self.nsp(pooled))
        b, t = input_ids.shape
        positions, rows = _cls_and_masked(masked_positions, b, t)
        seq, pooled = self.bert(input_ids, token_type_ids, attention_mask, output_positions=positions)
        hidden = seq.reshape(-1, seq.shape[-1]).index_select(0, rows)
        return PretrainingOutput(self.mlm(hidden), self.nsp(pooled))


def _cls_and_masked(masked: Tensor, batch: int, seq_len: int) -> tuple[Tensor, Tensor]:
    """``(B, K)`` positions per row, [CLS] first and then the row's masked positions (the rest
    padded with 0), and for each entry of ``masked`` its row in the flattened ``(B * K)`` output."""
    row = torch.div(masked, seq_len, rounding_mode="floor")
    counts = torch.bincount(row, minlength=batch)
    k = 1 + (int(counts.max()) if masked.numel() else 0)
    # rank of each masked position within its row, whatever the order of ``masked``
    order = torch.argsort(row, stable=True)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(masked)
    rank[order] = torch.arange(masked.numel(), device=masked.device) - starts[row[order]]
    slot = row * k + 1 + rank
    positions = masked.new_zeros(batch * k)
    positions[slot] = masked - row * seq_len
    return positions.view(batch, k), slot


def masked_positions(labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Flat indices into ``labels.flatten()`` of the positions that have a masked-LM target;
    ``labels.flatten()[masked_positions(labels)]`` are the targets in the same order."""
    return (labels.flatten() != ignore_index).nonzero().squeeze(1)


def pretraining_loss(
    mlm_logits: Tensor, mlm_labels: Tensor, nsp_logits: Tensor, nsp_labels: Tensor, ignore_index: int = -100
) -> tuple[Tensor, Tensor, Tensor]:
    """``(mlm + nsp, mlm, nsp)`` cross-entropies, HF's ``BertForPreTraining`` loss.

    ``mlm_labels`` matches ``mlm_logits`` without the vocabulary axis: ``(N,)`` targets at the
    masked positions, or ``(B, T)`` labels with ``ignore_index`` elsewhere. The MLM loss is the
    mean over the predicted positions (0 when there are none)."""
    labels = mlm_labels.reshape(-1)
    logits = mlm_logits.reshape(labels.numel(), mlm_logits.shape[-1]).float()
    mlm_sum = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    mlm = mlm_sum / (labels != ignore_index).sum().clamp(min=1)
    nsp = F.cross_entropy(nsp_logits.float(), nsp_labels.reshape(-1))
    return mlm + nsp, mlm, nsp


class BertForSequenceClassification(_BertTask):
    """``(B, num_labels)`` logits from the pooled [CLS] (the last layer computes [CLS] only)."""

    def __init__(self, bert: Bert, num_labels: int, dropout: float | None = None) -> None:
        super().__init__(bert)
        if bert.pooler is None:
            raise ValueError("BertForSequenceClassification needs a Bert with a pooler (add_pooler=True)")
        p = bert.cfg.dropout if dropout is None else dropout
        self.classifier = SequenceClassificationHead(bert.dim, num_labels, p)
        self._init_heads()

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, attention_mask: Tensor | None = None
    ) -> Tensor:
        _, pooled = self.bert(input_ids, token_type_ids, attention_mask, output_positions=slice(0, 1))
        return self.classifier(pooled)


class BertForTokenClassification(_BertTask):
    """``(B, T, num_labels)`` logits at every position. A pooler of ``bert`` is removed: unused,
    it would only leave parameters without gradients (which DDP refuses)."""

    def __init__(self, bert: Bert, num_labels: int, dropout: float | None = None) -> None:
        super().__init__(bert)
        bert.pooler = None
        p = bert.cfg.dropout if dropout is None else dropout
        self.classifier = TokenClassificationHead(bert.dim, num_labels, p)
        self._init_heads()

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, attention_mask: Tensor | None = None
    ) -> Tensor:
        return self.classifier(self.bert(input_ids, token_type_ids, attention_mask).sequence_output)


class BertForQuestionAnswering(_BertTask):
    """Start and end logits ``(B, T)`` each for extractive QA. A pooler of ``bert`` is removed."""

    def __init__(self, bert: Bert) -> None:
        super().__init__(bert)
        bert.pooler = None
        self.qa = SpanHead(bert.dim)
        self._init_heads()

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return self.qa(self.bert(input_ids, token_type_ids, attention_mask).sequence_output)


# builders ------------------------------------------------------------------------------------------

BERT_PRESETS: dict[str, dict[str, Any]] = {
    # the small ones are Turc et al. 2019, "Well-read students learn better" (google-research/bert)
    "bert_tiny": dict(dim=128, depth=2, num_heads=2),
    "bert_mini": dict(dim=256, depth=4, num_heads=4),
    "bert_small": dict(dim=512, depth=4, num_heads=8),
    "bert_base": dict(dim=768, depth=12, num_heads=12),
    "bert_large": dict(dim=1024, depth=24, num_heads=16),
}


def create_bert(arch: str, **overrides: Any) -> Bert:
    """``create_bert("bert_mini", vocab_size=8000, pad_token_id=0)``; FFN 4x dim, 512 positions,
    2 token types, vocabulary 30522 unless overridden (``None`` values are ignored)."""
    if arch not in BERT_PRESETS:
        raise ConfigError(f"unknown BERT arch {arch!r}: use one of {', '.join(BERT_PRESETS)}")
    kwargs = {**BERT_PRESETS[arch], **{k: v for k, v in overrides.items() if v is not None}}
    return Bert(**kwargs)


def bert_tiny(**kwargs: Any) -> Bert:
    """BERT-Tiny: 2 layers, dim 128, 2 heads (4.4M parameters with the 30522 vocabulary)."""
    return create_bert("bert_tiny", **kwargs)


def bert_mini(**kwargs: Any) -> Bert:
    """BERT-Mini: 4 layers, dim 256, 4 heads (11.2M parameters)."""
    return create_bert("bert_mini", **kwargs)


def bert_small(**kwargs: Any) -> Bert:
    """BERT-Small: 4 layers, dim 512, 8 heads (28.8M parameters)."""
    return create_bert("bert_small", **kwargs)


def bert_base(**kwargs: Any) -> Bert:
    """BERT-Base: 12 layers, dim 768, 12 heads (109.5M parameters)."""
    return create_bert("bert_base", **kwargs)


def bert_large(**kwargs: Any) -> Bert:
    """BERT-Large: 24 layers, dim 1024, 16 heads (335.1M parameters)."""
    return create_bert("bert_large", **kwargs)
