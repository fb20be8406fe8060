"""Greedy and beam search over any encoder-decoder (or decoder) with an incremental-decoding cache.

A model decodes through two methods (:class:`Seq2SeqTransformer` has them):

* ``encode(src_ids, src_padding_mask) -> memory`` (batch first);
* ``decode(tgt_ids, memory, src_padding_mask, cache=None) -> logits (B, T, V)``.

A model that also offers ``decode_beams(tgt_ids (B, beams), memory, src_padding_mask, cache)`` and
``new_beam_cache(beams)`` (a :class:`BeamKVCache`), as :class:`~tfm.nn.seq2seq.Seq2SeqTransformer`
does, is decoded incrementally, each sentence's beams together; any other model (and
``use_cache=False``) recomputes the whole prefix at every step, the reference the cached search is
tested against.

The search follows the conventions of Hugging Face ``generate`` (transformers 5.x), so that the
same model gives the same tokens and scores:

* scores are sums of log-probabilities (log-softmax in fp32) of the generated tokens, EOS
  included, divided by ``length ** length_penalty``, the length counting EOS and not the start;
* a beam step keeps the ``2k`` best continuations; those ending in EOS among the first ``k``
  become finished hypotheses, the ``k`` best others stay alive;
* ``early_stopping=True`` ends a sentence when it has ``k`` finished hypotheses; ``False`` (HF's
  default) when moreover the best alive beam, scored at its current length, cannot beat the worst
  finished one; ``"never"`` scores the alive beam at the maximum length instead;
* a forced EOS (``force_eos``) at the last allowed step scores 0 (HF's ``forced_eos_token_id``).

Lengths are counted in generated tokens: ``max_length`` / ``max_len_a * src_len + max_len_b``
bound the tokens after the start token, EOS included (HF ``max_length`` = this + 1);
``min_length`` tokens come before EOS may (HF ``min_length`` = this + 1). The source length is
each sentence's own (its non-pad tokens), so a sentence's result does not depend on its batch.

Speed: one ``(batch, beams)`` tensor program per step, no loop over hypotheses, the first step
on one row per sentence (its beams are all the same). With ``decode_beams`` the beams of a
sentence are the queries of one batch row: cross-attention keys and values are computed once
per sentence and never copied to its beams, and self-attention keys and values never move when
beams reorder (:class:`BeamKVCache`: each beam sees its history through a mask). Greedy search is
beam search with one beam. A finished sentence leaves the batch at the next copy of the cache, or
once finished sentences are a quarter of it, so it soon stops costing compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import LayerCache

NEG = -1.0e9  # HF's "impossible" score: large but finite, so that sums stay ordered


class DecoderModel(Protocol):
    def encode(self, src_ids: Tensor, src_padding_mask: Tensor | None = None) -> Tensor: ...

    def decode(self, tgt_ids: Tensor, memory: Tensor | None, src_padding_mask: Tensor | None = None,
               cache: Any = None) -> Tensor: ...


@dataclass
class Hypothesis:
    tokens: Tensor  # (L,) generated tokens, EOS included when the hypothesis finished with it
    score: float  # sum of log-probs / L ** length_penalty


@dataclass
class GenerationOutput:
    sequences: Tensor  # (B, T) best hypothesis per sentence, no start token, padded with pad_token_id
    scores: Tensor  # (B,) their scores
    lengths: Tensor  # (B,) their lengths (EOS included)
    nbest: list[list[Hypothesis]] = field(default_factory=list)  # per sentence, best first


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate (fields as HF's ``GenerationConfig`` where both have them).

    Attributes:
        num_beams: beam size ``k``; 1 is greedy search.
        num_return_sequences: size of each sentence's n-best list (beam search; default ``k``).
        length_penalty: scores are divided by ``length ** length_penalty`` (1.0: per-token average; 0.0: raw sums;
            larger values favour longer hypotheses).
        early_stopping: True: a sentence is done when ``k`` hypotheses are finished; False (HF's default): also
            until no alive beam can beat them at its current length; "never": at the maximum length.
        max_len_a: with ``max_len_b``, at most ``int(max_len_a * src_len + max_len_b)`` generated tokens (EOS
            included), ``src_len`` being the sentence's non-pad source tokens (fairseq's rule).
        max_len_b: see ``max_len_a``.
        max_length: an absolute bound on the same; the model's ``max_positions`` also bounds it.
        min_length: tokens generated before EOS may be (fairseq's ``min_len``).
        bos_token_id: the decoder's first input (Marian: the pad token); None: the model's attribute.
        eos_token_id: None: the model's attribute.
        pad_token_id: None: the model's attribute.
        bad_token_ids: tokens never generated; None forbids ``pad`` and ``bos`` (never EOS).
        force_eos: at the last allowed step only EOS is possible (HF's ``forced_eos_token_id``).
        use_cache: reuse the decoder's keys and values; False recomputes the whole prefix at every step (the
            reference the cached search is tested against; the same result, much slower).
    """

    num_beams: int = 1
    num_return_sequences: int | None = None
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = True
    max_len_a: float = 1.2
    max_len_b: int = 10
    max_length: int | None = None
    min_length: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    bad_token_ids: Sequence[int] | None = None
    force_eos: bool = True
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping={self.early_stopping!r}: use True, False or 'never'")
        if self.num_beams < 1:
            raise ValueError(f"num_beams={self.num_beams} must be at least 1")
        if not 1 <= self.returned <= self.num_beams:
            raise ValueError(f"num_return_sequences={self.num_return_sequences} must be between 1 and "
                             f"num_beams={self.num_beams}")

    @property
    def returned(self) -> int:
        """Hypotheses returned per sentence."""
        return self.num_beams if self.num_return_sequences is None else int(self.num_return_sequences)


