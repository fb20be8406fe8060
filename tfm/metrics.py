"""Metrics that torchmetrics lacks: entity-level precision, recall and F1 for BIO tagging.

:func:`entity_f1` scores lists of tag sequences as seqeval does in its default mode (conlleval
semantics): an entity is a maximal chunk of one type; ``I-X`` after ``O`` or after another type
starts a new entity as ``B-X`` would; an entity counts as found only when its type, first and
last word all match. :func:`get_entities` is seqeval's ``get_entities`` (IOB1/IOB2, and IOBES
prefixes ``E-``/``S-``), written here so that tfm needs no extra dependency.

:class:`EntityF1` is the torchmetrics form for a task: it takes ``(preds, labels)`` batches of
tag ids, keeps only the positions where ``labels != -100`` (the first sub-token of each word, see
:mod:`tfm.data.tagging`), and syncs over DDP by concatenation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

Entity = tuple[str, int, int]  # type, first position, last position (inclusive)


def _split(tag: str) -> tuple[str, str]:
    """``(prefix, type)`` of a tag: ``B-PER`` -> ``("B", "PER")``, ``O`` -> ``("O", "")``."""
    return tag[:1], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def get_entities(seq: Sequence[str] | Sequence[Sequence[str]]) -> list[Entity]:
    """The entities of a tag sequence as ``(type, first, last)`` (positions inclusive); a list of
    sequences is joined with an ``O`` between them, so positions run over the whole list.

    >>> get_entities(["B-PER", "I-PER", "O", "B-LOC"])
    [('PER', 0, 1), ('LOC', 3, 3)]
    """
    if any(isinstance(s, (list, tuple)) for s in seq):
        seq = [tag for sentence in seq for tag in [*sentence, "O"]]  # type: ignore[union-attr]
    prev_tag, prev_type, begin = "O", "", 0
    chunks: list[Entity] = []
    for i, chunk in enumerate([*seq, "O"]):  # type: ignore[misc]
        tag, type_ = _split(chunk)  # type: ignore[arg-type]
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _scores(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_f1(true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged entity ``precision``, ``recall`` and ``f1`` over all sentences, as seqeval's
    ``precision_score`` / ``recall_score`` / ``f1_score`` in their default mode (0 where a ratio
    has no denominator). Each predicted sentence must be as long as its true one."""
    if len(true_seqs) != len(pred_seqs):
        raise ValueError(f"{len(true_seqs)} true sequences but {len(pred_seqs)} predicted ones")
    for i, (t, p) in enumerate(zip(true_seqs, pred_seqs)):
        if len(t) != len(p):
            raise ValueError(f"sequence {i}: {len(t)} true tags but {len(p)} predicted ones")
    true = set(get_entities([list(s) for s in true_seqs]))
    pred = set(get_entities([list(s) for s in pred_seqs]))
    return _scores(len(true & pred), len(pred), len(true))


class EntityF1(Metric):
    """Entity-level precision, recall and F1 (:func:`entity_f1`) of a token-tagging model.

    ``update(preds, labels)``: ``preds`` are tag ids ``(B, T)`` or logits ``(B, T, C)``;
    ``labels`` are ``(B, T)`` tag ids with -100 where not scored. The scored positions of each
    row, in order, form that sentence's word sequence. ``compute()`` returns a dict of
    ``precision``, ``recall`` and ``f1`` tensors. The states (tag ids and sequence lengths) are
    concatenated over DDP ranks, so the score is that of the whole evaluation set.

    Args:
        label_names: the tag of each id (``B-PER``, ``I-PER``, ``O``, ...).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, label_names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        self.add_state("pred_ids", default=[], dist_reduce_fx="cat")
        self.add_state("true_ids", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, labels: Tensor) -> None:
        if preds.dim() == labels.dim() + 1:
            preds = preds.argmax(-1)
        if preds.shape != labels.shape:
            raise ValueError(f"preds of shape {tuple(preds.shape)} do not match labels of shape {tuple(labels.shape)}")
        scored = labels != -100
        self.pred_ids.append(preds[scored].detach().to(torch.int32))
        self.true_ids.append(labels[scored].detach().to(torch.int32))
        self.lengths.append(scored.sum(-1).reshape(-1).to(torch.int32))

    def sequences(self) -> tuple[list[list[str]], list[list[str]]]:
        """The accumulated ``(true, predicted)`` tag sequences, one per sentence."""
        if isinstance(self.lengths, list) and not self.lengths:  # nothing seen (synced states are tensors)
            return [], []
        lengths = dim_zero_cat(self.lengths).tolist()
        names = self.label_names

        def split(ids: Tensor) -> list[list[str]]:
            flat = [names[i] for i in ids.tolist()]
            out, start = [], 0
            for n in lengths:
                out.append(flat[start : start + n])
                start += n
            return out

        return split(dim_zero_cat(self.true_ids)), split(dim_zero_cat(self.pred_ids))

    def compute(self) -> dict[str, Tensor]:
        true, pred = self.sequences()
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in entity_f1(true, pred).items()}
