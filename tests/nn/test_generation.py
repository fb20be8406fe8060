"""Greedy and beam search: token-for-token parity with HF ``generate`` on an imported Marian model,
KV cache == recomputation, n-best, lengths, batching."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import MarianConfig, MarianMTModel

from tfm.nn import beam_search, generate, greedy_search, transformer_tiny
from tfm.nn.convert import load_hf_marian

transformers.logging.set_verbosity_error()
VOCAB, PAD, EOS = 99, 98, 0
WORDS = 40  # tokens 1..40 make the toy language
MAX_NEW = 24  # generated tokens at most; HF's max_length counts the start token too


def chain_task(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A toy translation: the target starts with the source's first token, each next token follows
    from the previous one by a fixed permutation, and it has one token less than the source
    (then EOS). A model trained on it for a few seconds translates with varied lengths and
    moderately confident, not certain, predictions: a good test bed for search."""
    perm = torch.randperm(WORDS + 1, generator=torch.Generator().manual_seed(5)).clamp(min=1)
    lens = torch.randint(3, 15, (n,), generator=g)
    src = torch.full((n, 14), PAD)
    labels = torch.full((n, 15), -100)
    for i, length in enumerate(lens.tolist()):
        s = torch.randint(1, WORDS, (length,), generator=g)
        src[i, :length] = s
        tgt = [int(s[0])]
        for _ in range(max(1, length - 1) - 1):
            tgt.append(int(perm[tgt[-1]]))
        labels[i, : len(tgt)] = torch.tensor(tgt)
        labels[i, len(tgt)] = EOS
    return src, labels


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread is fastest (and does not fight other jobs for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def marian(_one_thread):
    """A small Marian (SiLU, scaled embeddings, tied, pad = decoder start) trained briefly on
    :func:`chain_task`, and its tfm import."""
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=PAD, eos_token_id=EOS,
                          decoder_start_token_id=PAD, forced_eos_token_id=EOS, activation_function="swish",
                          scale_embedding=True, dropout=0.0)
    hf = MarianMTModel(config).train()
    opt = torch.optim.AdamW(hf.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        src, labels = chain_task(32, g)
        hf(input_ids=src, attention_mask=(src != PAD).long(), labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    hf.eval()
    return hf, load_hf_marian(hf)


@pytest.fixture(scope="module")
def sources():
    """Eight sentences of 3 to 14 tokens, right-padded."""
    src, _ = chain_task(8, torch.Generator().manual_seed(1))
    return src[:, : int((src != PAD).sum(1).max())]


def hf_generate(hf, src, **kw):
    """HF ``generate`` with OPUS-MT's generation settings (pad forbidden, EOS forced at the end)."""
    args = dict(do_sample=False, max_length=MAX_NEW + 1, bad_words_ids=[[PAD]], forced_eos_token_id=EOS,
                output_scores=True, return_dict_in_generate=True)
    args.update(kw)
    with torch.no_grad():
        return hf.generate(input_ids=src, attention_mask=(src != PAD).long(), **args)


def ours(model, src, **kw):
    return generate(model, src, max_len_a=0, max_len_b=MAX_NEW, **kw)


def test_outputs_are_not_trivial(marian, sources):
    _, model = marian
    out = ours(model, sources, num_beams=4)
    lengths = out.lengths.tolist()
    assert min(lengths) >= 2 and len(set(lengths)) >= 4 and max(lengths) < MAX_NEW  # EOS, not the length limit
    assert len({tuple(s.tolist()) for s in out.sequences}) == len(sources)
    assert -2.0 < out.scores.mean() < -0.02  # confident, not certain


def test_greedy_matches_hf(marian, sources):
    hf, model = marian
    ref = hf_generate(hf, sources, num_beams=1, output_logits=True)
    out = ours(model, sources, num_beams=1)
    assert torch.equal(out.sequences, ref.sequences[:, 1:])
    # HF greedy has no sequence scores; ours are the tokens' log-probs (before banning, as in
    # beam search), averaged (length_penalty 1)
    assert out.lengths.max() < MAX_NEW  # no forced EOS (which would score 0)
    logp = torch.stack(ref.logits, 1).float().log_softmax(-1)
    steps = ref.sequences[:, 1:]
    picked = logp.gather(2, steps[:, :, None]).squeeze(2).masked_fill(steps == PAD, 0.0)
    torch.testing.assert_close(out.scores, picked.sum(1) / out.lengths, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.6])
def test_beam_search_matches_hf(marian, sources, early_stopping, length_penalty):
    hf, model = marian
    ref = hf_generate(hf, sources, num_beams=4, length_penalty=length_penalty, early_stopping=early_stopping)
    out = ours(model, sources, num_beams=4, length_penalty=length_penalty, early_stopping=early_stopping)
    assert torch.equal(out.sequences, ref.sequences[:, 1:])
    torch.testing.assert_close(out.scores, ref.sequences_scores, atol=1e-5, rtol=1e-5)


def test_nbest_matches_hf(marian, sources):
    hf, model = marian
    ref = hf_generate(hf, sources, num_beams=5, num_return_sequences=3, early_stopping=False)
    out = ours(model, sources, num_beams=5, num_return_sequences=3, early_stopping=False)
    assert [len(n) for n in out.nbest] == [3] * len(sources)
    ref_seqs = ref.sequences[:, 1:].view(len(sources), 3, -1)
    ref_scores = ref.sequences_scores.view(len(sources), 3)
    for i, hyps in enumerate(out.nbest):
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for j, h in enumerate(hyps):
            assert torch.equal(h.tokens, ref_seqs[i, j, : len(h.tokens)])
            assert (ref_seqs[i, j, len(h.tokens) :] == PAD).all()
            assert abs(h.score - ref_scores[i, j].item()) < 1e-5
        assert torch.equal(hyps[0].tokens, out.sequences[i, : out.lengths[i]])


def test_min_length_matches_hf(marian, sources):
    hf, model = marian
    ref = hf_generate(hf, sources, num_beams=4, min_length=9 + 1)  # HF counts the start token
    out = ours(model, sources, num_beams=4, min_length=9)
    assert torch.equal(out.sequences, ref.sequences[:, 1:])
    assert (out.lengths >= 10).all()  # 9 tokens, then EOS at the earliest
    for hyps in out.nbest:
        assert all(len(h.tokens) >= 10 for h in hyps)


def test_cached_beam_search_equals_recomputation(marian, sources):
    _, model = marian
    for early_stopping in (True, False):
        fast = ours(model, sources, num_beams=4, early_stopping=early_stopping, num_return_sequences=4)
        slow = ours(model, sources, num_beams=4, early_stopping=early_stopping, num_return_sequences=4, use_cache=False)
        assert torch.equal(fast.sequences, slow.sequences)
        torch.testing.assert_close(fast.scores, slow.scores, atol=1e-5, rtol=1e-5)
        for a, b in zip(fast.nbest, slow.nbest):
            assert [h.tokens.tolist() for h in a] == [h.tokens.tolist() for h in b]
            assert all(abs(x.score - y.score) < 1e-5 for x, y in zip(a, b))
    g_fast, g_slow = ours(model, sources), ours(model, sources, use_cache=False)
    assert torch.equal(g_fast.sequences, g_slow.sequences)
    torch.testing.assert_close(g_fast.scores, g_slow.scores, atol=1e-5, rtol=1e-5)


class PlainDecoder:
    """The model behind the bare protocol (``encode``, ``decode``, ``new_cache``), without
    ``decode_beams``; with ``opaque_cache`` its cache is no :class:`KVCache` (only ``reorder``)."""

    def __init__(self, model, opaque_cache=False):
        self.model, self.opaque = model, opaque_cache
        self.pad_token_id, self.bos_token_id, self.eos_token_id = model.pad_token_id, model.bos_token_id, model.eos_token_id

    def encode(self, src, mask=None):
        return self.model.encode(src, mask)

    def decode(self, tgt, memory, mask=None, cache=None):
        return self.model.decode(tgt, memory, mask, cache.inner if self.opaque and cache is not None else cache)

    def new_cache(self):
        return OpaqueCache(self.model.new_cache()) if self.opaque else self.model.new_cache()


class OpaqueCache:
    def __init__(self, inner):
        self.inner = inner

    def reorder(self, index):
        self.inner.reorder(index)


@pytest.mark.parametrize("opaque", [False, True])
def test_any_decoder_through_the_bare_protocol(marian, sources, opaque):
    """A model with only the bare protocol (whatever its cache) gives what the beams-together path gives: its prefix
    is recomputed at every step, greedy search (one beam) included."""
    _, model = marian
    plain = PlainDecoder(model, opaque)
    for beams, early_stopping in ((4, False), (3, True), (1, True)):
        a = ours(model, sources, num_beams=beams, early_stopping=early_stopping, num_return_sequences=beams)
        b = ours(plain, sources, num_beams=beams, early_stopping=early_stopping, num_return_sequences=beams)
        assert torch.equal(a.sequences, b.sequences)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-5)
        assert [[h.tokens.tolist() for h in n] for n in a.nbest] == [[h.tokens.tolist() for h in n] for n in b.nbest]