def _config(config: GenerationConfig | None, options: dict[str, Any]) -> GenerationConfig:
    return replace(config, **options) if config is not None else GenerationConfig(**options)


@dataclass
class _Setup:
    bos: int
    eos: int
    pad: int
    mask: Tensor | None  # (B, S) source padding mask
    max_new: Tensor  # (B,) maximum generated tokens per sentence
    ban: Tensor | None  # token ids never generated


def _setup(model: Any, src_ids: Tensor, src_padding_mask: Tensor | None, c: GenerationConfig) -> _Setup:
    def pick(value: int | None, name: str) -> int:
        value = value if value is not None else getattr(model, name, None)
        if value is None:
            raise ValueError(f"{name} is not set: pass {name}= (the model has none)")
        return int(value)

    bos, eos = pick(c.bos_token_id, "bos_token_id"), pick(c.eos_token_id, "eos_token_id")
    pad = pick(c.pad_token_id, "pad_token_id")
    if src_padding_mask is not None:
        mask = src_padding_mask.bool()
    else:
        mask = src_ids.eq(pad)
    src_len = (~mask).sum(1)
    if not bool(mask.any()):
        mask = None
    max_new = (c.max_len_a * src_len.double() + c.max_len_b).long()
    cap = getattr(model, "max_positions", None)  # decoder positions: the start token + max_new - 1
    if c.max_length is not None:
        cap = c.max_length if cap is None else min(cap, c.max_length)
    if cap is not None:
        max_new = max_new.clamp(max=cap)
    max_new = max_new.clamp(min=1)
    bad = sorted({int(t) for t in (c.bad_token_ids if c.bad_token_ids is not None else (pad, bos))} - {eos})
    ban = torch.tensor(bad, dtype=torch.long, device=src_ids.device) if bad else None
    return _Setup(bos, eos, pad, mask, max_new.to(src_ids.device), ban)


def _process(lprobs: Tensor, t: int, s: _Setup, min_length: int, force: Tensor | None) -> Tensor:
    """HF's logits processors, in HF's order: banned tokens, minimum length, forced EOS
    (``force``: rows at their last step: every token impossible but EOS, which scores 0)."""
    if s.ban is not None:
        lprobs.index_fill_(1, s.ban, float("-inf"))
    if t < min_length:
        lprobs[:, s.eos] = float("-inf")
    if force is not None:
        lprobs.masked_fill_(force[:, None], float("-inf"))
        lprobs[:, s.eos].masked_fill_(force, 0.0)
    return lprobs


