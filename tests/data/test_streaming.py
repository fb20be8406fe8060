"""Streamed training data (``--data.streaming=true``): ``datasets`` streams read as trained on,
resumed exactly after SIGKILL, split over DDP ranks, and the mistakes a user makes with them.
The hub is unreachable here: local files stream through the same ``datasets`` code."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import torch
from conftest import DDP, run_cli
from resume_helper import assert_exact_resume

from tfm.cli import main
from tfm.data.translation import TranslationDataModule, read_bible
from tfm.errors import UserError

VERSES = read_bible()[:400]
TINY = ["--model.arch=transformer_tiny", "--model.dim=32", "--model.ffn_dim=64", "--model.num_heads=2", "--data.vocab_size=400",
        "--data.max_tokens=512", "--model.bleu_every_n_epochs=0", "--data.streaming=true", "--data.stream_block_size=64"]


def pair_files(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, verses in (("train.tsv", VERSES[:300]), ("val.tsv", VERSES[300:])):
        (folder / name).write_text("en\tes\n" + "".join(f"{v.en}\t{v.es}\n" for v in verses), encoding="utf-8")
    return ["--data.source=tsv", f"--data.train_file={folder / 'train.tsv'}", f"--data.validation_file={folder / 'val.tsv'}"]


def test_a_stream_is_read_in_seeded_blocks_and_resumes_at_the_batch(tmp_path):
    files = {"train_file": str(tmp_path / "train.tsv"), "validation_file": str(tmp_path / "val.tsv")}
    pair_files(tmp_path)
    dm = TranslationDataModule(source="tsv", **files, streaming=True, stream_block_size=64, vocab_size=400, max_tokens=512,
                               cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    assert len(dm.val_set) == 100 and not dm._encoded.get("train")
    batches = list(dm.train_dataloader())
    texts = [t for b in batches for t in b["src_text"]]
    assert sorted(texts) == sorted(v.en for v in VERSES[:300])  # every pair once (none is over the length limits)
    assert texts[:64] != [v.en for v in VERSES[:64]]  # shuffled within its block
    assert [b["_stream_position"]["block"] for b in batches] == sorted(b["_stream_position"]["block"] for b in batches)
    # resumed after batch k (a position a checkpoint holds): the same batches from k + 1 on
    for k in (0, 7, len(batches) - 2):
        again = TranslationDataModule(source="tsv", **files, streaming=True, stream_block_size=64, vocab_size=400, max_tokens=512,
                                      cache_dir=str(tmp_path / "c"))
        again.load_state_dict({"stream": [batches[k]["_stream_position"]], "seed": 0})
        rest = list(again.train_dataloader())
        assert len(rest) == len(batches) - k - 1
        assert all(torch.equal(a["src_ids"], b["src_ids"]) and torch.equal(a["tgt_out"], b["tgt_out"]) for a, b in zip(rest, batches[k + 1 :]))


@pytest.mark.slow
def test_sigkill_then_resume_of_a_streamed_run_is_bitwise_exact(tmp_path):
    args = [*TINY, *pair_files(tmp_path / "data"), "--data.cache_dir=" + str(tmp_path / "cache"), "--trainer.limit_train_batches=7",
            "--trainer.limit_val_batches=1"]
    # killed in the first epoch, so the resumed run also crosses into the next epoch (which must start the stream afresh)
    assert_exact_resume("configs/translation_small_bible.yaml", args, tmp_path, steps=12, seed=5)


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_ranks_read_their_own_part_and_checkpoint_both_positions(tmp_path):
    common = ["--config", "configs/translation_small_bible.yaml", *TINY, *pair_files(tmp_path / "data"), f"--run.root={tmp_path / 'runs'}",
              f"--data.cache_dir={tmp_path / 'cache'}", "--run.wandb=false", "--run.media_images=0", "--trainer.enable_progress_bar=false",
              "--run.test_after_fit=false", "--trainer.limit_val_batches=2", "--trainer.num_sanity_val_steps=0"]
    run_cli("fit", *common, "--trainer.max_steps=3", *DDP)
    (ckpt,) = (tmp_path / "runs").glob("*/*/checkpoints/last.ckpt")
    stream = torch.load(ckpt, map_location="cpu", weights_only=True)["TranslationDataModule"]["stream"]
    assert len(stream) == 2 and all(p["done"] >= 1 for p in stream)
    # both ranks resume their part (validation is read whole, as without streaming: tests/test_ddp.py compares 1 and 2 processes)
    run_cli("fit", *common, "--trainer.max_steps=5", f"--ckpt_path={ckpt}", *DDP)
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 5


def test_streaming_mistakes_are_one_line(tmp_path):
    rows = datasets.Dataset.from_dict({"translation": [{"en": v.en, "es": v.es} for v in VERSES[:20]]})
    datasets.DatasetDict({"validation": rows}).save_to_disk(str(tmp_path / "val_only"))
    datasets.DatasetDict({"train": rows}).save_to_disk(str(tmp_path / "train_only"))

    def error(**kw) -> str:
        with pytest.raises(UserError) as e:
            dm = TranslationDataModule(streaming=True, vocab_size=400, cache_dir=str(tmp_path / "c"), **kw)
            dm.setup("fit")
        assert "\n" not in str(e.value)
        return str(e.value)

    assert error(source=f"hf:{tmp_path / 'val_only'}").endswith("val_only' has no 'train' split (it has validation)")
    assert "needs a validation split" in error(source=f"hf:{tmp_path / 'train_only'}")
    assert "not the bundled Bible" in error()


def test_a_streamed_run_needs_max_steps(tmp_path, capsys):
    args = ["fit", "--config", "configs/translation_small_bible.yaml", *TINY, *pair_files(tmp_path / "data"), f"--run.root={tmp_path / 'runs'}",
            f"--data.cache_dir={tmp_path / 'cache'}", "--run.wandb=false", "--trainer.max_steps=-1", "--trainer.max_epochs=1"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == ("tfm: error: --data.streaming reads a stream of unknown length: set "
                                                                "--trainer.max_steps (the schedule needs it)")


@pytest.mark.slow
def test_sigkill_then_resume_of_streamed_pretraining_is_bitwise_exact(tmp_path):
    """Documents streamed from a folder: pairs drawn and masked per block, held-out documents skipped."""
    from tfm.data.text import read_brown

    folder = tmp_path / "docs"
    folder.mkdir()
    for doc in read_brown()[:60]:
        (folder / f"{doc.id}.txt").write_text("\n".join(doc.text()), encoding="utf-8")
    args = [f"--data.source={folder}", "--data.streaming=true", "--data.stream_block_size=8", "--data.batch_size=8", "--data.val_fraction=0.1",
            "--data.test_fraction=0.1", f"--data.cache_dir={tmp_path / 'cache'}", "--trainer.limit_val_batches=1", "--trainer.limit_train_batches=6"]
    assert_exact_resume("configs/bert_tiny.yaml", args, tmp_path, steps=10, seed=1)  # killed in the first epoch
    with pytest.raises(UserError, match="not the bundled Brown corpus"):
        from tfm.data.pretraining import BertPretrainingDataModule

        BertPretrainingDataModule(streaming=True)