def test_greedy_is_beam_search_with_one_beam(marian, sources):
    _, model = marian
    greedy = greedy_search(model, sources, max_len_a=0, max_len_b=MAX_NEW)
    beam = beam_search(model, sources, num_beams=1, max_len_a=0, max_len_b=MAX_NEW, early_stopping=True)
    assert torch.equal(greedy.sequences, beam.sequences)
    torch.testing.assert_close(greedy.scores, beam.scores)
    assert torch.equal(generate(model, sources, max_len_a=0, max_len_b=MAX_NEW).sequences, greedy.sequences)


def test_a_sentence_does_not_depend_on_its_batch(marian, sources):
    """Each sentence alone gives what it gives in the batch (finished sentences leave the batch,
    lengths are per sentence)."""
    _, model = marian
    for beams in (1, 3):
        batch = generate(model, sources, num_beams=beams, max_len_a=1.0, max_len_b=3)
        for i in range(len(sources)):
            n = int((sources[i] != PAD).sum())
            alone = generate(model, sources[i : i + 1, :n], num_beams=beams, max_len_a=1.0, max_len_b=3)
            assert torch.equal(alone.sequences[0], batch.sequences[i, : alone.lengths[0]])
            assert abs(alone.scores[0].item() - batch.scores[i].item()) < 1e-5