def _forced(t: int, max_new: Tensor, force_eos: bool, rows_per_sentence: int) -> Tensor | None:
    if not force_eos:
        return None
    force = max_new == t + 1
    if not bool(force.any()):
        return None
    return force.repeat_interleave(rows_per_sentence) if rows_per_sentence > 1 else force


def _length_norm(length: int | Tensor, length_penalty: float) -> float | Tensor:
    return length**length_penalty


class _BeamLayerCache(LayerCache):
    """One decoder layer's keys and values in a :class:`BeamKVCache`: self-attention in a buffer
    ``(B, heads, T, beams, head_dim)`` written in place, cross-attention once per sentence."""

    __slots__ = ("_kbuf", "_vbuf", "owner")

    def __init__(self, owner: BeamKVCache) -> None:
        super().__init__()
        self.owner = owner
        self._kbuf: Tensor | None = None
        self._vbuf: Tensor | None = None

    def _grow(self, rows: int, length: int, like: Tensor) -> None:
        _, h, _, d = like.shape
        old = self._kbuf
        cap_rows = max(rows, old.shape[0] if old is not None else 0)
        cap_len = max(32, length, 2 * old.shape[2] if old is not None else 0)
        # never read beyond what append() wrote: no need to clear
        kbuf = like.new_empty(cap_rows, h, cap_len, self.owner.num_beams, d)
        vbuf = like.new_empty(cap_rows, h, cap_len, self.owner.num_beams, d)
        if old is not None:
            n, _, t = old.shape[:3]
            kbuf[:n, :, :t] = old
            vbuf[:n, :, :t] = self._vbuf
        self._kbuf, self._vbuf = kbuf, vbuf

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        # k, v: (B, heads, n, head_dim), n = the beams (or 1 at the first step: all beams equal)
        b, h, _, d = k.shape
        t = self.owner.length
        if self._kbuf is None or b > self._kbuf.shape[0] or t >= self._kbuf.shape[2]:
            self._grow(b, t + 1, k)
        assert self._kbuf is not None and self._vbuf is not None
        self._kbuf[:b, :, t] = k
        self._vbuf[:b, :, t] = v
        beams = self.owner.num_beams
        self.k = self._kbuf[:b, :, : t + 1].reshape(b, h, (t + 1) * beams, d)
        self.v = self._vbuf[:b, :, : t + 1].reshape(b, h, (t + 1) * beams, d)
        return self.k, self.v

    def select(self, rows: Tensor) -> None:
        t = self.owner.length
        if self._kbuf is not None and t:  # copy what is written only, into buffers of the same capacity
            for name in ("_kbuf", "_vbuf"):
                buf = getattr(self, name)
                new = buf.new_empty(rows.numel(), *buf.shape[1:])
                torch.index_select(buf[:, :, :t], 0, rows, out=new[:, :, :t])
                setattr(self, name, new)
        if self.ck is not None:
            self.ck = self.ck.index_select(0, rows)
            self.cv = self.cv.index_select(0, rows)  # type: ignore[union-attr]


