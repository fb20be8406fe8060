"""Pretraining-step throughput (forward + backward + AdamW step), tfm BERT vs HF BERT.

    python benchmarks/bert_pretrain_throughput.py [--quick] [--device cuda --precision bf16-mixed]

HF ``BertForPreTraining`` is built at random and imported into tfm's ``BertForPretraining`` with
``tfm.nn.convert.load_hf_bert``: same weights, same dropout (0.1, both in train mode). Both see
the same batch: sequences of 128 tokens (a few shorter and padded, as a pretraining batch), 15%
of the real tokens masked, two segments, next-sentence labels. HF computes its own loss from
``labels`` (MLM logits at every position); tfm takes ``masked_positions(labels)`` and scores only
those. Both step a fused ``torch.optim.AdamW`` (HF Trainer's default) over the same parameter
groups. Steps alternate (tfm, HF, tfm, ...) after warm-up, in one process with the same threads.
Prints one JSON line per case: tokens/s (real tokens, padding excluded) and the ratio tfm / HF,
and each side's model FLOPs utilisation: the FLOPs of the work each side actually does (counted
with ``torch.utils.flop_counter.FlopCounterMode`` over one step) per second, over the matmul
peak measured in the same process (in the run's precision on a GPU, fp32 on a CPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertForPreTraining
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Runtime, add_runtime_args, emit, interleaved  # noqa: E402
from tfm.nn import BERT_PRESETS, BertForPretraining, masked_positions, pretraining_loss  # noqa: E402
from tfm.nn.convert import load_hf_bert  # noqa: E402
from tfm.tasks.base import param_groups  # noqa: E402

SEQ_LEN = 128
VOCAB = 30522


def make_batch(batch: int, seq_len: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A pretraining-like batch: [CLS] A [SEP] B [SEP], every 8th row shorter and padded, 15% of
    the real non-special tokens masked (labels -100 elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.full((batch,), seq_len)
    lengths[::8] = torch.randint(seq_len // 4, seq_len, (len(lengths[::8]),), generator=g)
    ar = torch.arange(seq_len)
    real = ar[None, :] < lengths[:, None]
    input_ids = torch.randint(1000, vocab, (batch, seq_len), generator=g).masked_fill(~real, 0)
    sep = (lengths // 2)[:, None]
    token_type_ids = ((ar[None, :] > sep) & real).long()
    special = (ar[None, :] == 0) | (ar[None, :] == sep) | (ar[None, :] == lengths[:, None] - 1)
    input_ids = torch.where(ar[None, :] == 0, 101, torch.where(special & real, 102, input_ids))
    chosen = (torch.rand(batch, seq_len, generator=g) < 0.15) & real & ~special
    labels = input_ids.masked_fill(~chosen, -100)
    input_ids = input_ids.masked_fill(chosen, 103)
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": real.long(),
        "labels": labels,
        "next_sentence_label": torch.randint(0, 2, (batch,), generator=g),
    }


def ours_loss(model: BertForPretraining, b: dict[str, torch.Tensor]):
    def loss() -> torch.Tensor:
        pos = masked_positions(b["labels"])
        out = model(b["input_ids"], b["token_type_ids"], b["attention_mask"], pos)
        targets = b["labels"].flatten()[pos]
        return pretraining_loss(out.mlm_logits, targets, out.nsp_logits, b["next_sentence_label"])[0]
    return loss


def hf_loss(model: BertForPreTraining, b: dict[str, torch.Tensor]):
    return lambda: model(**b).loss


def step_flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    add_runtime_args(ap)
    args = ap.parse_args(argv)
    hf_logging.set_verbosity_error()
    rt = Runtime.from_args(args)
    reps = args.reps or rt.pick(args, smoke=1, quick=5, full=12)
    cases = rt.pick(args, smoke={"bert_tiny": 4}, quick={"bert_mini": 16}, full={"bert_mini": 32, "bert_base": 16},
                    gpu={"bert_base": 64, "bert_large": 32})
    seq_len = 32 if args.smoke else SEQ_LEN
    for arch, batch in cases.items():
        p = BERT_PRESETS[arch]
        torch.manual_seed(0)
        config = BertConfig(vocab_size=VOCAB, hidden_size=p["dim"], num_hidden_layers=p["depth"],
                            num_attention_heads=p["num_heads"], intermediate_size=4 * p["dim"],
                            max_position_embeddings=512, attn_implementation="sdpa")
        ref = BertForPreTraining(config).train()
        ours = load_hf_bert(ref.state_dict(), BertForPretraining, config=config.to_dict()).train()
        ref, ours = ref.to(rt.device), ours.to(rt.device)
        b = rt.to(make_batch(batch, seq_len, VOCAB))
        tokens = int(b["attention_mask"].sum())
        opt_ours = torch.optim.AdamW(param_groups(ours, 0.01), lr=1e-4, fused=True)
        opt_ref = torch.optim.AdamW(param_groups(ref, 0.01), lr=1e-4, fused=True)
        steps = {"ours": rt.train_step(ours_loss(ours, b), opt_ours), "hf": rt.train_step(hf_loss(ref, b), opt_ref)}
        flops = {k: step_flops(fn) for k, fn in steps.items()}
        t = interleaved(steps, warmup=1 if args.smoke else 2, reps=reps)
        peak = rt.peak_flops()
        mfu = {k: flops[k] / t[k] / peak for k in steps}
        emit("bert_pretrain_throughput", "tokens_per_s", tokens / t["ours"], tokens / t["hf"],
             "transformers BertForPreTraining (sdpa) + torch fused AdamW",
             {"case": arch, "batch": batch, "seq_len": seq_len, "vocab_size": VOCAB, "real_tokens": tokens,
              "masked": int((b["labels"] != -100).sum()), "dropout": 0.1, **rt.describe(), "reps": reps},
             mfu_ours=round(mfu["ours"], 3), mfu_reference=round(mfu["hf"], 3), step_gflop_ours=round(flops["ours"] / 1e9, 1),
             step_gflop_reference=round(flops["hf"] / 1e9, 1), peak_gflops=round(peak / 1e9, 1))


if __name__ == "__main__":
    main()
