"""Translation data: the bundled Bible split by book, the BPE tokenizer (exact round trip, special
ids, cache, save/load), batches, TSV/JSONL files and Hugging Face translation datasets, token-count
batching that resumes exactly, and one clear error for each kind of bad input."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tfm.data import TranslationDataModule
from tfm.data.loading import TokenBatchSampler
from tfm.data.tokenizers import (
    bpe_special_ids,
    bpe_tokenizer,
    load_bpe_tokenizer,
    load_bpe_tokenizers,
    save_tokenizer,
    wordpiece_tokenizer,
)
from tfm.data.translation import read_bible, split_books
from tfm.errors import UserError

VERSES = read_bible()
BOOK_SIZES = dict(Counter(v.book for v in VERSES))
SEED0 = {
    "validation": ["Joshua", "Amos", "Zechariah", "Hebrews", "I Peter", "II John", "Jude"],
    "test": ["II Chronicles", "Mark"],
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def bible_dm(cache) -> TranslationDataModule:
    dm = TranslationDataModule(cache_dir=cache)  # the defaults: 8,000-token joint BPE, max_tokens 4096
    dm.setup("fit")
    return dm


def write_tsv(path: Path, verses, header=("en", "es")) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join(f"{v.en}\t{v.es}\n" for v in verses), encoding="utf-8")
    return path


def write_jsonl(path: Path, verses) -> Path:
    path.write_text("".join(json.dumps({"id": i, "translation": {"en": v.en, "es": v.es}}, ensure_ascii=False) + "\n" for i, v in enumerate(verses)), encoding="utf-8")
    return path


def small_dm(tmp_path: Path, **kw) -> TranslationDataModule:
    train = write_tsv(tmp_path / "train.tsv", VERSES[:240])
    args = {"source": "tsv", "train_file": str(train), "vocab_size": 400, "max_tokens": 1024, "max_source_length": 256,
            "max_target_length": 256, "cache_dir": str(tmp_path / "cache")}
    return TranslationDataModule(**{**args, **kw})


# --- the bundled Bible ----------------------------------------------------------------------------------
def test_bible_reader_books_and_cleaning():
    assert len(VERSES) == 30270 and len(BOOK_SIZES) == 59
    assert BOOK_SIZES["I Samuel"] == 809 and BOOK_SIZES["II Kings"] == 719 and BOOK_SIZES["Song of Solomon"] == 117
    assert "I" not in BOOK_SIZES and "II" not in BOOK_SIZES  # names with spaces are whole books
    v = VERSES[0]
    assert (v.book, v.chapter, v.verse) == ("Genesis", 1, 1) and v.en == "In the beginning God created the heaven and the earth."
    assert VERSES[5].en.startswith("And God said, Let there be a firmament")  # "¶ And God said" in the file
    assert not any("¶" in x.en or "\\nd" in x.en for x in VERSES)
    assert all(x.en and x.es and x.en == x.en.strip() and "  " not in x.en + x.es for x in VERSES)


def test_split_by_book_is_deterministic_and_disjoint(bible_dm):
    a = split_books(BOOK_SIZES, 0.05, 0.05, seed=0)
    assert a == split_books(BOOK_SIZES, 0.05, 0.05, seed=0) and a != split_books(BOOK_SIZES, 0.05, 0.05, seed=1)
    assert {s: a[s] for s in SEED0} == SEED0
    assert sorted(a["train"] + a["validation"] + a["test"]) == sorted(BOOK_SIZES)
    sizes = {s: sum(BOOK_SIZES[b] for b in books) for s, books in a.items()}
    assert sizes == {"train": 27310, "validation": 1461, "test": 1499}
    for seed in range(5):  # each split about 5% of the pairs
        b = split_books(BOOK_SIZES, 0.05, 0.05, seed=seed)
        assert all(0.045 < sum(BOOK_SIZES[x] for x in b[s]) / len(VERSES) < 0.056 for s in ("validation", "test"))
    dm = bible_dm
    assert dm.books == a and {s: len(p) for s, p in dm.raw_splits.items()} == sizes
    books_of = {s: {VERSES[r - 2].book for r in p.rows} for s, p in dm.raw_splits.items()}  # rows: lines of the TSV
    assert all(VERSES[r - 2].en == t for p in dm.raw_splits.values() for r, t in zip(p.rows, p.src))
    assert books_of["validation"] == set(SEED0["validation"]) and books_of["test"] == set(SEED0["test"])
    assert not books_of["train"] & (books_of["validation"] | books_of["test"])


def test_direction_swap(bible_dm, cache):
    dm = TranslationDataModule(source_lang="es", target_lang="en", cache_dir=cache)
    for split in ("train", "validation", "test"):
        a, b = bible_dm.raw_splits[split], dm.raw_splits[split]
        assert a.src == b.tgt and a.tgt == b.src
    assert dm.raw_splits["validation"].src[0].startswith("Y ACONTECIÓ después de la muerte de Moisés")  # Joshua 1:1
    assert dm.tokenizer.get_vocab() == bible_dm.tokenizer.get_vocab()  # one joint vocabulary, from the cache


# --- the BPE tokenizer ------------------------------------------------------------------------------
def test_bpe_round_trip_on_real_lines_and_special_ids(bible_dm):
    tok = bible_dm.tokenizer
    assert bpe_special_ids(tok) == {"[PAD]": 0, "[UNK]": 1, "[START]": 2, "[END]": 3}
    assert (bible_dm.pad_token_id, bible_dm.bos_token_id, bible_dm.eos_token_id) == (0, 2, 3)
    assert tok.id_to_token(4) == "<0x00>" and tok.id_to_token(259) == "<0xFF>" and tok.get_vocab_size() == 8000
    lines = [t for v in VERSES[::7] for t in (v.en, v.es)]  # 8,650 lines: accents, ¿ ¡, ’, æ, [but] ...
    assert any("¿" in t for t in lines) and any("æ" in t for t in lines)
    encodings = tok.encode_batch(lines, add_special_tokens=False)
    assert tok.decode_batch([e.ids for e in encodings]) == lines
    assert all(1 not in e.ids for e in encodings)  # no [UNK]
    tricky = ["double  space,\ttab and\nnewline", "trailing space ", "日本語 and ▯", "[END] [PAD] are text here", "ﬁ is NFKC fi"]
    for s in tricky:
        n = unicodedata.normalize("NFKC", s)
        assert tok.decode(tok.encode(s).ids) == n
    assert 3 not in tok.encode("[END]").ids  # a special token written in the text is text
    assert tok.decode(tok.encode(" leading").ids) == "leading"  # the one exception: a leading space is lost
    assert tok.decode(tok.encode("  two").ids) == " two"


def test_bpe_cache_canonical_ids_and_errors(tmp_path):
    texts = [v.en for v in VERSES[:400]] + [v.es for v in VERSES[:400]]
    a = bpe_tokenizer(lambda: texts, "corpus-a", vocab_size=500, cache_dir=tmp_path)
    files = list(tmp_path.glob("bpe-500-*.json"))
    assert len(files) == 1 and a.get_vocab_size() == 500

    def never():
        raise AssertionError("a cached tokenizer must not read the corpus")

    b = bpe_tokenizer(never, "corpus-a", vocab_size=500, cache_dir=tmp_path)
    assert b.get_vocab() == a.get_vocab()
    c = bpe_tokenizer(lambda: list(reversed(texts)), "corpus-a2", vocab_size=500, cache_dir=tmp_path / "other")
    assert c.get_vocab() == a.get_vocab()  # canonical ids: the same vocabulary, the same ids
    with pytest.raises(UserError, match="too small"):
        bpe_tokenizer(lambda: texts, "x", vocab_size=200, cache_dir=tmp_path)
    with pytest.raises(UserError, match="does not exist") as e:
        load_bpe_tokenizer(tmp_path / "nope.json")
    assert "\n" not in str(e.value)
    wp = save_tokenizer(wordpiece_tokenizer(lambda: texts, "wp", vocab_size=300, cache_dir=tmp_path / "wp"), tmp_path / "bert")
    with pytest.raises(UserError, match=r"has no \[START\], \[END\] token") as e:
        load_bpe_tokenizer(wp)
    assert "\n" not in str(e.value)


def test_tokenizer_saved_into_the_run_and_reloaded(bible_dm, tmp_path, cache):
    path = bible_dm.save_tokenizer(tmp_path / "run")
    assert path == tmp_path / "run" / "tokenizer.json" and not (tmp_path / "run" / "target_tokenizer.json").exists()
    for given in (tmp_path / "run", path):
        dm = TranslationDataModule(tokenizer=str(given), cache_dir=cache)
        assert dm.joint and dm.tokenizer.get_vocab() == bible_dm.tokenizer.get_vocab()
    # separate vocabularies: tokenizer.json (source) and target_tokenizer.json
    sep = small_dm(tmp_path, joint_vocab=False)
    assert not sep.joint and sep.tokenizer_vocab_size <= 400 and sep.target_vocab_size <= 400
    assert "á" in sep.target_tokenizer.get_vocab() and "á" not in sep.tokenizer.get_vocab()
    sep.save_tokenizer(tmp_path / "run2")
    src, tgt = load_bpe_tokenizers(tmp_path / "run2" / "tokenizer.json")
    assert tgt is not None and tgt.get_vocab() == sep.target_tokenizer.get_vocab() and src.get_vocab() == sep.tokenizer.get_vocab()
    again = small_dm(tmp_path, joint_vocab=False, tokenizer=str(tmp_path / "run2"))
    assert again.target_tokenizer.get_vocab() == sep.target_tokenizer.get_vocab()
    with pytest.raises(UserError, match="does not exist"):
        TranslationDataModule(tokenizer=str(tmp_path / "missing"), cache_dir=cache)


# --- batches ------------------------------------------------------------------------------------------
def test_batches_frame_source_and_target(bible_dm):
    dm = bible_dm
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    assert set(batch) == {"src_ids", "tgt_in", "tgt_out", "src_text", "tgt_text", "index"}
    src, tgt_in, tgt_out = batch["src_ids"], batch["tgt_in"], batch["tgt_out"]
    b = src.shape[0]
    assert src.dtype == tgt_in.dtype == tgt_out.dtype == batch["index"].dtype == torch.long
    assert tgt_in.shape == tgt_out.shape and tgt_in.shape[0] == b and len(batch["src_text"]) == len(batch["tgt_text"]) == b
    assert src.numel() <= dm.max_tokens and tgt_in.numel() <= dm.max_tokens
    src_len, tgt_len = (src != 0).sum(1), (tgt_out != 0).sum(1)
    assert (src[torch.arange(b), src_len - 1] == dm.eos_token_id).all() and (tgt_out[torch.arange(b), tgt_len - 1] == dm.eos_token_id).all()
    assert (tgt_in[:, 0] == dm.bos_token_id).all() and torch.equal((tgt_in != 0).sum(1), tgt_len)
    assert torch.equal(tgt_in[:, 1:][tgt_out[:, :-1] != 3], tgt_out[:, :-1][tgt_out[:, :-1] != 3])  # shifted by one
    train = dm.raw_splits["train"]
    for row, i in enumerate(batch["index"].tolist()):
        assert batch["src_text"][row] == train.src[i] and batch["tgt_text"][row] == train.tgt[i]
        assert dm.decode(tgt_out[row]) == batch["tgt_text"][row] == dm.decode(tgt_in[row, 1:].tolist() + [3])
        assert dm.tokenizer.decode(src[row].tolist()) == batch["src_text"][row]
    # evaluation: sorted by length, every pair once, the same batches every time
    val = list(dm.val_dataloader())
    assert sorted(i for v in val for i in v["index"].tolist()) == list(range(len(dm.val_set)))
    assert [v["index"].tolist() for v in val] == [v["index"].tolist() for v in dm.val_dataloader()]


def test_padding_fraction_is_low(bible_dm):
    # measured: 0.041 (221 batches of ~124 pairs); validation batches, sorted by length: 0.097
    assert bible_dm.max_tokens == 4096 and bible_dm.padding_fraction("train") < 0.05
    loader = bible_dm.train_dataloader()
    assert len(loader) == len(bible_dm.batch_sampler("train")) > 200


# --- the batch sampler ------------------------------------------------------------------------------
def test_token_batch_sampler_is_seeded_resumable_and_sharded():
    rng = np.random.default_rng(0)
    src = rng.integers(2, 60, 3000)
    lengths = np.stack([src, np.clip(src + rng.integers(-5, 6, 3000), 2, None)], 1)
    a, b = TokenBatchSampler(lengths, 600, seed=3), TokenBatchSampler(lengths, 600, seed=3)
    for epoch in (0, 1):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b)  # depends only on (seed, epoch)
    e0, e1 = a.batches(0), a.batches(1)
    assert e0 != e1 and len(e0) == len(e1) == len(a)  # a new order, the same count
    assert sorted(i for bb in e0 for i in bb) == list(range(3000))  # every item once
    assert all(len(bb) * lengths[bb].max(0).max() <= 600 for bb in e0)
    assert TokenBatchSampler(lengths, 600, seed=4).batches(0) != e0
    # yielded indices carry the epoch (epoch * n + i), as ResumableSampler's
    a.set_epoch(1)
    assert next(iter(a)) == [3000 + i for i in e1[0]]
    # resumed after k batches: exactly the rest of that epoch, then whole epochs again
    r = TokenBatchSampler(lengths, 600, seed=3)
    r.set_epoch(1)
    r.resume_epoch, r.skip_batches = 1, 7
    assert list(r) == [[3000 + i for i in bb] for bb in e1[7:]]
    assert len(list(r)) == len(e1)
    # two replicas: disjoint lists of equal length
    r0, r1 = (TokenBatchSampler(lengths, 600, seed=3, num_replicas=2, rank=k, drop_last=True) for k in (0, 1))
    l0, l1 = r0.batches(0), r1.batches(0)
    assert len(l0) == len(l1) == len(r0) == len(r1) == len(a.global_batches(0)) // 2
    assert not {i for bb in l0 for i in bb} & {i for bb in l1 for i in bb}
    # evaluation: sorted, no shuffling, padded by repetition across replicas
    ev = TokenBatchSampler(lengths, 600, shuffle=False, per_epoch=False)
    ev.set_epoch(5)
    assert list(ev) == ev.global_batches(0) == ev.global_batches(3)
    e0_, e1_ = (TokenBatchSampler(lengths, 600, shuffle=False, num_replicas=2, rank=k) for k in (0, 1))
    assert len(e0_.batches(0)) == len(e1_.batches(0)) and {i for bb in e0_.batches(0) + e1_.batches(0) for i in bb} == set(range(3000))


def test_datamodule_resumes_from_its_checkpoint_state(tmp_path):
    dm = small_dm(tmp_path)
    dm.setup("fit")
    whole = dm.batch_sampler("train").batches(1)
    dm.load_state_dict({"epoch": 1, "batches": 4, "seed": 0})
    loader = dm.train_dataloader()
    loader.batch_sampler.set_epoch(1)
    got = [b["index"].tolist() for b in loader]
    assert got == whole[4:] and len(loader) == len(whole)
    loader.batch_sampler.set_epoch(2)
    assert len(list(loader)) == len(whole)  # the next epoch is whole


def test_lightning_sets_the_epoch_and_reads_the_length(tmp_path):
    import warnings

    import lightning.pytorch as pl

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w, self.seen = torch.nn.Parameter(torch.zeros(1)), []

        def training_step(self, batch, i):
            self.seen.append((self.current_epoch, batch["index"].tolist()))
            return self.w.sum() * batch["src_ids"].float().mean()

        def predict_step(self, batch, i):
            return batch["index"]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm, model = small_dm(tmp_path, max_tokens=2048), Recorder()
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, use_distributed_sampler=False)
    trainer.fit(model, dm)
    sampler = dm.batch_sampler("train")
    assert trainer.num_training_batches == len(sampler)
    for epoch in (0, 1):
        assert [b for e, b in model.seen if e == epoch] == sampler.batches(epoch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = trainer.predict(model, dm)
    assert not [w for w in caught if "batch sampler" in str(w.message)]  # its drop_last worry does not apply
    assert sorted(torch.cat(out).tolist()) == list(range(len(dm.predict_pairs)))


# --- files and datasets -------------------------------------------------------------------------------
def test_tsv_and_jsonl_files(tmp_path):
    val = write_jsonl(tmp_path / "val.jsonl", VERSES[300:330])
    dm = small_dm(tmp_path, validation_file=str(val))
    assert {s: len(p) for s, p in dm.raw_splits.items()} == {"train": 240, "validation": 30, "test": 30}
    assert dm.raw_splits["validation"].src[0] == VERSES[300].en and dm.raw_splits["validation"].rows[:2] == [1, 2]
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["tgt_text"][0] == VERSES[300 + batch["index"][0]].es
    # no validation file: held out of the training file; the test split is the validation one
    held = small_dm(tmp_path)
    assert len(held.raw_splits["validation"]) == 12 and len(held.raw_splits["train"]) == 228
    assert held.raw_splits["test"] is held.raw_splits["validation"]
    assert held.raw_splits["validation"].rows == small_dm(tmp_path).raw_splits["validation"].rows  # seeded
    # named columns, either direction
    other = write_tsv(tmp_path / "cols.tsv", VERSES[:60], header=("english", "spanish"))
    swapped = TranslationDataModule(source="tsv", train_file=str(other), source_column="spanish", target_column="english",
                                    source_lang="es", target_lang="en", vocab_size=400, cache_dir=str(tmp_path / "cache"))
    assert swapped.raw_splits["train"].tgt[0] in {v.en for v in VERSES[:60]}
    jsonl = TranslationDataModule(source="jsonl", train_file=str(val), vocab_size=400, cache_dir=str(tmp_path / "cache"))
    assert len(jsonl.raw_splits["train"]) == 28 and set(jsonl.raw_splits["train"].tgt) < {v.es for v in VERSES[300:330]}


def test_hf_translation_dataset(monkeypatch, tmp_path):
    import datasets

    def fake_load(name, config=None):
        assert (name, config) == ("opus_books", "en-es")
        rows = [{"id": str(i), "translation": {"en": v.en, "es": v.es}} for i, v in enumerate(VERSES[:80])]
        rows[5]["translation"]["es"] = " "  # empty: skipped with a warning
        return datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    dm = TranslationDataModule(source="hf:opus_books:en-es", source_lang="es", target_lang="en", vocab_size=400, cache_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="1 pairs .* empty text"):
        raw = dm.raw_splits
    assert len(raw["train"]) + len(raw["validation"]) == 79 and raw["validation"].where.startswith("hf:opus_books:en-es")
    assert set(raw["train"].src + raw["validation"].src) == {v.es for i, v in enumerate(VERSES[:80]) if i != 5}
    assert raw["test"] is raw["validation"] and raw["train"].tgt[0] == VERSES[raw["train"].rows[0] - 1].en


def test_predict_file_lines_in_order(tmp_path):
    pred = tmp_path / "in.txt"
    pred.write_text(f"{VERSES[0].en}\n\n{VERSES[1].en}\n{VERSES[2].en}\n", encoding="utf-8")
    dm = small_dm(tmp_path, predict_file=str(pred))
    dm.setup("predict")
    assert dm.predict_pairs.rows == [1, 3, 4]
    batches = list(dm.predict_dataloader())
    assert set(batches[0]) == {"src_ids", "src_text", "index"}
    texts = {i: t for b in batches for i, t in zip(b["index"].tolist(), b["src_text"])}
    assert [texts[i] for i in range(3)] == [VERSES[0].en, VERSES[1].en, VERSES[2].en]


def test_length_filter_and_eval_truncation(tmp_path):
    val = write_tsv(tmp_path / "val.tsv", VERSES[300:340])
    dm = small_dm(tmp_path, validation_file=str(val), max_source_length=64, max_target_length=64)
    with pytest.warns(UserWarning, match=r"of the 40 validation lines .* longer than .* truncated \(the references stay whole\)"):
        dm.setup("fit")
    lengths = dm.train_set.lengths()
    assert 50 < dm.dropped_pairs < 200 and len(dm.train_set) == 240 - dm.dropped_pairs and lengths.max() == 64
    val_set = dm.val_set
    assert val_set.lengths().max() == 64 and len(val_set) == 40
    batch = next(iter(dm.val_dataloader()))
    assert batch["src_ids"].shape[1] <= 64 and batch["tgt_text"][0] == VERSES[300 + batch["index"][0]].es  # whole reference


# --- bad input: one clear line, nothing written --------------------------------------------------------
def test_bad_input_is_one_clear_line(tmp_path):
    cache = tmp_path / "cache"

    def error(**kw) -> str:
        with pytest.raises(UserError) as e:
            dm = TranslationDataModule(cache_dir=str(cache), **{"vocab_size": 400, **kw})
            dm.setup("fit")
        assert "\n" not in str(e.value)
        return str(e.value)

    bad = tmp_path / "empty.tsv"
    bad.write_text("en\tes\nHello.\tHola.\n\tAdiós.\n", encoding="utf-8")
    assert error(source="tsv", train_file=str(bad)) == f"{bad} line 3: the 'en' text is empty: fill it in or remove the line"
    cols = tmp_path / "cols.tsv"
    cols.write_text("english\tspanish\nHello.\tHola.\n", encoding="utf-8")
    msg = error(source="tsv", train_file=str(cols))
    assert "no column 'en'" in msg and "english, spanish" in msg and str(cols) in msg
    js = tmp_path / "pairs.jsonl"
    js.write_text('{"en": "Hello.", "fr": "Bonjour."}\n', encoding="utf-8")
    msg = error(source="jsonl", train_file=str(js))
    assert "no column 'es'" in msg and "en, fr" in msg
    js2 = tmp_path / "empty.jsonl"
    js2.write_text('{"en": "Hello.", "es": "Hola."}\n\n{"en": "Bye.", "es": ""}\n', encoding="utf-8")
    assert error(source="jsonl", train_file=str(js2)) == f"{js2} line 3: the 'es' text is empty: fill it in or remove the line"
    assert "does not exist" in error(source="tsv", train_file=str(tmp_path / "missing.tsv"))
    assert "needs --data.train_file" in error(source="tsv")
    assert "not a language of the bundled Bible" in error(target_lang="fr")
    assert "is unknown" in error(source="opus")
    assert "both 'en'" in error(target_lang="en")
    assert "max_tokens 100 is less than" in error(max_tokens=100)
    assert "too small" in error(vocab_size=100)
    assert "read only with --data.source tsv or jsonl" in error(train_file=str(bad))
    assert not cache.exists() or not any(cache.rglob("*.json"))  # nothing written
