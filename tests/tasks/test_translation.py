"""Translation through the CLI: label smoothing, detokenised BLEU, beam search in validation and
predict, a run that carries its tokenizer, bad input as one clear line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import sacrebleu
import torch
import torch.nn.functional as F

from tfm.cli import main
from tfm.nn.seq2seq import label_smoothed_cross_entropy, label_smoothed_loss

TINY = ["--model.arch=transformer_tiny", "--model.dim=32", "--model.ffn_dim=64", "--model.num_heads=2", "--model.encoder_layers=1",
        "--model.decoder_layers=1", "--data.vocab_size=400", "--data.max_tokens=1024", "--model.warmup_steps=2", "--model.max_len_b=6",
        "--model.max_len_a=0.5", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--run.media_images=0"]


def fit(root: Path, *args: str, sub: str = "fit"):
    return main([sub, "--config", "configs/translation_small_bible.yaml", f"--run.root={root}", *TINY, *args])


def test_label_smoothing_equals_its_closed_form():
    # two real tokens and a pad; V = 4, epsilon = 0.1
    logits = torch.tensor([[[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, -1.0], [5.0, 5.0, 5.0, 5.0]]])
    target = torch.tensor([[0, 3, 0]])
    pad = 2
    target[0, 2] = pad
    eps = 0.1
    z1 = math.log(math.exp(2) + 3)  # log-partition of row 1
    z2 = math.log(1 + math.e + 1 + math.exp(-1))
    nll = [z1 - 2.0, z2 + 1.0]
    smooth = [z1 - 0.5, z2 - 0.0]  # mean over v of -log p_v = log Z - mean(logits)
    expected = sum((1 - eps) * n + eps * s for n, s in zip(nll, smooth)) / 2
    loss, mean_nll = label_smoothed_loss(logits, target, eps, pad)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert mean_nll.item() == pytest.approx(sum(nll) / 2, abs=1e-6)
    # the same as PyTorch's smoothed cross-entropy with the pad ignored
    ref = F.cross_entropy(logits[0], target[0], ignore_index=pad, label_smoothing=eps)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)
    # and the fused loss training uses (with its gradient)
    x = logits[0].clone().requires_grad_()
    fused = label_smoothed_cross_entropy(x, target[0], eps, ignore_index=pad)
    assert fused.item() == pytest.approx(expected, abs=1e-6)
    fused.backward()
    y = logits[0].clone().requires_grad_()
    F.cross_entropy(y, target[0], ignore_index=pad, label_smoothing=eps).backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-6)


def test_validation_decodes_and_bleu_is_sacrebleu_on_the_detokenised_strings(tmp_path):
    cli = fit(tmp_path / "runs", "--trainer.max_steps=4", "--trainer.val_check_interval=4", "--model.bleu_every_n_epochs=1",
              "--run.test_after_fit=true", "--model.beam_size=2")
    rows = cli.model.decoded  # the test split's (index, source, reference, hypothesis)
    assert len(rows) > 10 and [r[0] for r in rows] == sorted(r[0] for r in rows)
    hyps, refs = [r[3] for r in rows], [r[2] for r in rows]
    assert all("▁" not in h and "[END]" not in h and "[START]" not in h for h in hyps)
    m = cli.trainer.callback_metrics
    assert float(m["test/bleu"]) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score, abs=1e-4)
    assert float(m["test/chrf"]) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-4)
    run = Path(cli.trainer.default_root_dir)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any({"val/bleu", "val/chrf", "val/rougeL", "val/loss", "val/perplexity"} <= set(r) for r in logged), logged
    assert (run / "tokenizer.json").is_file()
    (wandb_run,) = (run / "wandb").glob("offline-run-*")
    tables = list((wandb_run / "files" / "media" / "table").rglob("*.table.json"))
    assert tables, "no W&B table of sample translations"


def test_metrics_file_rows_hold_only_what_each_validation_logged(tmp_path):
    # BLEU every 2nd epoch: epoch 1's row has it; epochs 0 and 2 have the losses only (not a stale BLEU)
    cli = fit(tmp_path / "runs", "--trainer.limit_train_batches=2", "--trainer.max_epochs=3", "--model.bleu_every_n_epochs=2",
              "--model.beam_size=1", "--run.test_after_fit=false", "--run.wandb=false")
    rows = [json.loads(line) for line in (Path(cli.trainer.default_root_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert ["val/bleu" in r for r in rows] == [False, True, False], rows
    assert all("val/loss" in r for r in rows) and len({r["val/loss"] for r in rows}) == 3


def test_predict_writes_one_translation_per_input_line(tmp_path):
    root = tmp_path / "runs"
    fit(root, "--trainer.max_steps=2", "--run.test_after_fit=false", "--run.version=v", "--model.bleu_every_n_epochs=0")
    run = root / "translation_small_bible" / "v"
    src = tmp_path / "in.txt"
    long_line = " ".join(["and"] * 600)  # longer than max_source_length: truncated with a warning, never a crash
    src.write_text("In the beginning God created the heaven and the earth.\n\n" + long_line + "\nAmen.\n")
    out = tmp_path / "out.txt"
    with pytest.warns(UserWarning, match="truncated"):
        cli = main(["predict", "--config", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                    f"--data.predict_file={src}", f"--model.predict_output={out}", f"--run.root={root}", "--run.wandb=false"])
    lines = out.read_text().split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 4  # four input lines, four output lines
    assert lines[1] == "" and all(lines[i] for i in (0, 2, 3))
    assert lines[:4] == cli.datamodule.predict_lines(cli.model.translations)


def _error(capsys, tmp_path: Path, *args: str, sub: str = "fit") -> str:
    with pytest.raises(SystemExit) as e:
        fit(tmp_path / "failed", *args, sub=sub)
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_bad_input_is_one_clear_line(capsys, tmp_path):
    root = tmp_path / "runs"
    fit(root, "--trainer.max_steps=1", "--run.test_after_fit=false", "--run.version=a", "--model.bleu_every_n_epochs=0")
    fit(root, "--trainer.max_steps=1", "--run.test_after_fit=false", "--run.version=b", "--model.bleu_every_n_epochs=0",
        "--data.vocab_size=500")
    ckpt = root / "translation_small_bible" / "a" / "checkpoints" / "last.ckpt"
    other = root / "translation_small_bible" / "b" / "tokenizer.json"
    err = _error(capsys, tmp_path, f"--data.tokenizer={other}", f"--ckpt_path={ckpt}", sub="validate")
    assert err.startswith("tfm: error: checkpoint") and "vocabulary of" in err and "tokenizer" in err, err
    tsv = tmp_path / "train.tsv"
    tsv.write_text("english\tspanish\nhello\thola\n")
    err = _error(capsys, tmp_path, "--data.source=tsv", f"--data.train_file={tsv}")
    assert "column" in err and "'en'" in err, err
    tsv.write_text("en\tes\nhello\thola\n\tadios\n")
    err = _error(capsys, tmp_path, "--data.source=tsv", f"--data.train_file={tsv}")
    assert "line 3" in err and "empty" in err, err
    err = _error(capsys, tmp_path, "--data.max_source_length=2048", "--data.max_tokens=4096")
    assert "--data.max_source_length 2048 exceeds the model's 1024 positions" in err
    assert not (tmp_path / "failed").exists()  # nothing written