class BeamKVCache:
    """Decoder cache of a beam search that keeps each sentence's beams together (one batch row per
    sentence, the beams as its queries), for a model's ``decode_beams``.

    Cross-attention keys and values are the sentence's own, computed once and never copied to its
    beams: the beams' queries attend to them together. Self-attention keys and values of every
    position are written once, in the slot of the beam that produced them, and never move when
    beams are reordered: ``ancestry`` records, for each beam and position, the slot holding its
    token, and :meth:`self_attention_mask` lets each beam see exactly its own history.
    """

    def __init__(self, num_layers: int, num_beams: int) -> None:
        self.num_beams = num_beams
        self.layers = [_BeamLayerCache(self) for _ in range(num_layers)]
        self.length = 0  # positions decoded
        self.ancestry: Tensor | None = None  # (B, beams, length) slot of each beam's token per position

    def __getitem__(self, i: int) -> _BeamLayerCache:
        return self.layers[i]

    def self_attention_mask(self, batch: int, queries: int, dtype: torch.dtype = torch.float32,
                            device: torch.device | None = None) -> Tensor | None:
        """Additive ``(B, 1, queries, (length + 1) * beams)``: query ``j`` sees its ancestors'
        slots and its own new one (0), nothing else (-inf). None with one beam (every key is the
        beam's own)."""
        k, t = self.num_beams, self.length
        if k == 1:
            return None
        slots = torch.arange(k, device=device)
        if queries == 1:  # first step: one query per sentence, all beams the same
            sel = torch.zeros(batch, 1, t + 1, dtype=torch.long, device=device)
        else:
            own = slots.view(1, k, 1).expand(batch, k, 1)
            sel = own if self.ancestry is None else torch.cat([self.ancestry, own], 2)
        hidden = (sel[..., None] != slots).reshape(batch, 1, queries, (t + 1) * k)
        return torch.zeros(hidden.shape, dtype=dtype, device=device).masked_fill_(hidden, float("-inf"))

    def advance(self, src_beam: Tensor) -> None:
        """After a step: new beam ``j`` of each sentence continues old beam ``src_beam[:, j]``."""
        b, k = src_beam.shape
        own = torch.arange(k, device=src_beam.device).view(1, k, 1).expand(b, k, 1)
        ext = own if self.ancestry is None else torch.cat([self.ancestry, own], 2)
        self.ancestry = ext.gather(1, src_beam[:, :, None].expand(-1, -1, ext.shape[2]))
        self.length += 1

    def select(self, rows: Tensor) -> None:
        """Keep the sentences ``rows`` (the others are finished)."""
        if self.ancestry is not None:
            self.ancestry = self.ancestry.index_select(0, rows)
        for layer in self.layers:
            layer.select(rows)

    def reorder(self, index: Tensor) -> None:
        raise NotImplementedError("a BeamKVCache never moves keys: use advance() and select()")


COMPACT_FRACTION = 0.25


def _compact_now(dead: int, rows: int, free: bool) -> bool:
    """Remove finished sentences from the batch now? Always when it costs nothing (the cache is
    copied anyway), else once they are ``COMPACT_FRACTION`` of it: until then they ride along."""
    return dead > 0 and (free or dead >= COMPACT_FRACTION * rows)


def greedy_search(model: DecoderModel, src_ids: Tensor, src_padding_mask: Tensor | None = None,
                  config: GenerationConfig | None = None, **options: Any) -> GenerationOutput:
    """The most probable token at each step (HF ``generate(num_beams=1, do_sample=False)``): :func:`beam_search` with
    one beam. Scores are the sums of the tokens' log-probs over ``length ** length_penalty`` (HF greedy reports
    none)."""
    return beam_search(model, src_ids, src_padding_mask, config, **{**options, "num_beams": 1})


