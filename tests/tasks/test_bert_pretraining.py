"""BERT pretraining through the CLI: the run carries its tokenizer, a resume reuses it, bad input
is one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tfm.cli import main

SMALL = ["--data.max_documents=40", "--data.batch_size=8", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
         "--run.test_after_fit=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def fit(root: Path, *args: str, sub: str = "fit"):
    return main([sub, "--config", "configs/bert_tiny.yaml", f"--run.root={root}", *SMALL, *args])


def test_run_folder_holds_the_tokenizer_and_a_resume_reuses_it(tmp_path):
    root = tmp_path / "runs"
    cli = fit(root, "--trainer.max_steps=2", "--run.version=v")
    run = root / "bert_tiny" / "v"
    tok = json.loads((run / "tokenizer.json").read_text())
    assert (run / "vocab.txt").is_file()
    assert cli.model.net.bert.vocab_size == len(tok["model"]["vocab"]) == cli.datamodule.tokenizer_vocab_size
    (wandb_run,) = (run / "wandb").glob("offline-run-*")
    assert (wandb_run / "files" / "tokenizer.json").is_file() and (wandb_run / "files" / "config.yaml").is_file()
    # the tokenizer could not be trained again by a resume: it is taken from the run folder
    cli = fit(root, "--trainer.max_steps=4", "--run.version=v", "--ckpt_path=last", "--data.vocab_size=999")
    assert cli.datamodule.tokenizer_path == str(run / "tokenizer.json")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def _error(capsys, tmp_path: Path, *args: str, sub: str = "fit") -> str:
    with pytest.raises(SystemExit) as e:
        fit(tmp_path / "failed", *args, sub=sub)
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def test_bad_input_is_one_clear_line(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("\n\n")
    assert "holds no text" in _error(capsys, tmp_path, f"--data.source={empty}", "--data.cache_dir=" + str(tmp_path / "c"))
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 64)
    assert "is not a UTF-8 text file" in _error(capsys, tmp_path, f"--data.source={binary}", "--data.cache_dir=" + str(tmp_path / "c"))
    err = _error(capsys, tmp_path, "--data.max_seq_length=256", "--model.max_positions=128")
    assert "--data.max_seq_length 256 exceeds the model's 128 positions" in err
    # a checkpoint trained with another vocabulary
    root = tmp_path / "runs"
    fit(root, "--trainer.max_steps=1", "--data.vocab_size=600", "--run.version=a")
    fit(root, "--trainer.max_steps=1", "--data.vocab_size=700", "--run.version=b")
    ckpt = root / "bert_tiny" / "a" / "checkpoints" / "last.ckpt"
    err = _error(capsys, tmp_path, f"--data.tokenizer={root / 'bert_tiny' / 'b' / 'tokenizer.json'}", f"--ckpt_path={ckpt}", sub="validate")
    assert err.startswith("tfm: error: checkpoint") and "vocabulary of 600 tokens but the tokenizer has 700" in err, err
    assert not (tmp_path / "failed").exists()  # nothing written
