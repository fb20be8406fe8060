"""Translation training-step throughput (forward + label-smoothed CE + backward + AdamW step),
tfm Seq2SeqTransformer vs HF MarianMTModel.

    python benchmarks/translation_train_throughput.py [--quick] [--threads N] [--device cuda --precision bf16-mixed]

An HF ``MarianMTModel`` of ``transformer_small``'s size (dim 256, 4 + 4 layers, 4 heads, FFN 1024,
vocabulary 8000, tied embeddings; and the ``transformer_base`` size without ``--quick``) is built at
random and imported into tfm with ``tfm.nn.convert.load_hf_marian``: same weights, same dropout
(0.1, both in train mode). Both see the same batch of sentence pairs (sources and targets of 10
to 60 tokens, padded; the decoder input is the target shifted right behind the start token) and
minimise the same loss: cross-entropy with label smoothing 0.1 over the real target tokens. HF
projects every position onto the vocabulary (its ``forward`` has no other way) and the loss
ignores the pads (``ignore_index``, ``F.cross_entropy(label_smoothing=0.1)``); tfm passes the real
tokens' positions, projects only those and takes ``tfm.nn.label_smoothed_cross_entropy`` (the
same number, one buffer instead of several). Both step a fused ``torch.optim.AdamW`` over the same parameter groups. Steps alternate
(tfm, HF, tfm, ...) after warm-up, in one process with the same threads; medians. One JSON line
per case: target tokens/s (padding excluded) and the ratio tfm / HF.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import MarianConfig, MarianMTModel
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Runtime, add_runtime_args, emit, interleaved  # noqa: E402
from tfm.nn import TRANSFORMER_PRESETS, Seq2SeqTransformer, label_smoothed_cross_entropy  # noqa: E402
from tfm.nn.convert import load_hf_marian  # noqa: E402
from tfm.tasks.base import param_groups  # noqa: E402

VOCAB, PAD, EOS = 8000, 7999, 0
SMOOTHING = 0.1


def make_batch(n: int, seed: int = 0, lo: int = 10, hi: int = 60) -> dict[str, torch.Tensor]:
    """``n`` pairs: sources and targets of ``lo`` to ``hi`` tokens (target about as long as its
    source), right-padded; ``decoder_input_ids`` = start (pad, as Marian) + target[:-1]; ``labels``
    = target (EOS last), -100 at pads."""
    g = torch.Generator().manual_seed(seed)
    src_len = torch.randint(lo, hi + 1, (n,), generator=g)
    tgt_len = (src_len.float() * (0.8 + 0.4 * torch.rand(n, generator=g))).long().clamp(lo, hi)
    src = torch.full((n, int(src_len.max())), PAD)
    labels = torch.full((n, int(tgt_len.max())), -100)
    for i in range(n):
        src[i, : src_len[i]] = torch.randint(1, PAD, (int(src_len[i]),), generator=g)
        labels[i, : tgt_len[i] - 1] = torch.randint(1, PAD, (int(tgt_len[i]) - 1,), generator=g)
        labels[i, tgt_len[i] - 1] = EOS
    dec_in = torch.full_like(labels, PAD)
    dec_in[:, 1:] = labels[:, :-1].clamp(min=0).masked_fill(labels[:, :-1] < 0, PAD)
    return {"input_ids": src, "attention_mask": (src != PAD).long(), "decoder_input_ids": dec_in, "labels": labels}


def ours_loss(model: Seq2SeqTransformer, b: dict[str, torch.Tensor]):
    labels = b["labels"].flatten()

    def loss() -> torch.Tensor:
        pos = (labels != -100).nonzero().squeeze(1)
        logits = model(b["input_ids"], b["decoder_input_ids"], positions=pos)
        return label_smoothed_cross_entropy(logits, labels[pos], SMOOTHING)
    return loss


def hf_loss(model: MarianMTModel, b: dict[str, torch.Tensor]):
    def loss() -> torch.Tensor:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                       decoder_input_ids=b["decoder_input_ids"]).logits
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), b["labels"].view(-1),
                               ignore_index=-100, label_smoothing=SMOOTHING)
    return loss


def check_same_loss(ours: Seq2SeqTransformer, hf: MarianMTModel, b: dict[str, torch.Tensor]) -> float:
    """Both losses in eval mode (no dropout): the same number."""
    ours.eval(), hf.eval()
    with torch.no_grad():
        labels = b["labels"].flatten()
        pos = (labels != -100).nonzero().squeeze(1)
        a = label_smoothed_cross_entropy(ours(b["input_ids"], b["decoder_input_ids"], positions=pos), labels[pos],
                                         SMOOTHING)
        logits = hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                    decoder_input_ids=b["decoder_input_ids"]).logits
        r = F.cross_entropy(logits.view(-1, logits.shape[-1]), b["labels"].view(-1), label_smoothing=SMOOTHING)
    ours.train(), hf.train()
    assert torch.allclose(a, r, atol=1e-4), (a.item(), r.item())
    return a.item()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    add_runtime_args(ap)
    args = ap.parse_args(argv)
    hf_logging.set_verbosity_error()
    rt = Runtime.from_args(args)
    reps = args.reps or rt.pick(args, smoke=1, quick=5, full=10)
    cases = rt.pick(args, smoke={"transformer_tiny": 4}, quick={"transformer_small": 64},
                    full={"transformer_small": 64, "transformer_base": 32}, gpu={"transformer_small": 256, "transformer_base": 256})
    for arch, batch in cases.items():
        p = TRANSFORMER_PRESETS[arch]
        torch.manual_seed(0)
        config = MarianConfig(vocab_size=VOCAB, d_model=p["dim"], encoder_layers=p["encoder_layers"],
                              decoder_layers=p["decoder_layers"], encoder_attention_heads=p["num_heads"],
                              decoder_attention_heads=p["num_heads"], encoder_ffn_dim=p["ffn_dim"],
                              decoder_ffn_dim=p["ffn_dim"], max_position_embeddings=256, pad_token_id=PAD,
                              eos_token_id=EOS, decoder_start_token_id=PAD, activation_function="relu",
                              scale_embedding=True, dropout=0.1, attn_implementation="sdpa")
        ref = MarianMTModel(config)
        ours = load_hf_marian(ref).train()
        ref.train()
        ref, ours = ref.to(rt.device), ours.to(rt.device)
        b = rt.to(make_batch(batch))
        tokens = int((b["labels"] != -100).sum())
        loss = check_same_loss(ours, ref, b)
        opt_ours = torch.optim.AdamW(param_groups(ours, 0.01), lr=1e-4, fused=True)
        opt_ref = torch.optim.AdamW(param_groups(ref, 0.01), lr=1e-4, fused=True)
        t = interleaved({"ours": rt.train_step(ours_loss(ours, b), opt_ours), "hf": rt.train_step(hf_loss(ref, b), opt_ref)},
                        warmup=1 if args.smoke else 2, reps=reps)
        emit("translation_train_throughput", "target_tokens_per_s", tokens / t["ours"], tokens / t["hf"],
             "transformers MarianMTModel (sdpa) + label-smoothed CE + torch fused AdamW",
             {"case": arch, "batch": batch, "src_tokens": int(b["attention_mask"].sum()), "tgt_tokens": tokens,
              "padded_tgt_positions": int(b["labels"].numel()), "vocab_size": VOCAB, "label_smoothing": SMOOTHING,
              "dropout": 0.1, "activation": "relu", **rt.describe(), "reps": reps},
             initial_loss=round(loss, 4), step_s_ours=round(t["ours"], 4), step_s_reference=round(t["hf"], 4))


if __name__ == "__main__":
    main()
