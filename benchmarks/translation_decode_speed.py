"""Translation decoding speed: tfm beam search / greedy vs HF ``generate``, same weights, same outputs.

    python benchmarks/translation_decode_speed.py [--quick] [--threads N] [--device cuda --precision bf16-mixed]

An HF ``MarianMTModel`` the size of ``transformer_small`` (dim 256, 4 + 4 layers, 4 heads, FFN
1024, SiLU as OPUS-MT, vocabulary 8000, tied embeddings, pad = decoder start) is built at random and
imported with ``tfm.nn.convert.load_hf_marian``. A random model never says EOS, so every search
would run to the length limit, which is not what translating looks like; instead, as a trained
model does, this one ends a translation near the source's length: the output embedding of EOS
(and its logit bias) is fitted by least squares on the model's own decoder states (teacher-forced
on random sources, 2 s) to rise once the output is as long as the source. Every other token stays
random. Both sides decode the same 256 random sources of 10 to 60 tokens (uniform, unsorted, in
batches of 32) with OPUS-MT's generation settings: the pad token forbidden, EOS forced at the last
step, at most 80 new tokens, length penalty 1.0, HF's default ``early_stopping=False``. The outputs
must be identical token for token (asserted in fp32; beam scores to 1e-4; under bf16 / fp16 autocast
the two sides round differently, so the number of identical outputs is reported instead). Passes over all sentences
alternate (tfm, HF, tfm, ...) after a warm-up, in one process with the same threads; medians.
One JSON line per case (beam 4, greedy): sentences/s and the ratio tfm / HF.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import MarianConfig, MarianMTModel
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Runtime, add_runtime_args, emit, interleaved  # noqa: E402
from tfm.nn import TRANSFORMER_PRESETS, generate  # noqa: E402
from tfm.nn.convert import load_hf_marian  # noqa: E402

VOCAB, PAD, EOS = 8000, 7999, 0
MAX_NEW = 80  # new tokens at most (HF max_length = 81: it counts the start token)


def random_sources(n: int, seed: int, lo: int = 10, hi: int = 60) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(lo, hi + 1, (n,), generator=g)
    src = torch.full((n, hi), PAD)
    for i, length in enumerate(lens.tolist()):
        src[i, :length] = torch.randint(1, PAD, (length,), generator=g)
    return src


def build_models(arch: str = "transformer_small", n: int = 256):
    """HF Marian at random with a fitted EOS readout, and its tfm import."""
    p = TRANSFORMER_PRESETS[arch]
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=VOCAB, d_model=p["dim"], encoder_layers=p["encoder_layers"],
                          decoder_layers=p["decoder_layers"], encoder_attention_heads=p["num_heads"],
                          decoder_attention_heads=p["num_heads"], encoder_ffn_dim=p["ffn_dim"],
                          decoder_ffn_dim=p["ffn_dim"], max_position_embeddings=256, pad_token_id=PAD,
                          eos_token_id=EOS, decoder_start_token_id=PAD, forced_eos_token_id=EOS,
                          activation_function="swish", scale_embedding=True, attn_implementation="sdpa")
    hf = MarianMTModel(config).eval()
    ours = load_hf_marian(hf)
    # EOS readout: least squares of (output position - source length), clipped, on decoder states
    steps = MAX_NEW
    src = random_sources(n, seed=1)
    lens = (src != PAD).sum(1)
    g = torch.Generator().manual_seed(2)
    tgt = torch.randint(1, PAD, (n, steps), generator=g)
    tgt[:, 0] = PAD
    with torch.no_grad():
        mask = ours.source_padding_mask(src)
        hidden = ours.transformer.decoder(ours.tgt_embed(tgt), ours.encode(src, mask), mask)
        target = ((torch.arange(steps)[None, :] - lens[:, None]).float().clamp(-8, 8) + 0.5) / 8
        x = torch.cat([hidden.reshape(n * steps, -1), torch.ones(n * steps, 1)], 1)
        sol = torch.linalg.lstsq(x, target.reshape(-1, 1)).solution[:, 0]
        scale, shift = 20.0, 0.05
        hf.model.shared.weight[EOS] = scale * sol[:-1]
        hf.final_logits_bias[0, EOS] = scale * (sol[-1] + shift)
    return hf, load_hf_marian(hf), config


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=None)
    add_runtime_args(ap)
    args = ap.parse_args(argv)
    hf_logging.set_verbosity_error()
    rt = Runtime.from_args(args)
    reps = args.reps or rt.pick(args, smoke=1, quick=2, full=4)
    n = args.sentences or rt.pick(args, smoke=8, quick=64, full=256)
    batch = 4 if args.smoke else 32
    exact = rt.dtype is None
    t0 = time.perf_counter()
    arch = "transformer_tiny" if args.smoke else "transformer_small"
    hf, ours, _ = build_models(arch, n=32 if args.smoke else 256)
    hf, ours = hf.to(rt.device), ours.to(rt.device)
    src = random_sources(n, seed=0).to(rt.device)
    batches = [src[i : i + batch] for i in range(0, n, batch)]
    batches = [b[:, : int((b != PAD).sum(1).max())] for b in batches]
    print(f"models ready in {time.perf_counter() - t0:.1f}s; {n} sentences of "
          f"{(src != PAD).sum(1).float().mean():.1f} tokens on average", flush=True)

    lines: list[tuple[float, float, dict, dict]] = []
    for beams in (4, 1):
        hf_kw = dict(num_beams=beams, do_sample=False, max_length=MAX_NEW + 1, bad_words_ids=[[PAD]],
                     forced_eos_token_id=EOS, output_scores=True, return_dict_in_generate=True)
        our_kw = dict(num_beams=beams, max_len_a=0, max_len_b=MAX_NEW, bad_token_ids=[PAD], force_eos=True)
        if beams > 1:
            hf_kw.update(length_penalty=1.0, early_stopping=False)
            our_kw.update(length_penalty=1.0, early_stopping=False)

        def run_hf(kw=hf_kw):
            with torch.no_grad(), rt.autocast():
                return [hf.generate(input_ids=b, attention_mask=(b != PAD).long(), **kw) for b in batches]

        def run_ours(kw=our_kw):
            with rt.autocast():
                return [generate(ours, b, **kw) for b in batches]

        # identical outputs
        ref, out = run_hf(), run_ours()
        same = 0
        lengths = []
        for r, o in zip(ref, out):
            seq = r.sequences[:, 1:]
            width = max(seq.shape[1], o.sequences.shape[1])
            a = torch.nn.functional.pad(seq, (0, width - seq.shape[1]), value=PAD)
            b = torch.nn.functional.pad(o.sequences, (0, width - o.sequences.shape[1]), value=PAD)
            same += int((a == b).all(1).sum())
            lengths += o.lengths.tolist()
            if beams > 1 and exact:
                torch.testing.assert_close(o.scores.float(), r.sequences_scores.float(), atol=1e-4, rtol=1e-4)
        assert same == n or not exact, f"beam {beams}: {n - same} of {n} translations differ from HF's"
        t = interleaved({"ours": run_ours, "hf": run_hf}, warmup=1, reps=reps)
        mean_len = sum(lengths) / len(lengths)
        print(f"beam {beams}: tfm {t['ours']:.2f}s, HF {t['hf']:.2f}s per {n} sentences; "
              f"outputs identical ({same}/{n}), {mean_len:.1f} tokens on average", flush=True)
        config = {"case": f"beam{beams}" if beams > 1 else "greedy", "num_beams": beams, "sentences": n,
                  "batch": batch, "src_len": "10-60", "max_new_tokens": MAX_NEW, "vocab_size": VOCAB,
                  "model": f"{arch} size (SiLU)", "early_stopping": False,
                  "length_penalty": 1.0, **rt.describe(), "reps": reps}
        extra = {"identical": f"{same}/{n}", "mean_output_tokens": round(mean_len, 1),
                 "seconds_ours": round(t["ours"], 3), "seconds_reference": round(t["hf"], 3)}
        lines.append((n / t["ours"], n / t["hf"], config, extra))
    for ours_rate, ref_rate, config, extra in lines:  # the JSON lines come last
        emit("translation_decode_speed", "sentences_per_s", ours_rate, ref_rate,
             "transformers MarianMTModel.generate (sdpa)", config, **extra)


if __name__ == "__main__":
    main()