@torch.no_grad()
def beam_search(model: DecoderModel, src_ids: Tensor, src_padding_mask: Tensor | None = None,
                config: GenerationConfig | None = None, **options: Any) -> GenerationOutput:
    """Beam search with ``num_beams`` beams per sentence, batched over sentences; HF
    ``generate(num_beams=k, do_sample=False)``'s algorithm and conventions (module docstring); ``options`` override
    ``config``'s fields. ``nbest`` holds the ``num_return_sequences`` (default ``num_beams``) best finished hypotheses
    of each sentence, best first.

    One cached path: a model with ``decode_beams`` and ``new_beam_cache`` (:class:`Seq2SeqTransformer`) decodes each
    sentence's beams together (:class:`BeamKVCache`). Any other model, and ``use_cache=False``, recompute the whole
    prefix through ``decode`` at every step: the reference the cached path is tested against."""
    c = _config(config, options)
    s = _setup(model, src_ids, src_padding_mask, c)
    k, n, early_stopping, length_penalty = c.num_beams, c.returned, c.early_stopping, c.length_penalty
    min_length, force_eos = c.min_length, c.force_eos
    B, device = src_ids.shape[0], src_ids.device
    memory = model.encode(src_ids, s.mask)
    L = int(s.max_new.max())
    out = torch.full((B, n, L), s.pad, dtype=torch.long, device=device)
    out_scores = torch.full((B, n), float("-inf"), device=device)
    out_len = torch.zeros((B, n), dtype=torch.long, device=device)

    folded = c.use_cache and hasattr(model, "decode_beams") and hasattr(model, "new_beam_cache")
    cache = model.new_beam_cache(k) if folded else None  # type: ignore[attr-defined]
    active = torch.arange(B, device=device)  # original index of each sentence in the batch
    live = torch.ones(B, dtype=torch.bool, device=device)  # not finished yet
    max_new, mask = s.max_new, s.mask  # per sentence
    alive = torch.empty((B, k, 0), dtype=torch.long, device=device)  # tokens of the alive beams
    alive_scores = torch.zeros((B, k), device=device)
    alive_scores[:, 1:] = NEG  # all beams start equal: only the first one may expand
    fin = torch.full((B, k, L), s.pad, dtype=torch.long, device=device)  # finished hypotheses
    fin_scores = torch.full((B, k), NEG, device=device)
    fin_flag = torch.zeros((B, k), dtype=torch.bool, device=device)
    fin_len = torch.zeros((B, k), dtype=torch.long, device=device)
    improvable = torch.ones(B, dtype=torch.bool, device=device)
    top_k_mask = torch.arange(2 * k, device=device) < k
    for t in range(L):
        Ba = active.numel()
        rows_per = 1 if t == 0 else k  # step 0: one row per sentence, its beams are all the same
        if folded:
            inp = alive[:, :, -1] if t else torch.full((Ba, 1), s.bos, dtype=torch.long, device=device)
            logits = model.decode_beams(inp, memory if t == 0 else None, mask, cache)  # type: ignore[attr-defined]
            logits = logits.reshape(Ba * rows_per, 1, -1)
        else:
            prefix = torch.cat([torch.full((Ba, rows_per, 1), s.bos, dtype=torch.long, device=device),
                                alive[:, :rows_per]], 2)
            rows_memory = memory.repeat_interleave(rows_per, 0) if rows_per > 1 else memory
            rows_mask = mask.repeat_interleave(rows_per, 0) if mask is not None and rows_per > 1 else mask
            logits = model.decode(prefix.reshape(Ba * rows_per, t + 1), rows_memory, rows_mask, None)
        lprobs = F.log_softmax(logits[:, -1].float(), dim=-1)
        lprobs = _process(lprobs, t, s, min_length, _forced(t, max_new, force_eos, rows_per))
        V = lprobs.shape[-1]
        if t == 0:
            cand = (lprobs.view(Ba, 1, V) + alive_scores[:, :, None]).view(Ba, k * V)
        else:
            cand = lprobs.view(Ba, k, V).add_(alive_scores[:, :, None]).view(Ba, k * V)
        top_scores, top_idx = cand.topk(2 * k, dim=1)
        top_beam = torch.div(top_idx, V, rounding_mode="floor")
        top_tok = top_idx - top_beam * V
        hits = top_tok.eq(s.eos) | (max_new <= t + 1)[:, None]

        # alive beams of the next step: the k best that did not stop
        run = top_scores + hits.float() * NEG
        run_scores, nxt = run.topk(k, dim=1)
        src_beam = top_beam.gather(1, nxt)

        # finished hypotheses: merge the ones that just stopped among the top k
        just = hits & top_k_mask
        full = fin_flag.all(1, keepdim=True) & (early_stopping is True)
        eligible = just & (improvable & live)[:, None] & ~full
        if bool(eligible.any()):
            norm = top_scores / _length_norm(t + 1, length_penalty)
            norm = norm + full.float() * NEG
            norm = norm + (~improvable[:, None]).float() * NEG
            norm = norm + (~just).float() * NEG
            hyp = torch.cat([alive.gather(1, top_beam[:, :, None].expand(-1, -1, t)), top_tok[:, :, None]], 2)
            hyp = F.pad(hyp, (0, L - t - 1), value=s.pad)
            merged_scores = torch.cat([fin_scores, norm], 1)
            sel = merged_scores.topk(k, dim=1).indices
            fin_scores = merged_scores.gather(1, sel)
            fin = torch.cat([fin, hyp], 1).gather(1, sel[:, :, None].expand(-1, -1, L))
            fin_flag = torch.cat([fin_flag, just], 1).gather(1, sel)
            fin_len = torch.cat([fin_len, torch.full_like(top_tok, t + 1)], 1).gather(1, sel)

        alive = torch.cat([alive.gather(1, src_beam[:, :, None].expand(-1, -1, t)), top_tok.gather(1, nxt)[:, :, None]], 2)
        alive_scores = run_scores

        # can the alive beams still beat the worst finished hypothesis?
        if early_stopping == "never" and length_penalty > 0.0:
            best = run_scores[:, 0] / _length_norm(max_new.to(run_scores.dtype), length_penalty)
        else:
            best = run_scores[:, 0] / _length_norm(t + 1, length_penalty)
        worst = torch.where(fin_flag, fin_scores.min(1, keepdim=True).values, NEG)
        improvable = improvable & (best[:, None] > worst).any(1)

        # finished sentences: their n best hypotheses are final
        done = live & ((max_new <= t + 1) | (fin_flag.all(1) & (~improvable | (early_stopping is True))))
        dead = int((~live).sum())
        if bool(done.any()):
            d = done.nonzero().squeeze(1)
            idx = active[d]
            out[idx] = fin[d, :n]
            out_scores[idx] = fin_scores[d, :n]
            out_len[idx] = fin_len[d, :n]
            live = live & ~done
            dead = int((~live).sum())
            if dead == Ba:
                break
        # the next step's rows; finished sentences leave now or ride along a while (_compact_now)
        compact = _compact_now(dead, Ba, free=not folded)
        keep = live.nonzero().squeeze(1) if compact else None
        if keep is not None:
            active, max_new, improvable, live = active[keep], max_new[keep], improvable[keep], live[keep]
            alive, alive_scores, fin, fin_scores = alive[keep], alive_scores[keep], fin[keep], fin_scores[keep]
            fin_flag, fin_len = fin_flag[keep], fin_len[keep]
            mask = mask.index_select(0, keep) if mask is not None else None
            memory = memory.index_select(0, keep) if not folded else None
        elif folded:
            memory = None  # in the cache now
        if folded:
            cache.advance(src_beam)
            if keep is not None:
                cache.select(keep)
    width = int(out_len[:, 0].max()) if B else 0
    sequences = out[:, 0, :width].clone()
    nbest = [
        [Hypothesis(out[i, j, : int(out_len[i, j])].clone(), float(out_scores[i, j])) for j in range(n)]
        for i in range(B)
    ]
    return GenerationOutput(sequences, out_scores[:, 0].clone(), out_len[:, 0].clone(), nbest)


def generate(model: DecoderModel, src_ids: Tensor, src_padding_mask: Tensor | None = None,
             config: GenerationConfig | None = None, **options: Any) -> GenerationOutput:
    """Translate a batch: beam search (greedy with ``num_beams=1``, the default).

    Args:
        src_ids: ``(B, S)`` source token ids, right- or left-padded with ``pad_token_id``.
        src_padding_mask: ``(B, S)``, True at pads; None derives it from ``pad_token_id``.
        config: how to generate (:class:`GenerationConfig`); ``options`` override its fields.

    Returns:
        :class:`GenerationOutput`: ``sequences`` ``(B, T)`` (the best hypothesis without the
        start token, EOS included, padded with ``pad_token_id``), ``scores`` ``(B,)``,
        ``lengths`` ``(B,)`` and the n-best lists.
    """
    return beam_search(model, src_ids, src_padding_mask, config, **options)