def test_length_limits_and_forced_eos(marian, sources):
    _, model = marian
    src_len = (sources != PAD).sum(1)
    for beams in (1, 4):
        out = generate(model, sources, num_beams=beams, max_len_a=0.5, max_len_b=1)
        limit = (0.5 * src_len.double() + 1).long()
        assert (out.lengths <= limit).all() and (out.lengths == limit).any()
        last = out.sequences.gather(1, (out.lengths - 1)[:, None]).squeeze(1)
        assert (last == EOS).all()  # forced at the last step
        capped = generate(model, sources, num_beams=beams, max_length=3)
        assert capped.lengths.max() <= 3
        free = generate(model, sources, num_beams=beams, max_length=3, force_eos=False)
        cut = free.lengths == 3
        assert cut.any() and (free.sequences[cut, 2] != EOS).any()


def test_forbidden_tokens(marian, sources):
    _, model = marian
    plain = ours(model, sources, num_beams=3)
    banned = sorted({int(t) for t in plain.sequences.flatten()} - {EOS, PAD})[:3]
    out = ours(model, sources, num_beams=3, bad_token_ids=[PAD, *banned])
    assert not torch.isin(out.sequences, torch.tensor(banned)).any()
    assert not (out.sequences[:, 0] == PAD).any()


def test_own_model_with_its_own_special_tokens():
    """A tfm model whose decoder starts from a [START] token of its own, ids from the model."""
    torch.manual_seed(0)
    model = transformer_tiny(vocab_size=30, pad_token_id=0, bos_token_id=1, eos_token_id=2, dropout=0.0).eval()
    src = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    for beams in (1, 3):
        out = generate(model, src, num_beams=beams, max_length=6, num_return_sequences=beams)
        assert out.sequences.shape[0] == 2 and (out.lengths <= 6).all()
        assert not torch.isin(out.sequences[out.sequences != 0], torch.tensor([0, 1])).any()
        assert len(out.nbest[0]) == beams
    with pytest.raises(ValueError, match="num_return_sequences=4 must be between 1 and num_beams=3"):
        beam_search(model, src, num_beams=3, num_return_sequences=4)
    with pytest.raises(ValueError, match="bos_token_id is not set"):
        generate(transformer_tiny(vocab_size=30), src)
