"""BERT pretraining data: WordPiece tokenizer, Brown and text readers, sentence-pair instances,
dynamic masking, the DataModule (on a small Brown subset)."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch

from tfm.data.loading import SeededTransform
from tfm.data.pretraining import (
    BertPretrainingDataModule,
    MaskedLMCollator,
    PretrainingInstances,
    create_instances,
    instance_columns,
    tokenize_documents,
)
from tfm.data.text import brown_tagged_sentences, read_brown, read_text_documents, resolve_source, split_sentences
from tfm.data.tokenizers import SPECIAL_TOKENS, load_tokenizer, save_tokenizer, special_ids, wordpiece_tokenizer
from tfm.errors import UserError

FIRST_SENTENCE = (
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced "
    '"no evidence" that any irregularities took place.'
)


@pytest.fixture(scope="module")
def docs() -> list[list[str]]:
    """The first 40 Brown documents (news), as sentences."""
    return [d.text() for d in read_brown()[:40]]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tok(docs, cache):
    return wordpiece_tokenizer(lambda: (s for d in docs for s in d), "brown-40", vocab_size=2000, cache_dir=cache)


@pytest.fixture(scope="module")
def instances(tok, docs):
    ids = special_ids(tok)
    made = create_instances(tokenize_documents(tok, docs), max_seq_length=64, seed=1)
    return made, instance_columns(made, ids["[CLS]"], ids["[SEP]"])


# --- tokenizer --------------------------------------------------------------------------------------
def test_tokenizer_specials_and_pair_template(tok):
    assert tok.get_vocab_size() == 2000
    assert special_ids(tok) == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    enc = tok.encode("The jury said.", "Atlanta voted.")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2 and enc.tokens[-1] == "[SEP]"
    first_sep = enc.tokens.index("[SEP]")
    assert enc.type_ids == [0] * (first_sep + 1) + [1] * (len(enc.tokens) - first_sep - 1)
    assert tok.decode(enc.ids) == "the jury said. atlanta voted."


def test_tokenizer_cache_hit(tok, cache):
    def no_text():
        raise AssertionError("a cached tokenizer must not read the corpus")

    start = time.perf_counter()
    again = wordpiece_tokenizer(no_text, "brown-40", vocab_size=2000, cache_dir=cache)
    assert time.perf_counter() - start < 0.5
    assert again.to_str() == tok.to_str()
    assert len(list(cache.glob("wordpiece-2000-uncased-*.json"))) == 1


def test_tokenizer_saved_and_loaded_from_json_and_vocab_txt(tok, tmp_path):
    save_tokenizer(tok, tmp_path / "run")
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"tokenizer.json", "vocab.txt"}
    text = ("Mr. Hawksley, the city's Civil Defense director, said Friday.", "Nobody knew what to do.")
    want = tok.encode(*text)
    for path in (tmp_path / "run", tmp_path / "run" / "tokenizer.json", tmp_path / "run" / "vocab.txt"):
        got = load_tokenizer(path).encode(*text)
        assert (got.ids, got.type_ids) == (want.ids, want.type_ids), path
    # a vocab.txt alone (no tokenizer_config.json): an all-lower-case vocabulary means uncased
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "vocab.txt").write_text((tmp_path / "run" / "vocab.txt").read_text())
    assert load_tokenizer(tmp_path / "bare").encode(*text).ids == want.ids


def test_tokenizer_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(tmp_path / "nope.json")
    with pytest.raises(UserError, match="neither tokenizer.json nor vocab.txt"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match=r"no \[PAD\]"):
        load_tokenizer(tmp_path / "vocab.txt")


# --- documents --------------------------------------------------------------------------------------
def test_brown_reader(docs):
    brown = read_brown()
    assert len(brown) == 500 and (brown[0].id, brown[0].category) == ("ca01", "news")
    assert (brown[-1].id, brown[-1].category) == ("cr09", "humor")
    assert docs[0][0] == FIRST_SENTENCE
    assert brown[0].sentences[0][:3] == [("The", "at"), ("Fulton", "np-tl"), ("County", "nn-tl")]
    text = "\n".join(s for d in docs for s in d)
    assert not re.search(r"\w/(at|nn|np|in|vbd|jj)\b", text) and "``" not in text and "''" not in text
    assert sum(len(d.sentences) for d in brown) == 57340
    assert len(brown_tagged_sentences(categories=["news"])) == 4623
    with pytest.raises(UserError, match="unknown Brown categories"):
        brown_tagged_sentences(categories=["cooking"])


def test_text_documents_and_sources(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("First sentence.\nSecond one.\n\nMr. Smith came home. He slept! Did he dream? Yes.\n")
    assert read_text_documents(f) == [["First sentence.", "Second one."], ["Mr. Smith came home.", "He slept!", "Did he dream?", "Yes."]]
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_text("One.\n\nTwo.\n")
    (tmp_path / "folder" / "b.txt").write_text("Three.\n")
    assert read_text_documents(tmp_path / "folder") == [["One.", "Two."], ["Three."]]
    assert split_sentences('He said "Go." Then Dr. J. Doe left (at 5 p.m.) for Washington. It rained.') == [
        'He said "Go."', "Then Dr. J. Doe left (at 5 p.m.) for Washington.", "It rained."
    ]
    assert resolve_source("brown").kind == "brown"
    assert resolve_source(str(f)).kind == "text" and resolve_source("hf:wikipedia:20220301.en").config == "20220301.en"
    with pytest.raises(UserError, match="does not exist"):
        resolve_source(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(UserError, match="holds no text"):
        resolve_source(str(tmp_path / "empty.txt")).documents()


# --- instances --------------------------------------------------------------------------------------
def test_instances_structure(tok, instances):
    made, cols = instances
    cls_id, sep_id = special_ids(tok)["[CLS]"], special_ids(tok)["[SEP]"]
    assert len(made) > 500
    for ids, types in zip(cols["input_ids"], cols["token_type_ids"]):
        assert len(ids) <= 64 and len(ids) == len(types)
        assert ids[0] == cls_id and ids[-1] == sep_id and ids.count(sep_id) == 2 and ids.count(cls_id) == 1
        first_sep = ids.index(sep_id)
        assert first_sep >= 2 and len(ids) - first_sep >= 3  # A and B are not empty
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    assert 0.4 < sum(cols["next_sentence_label"]) / len(made) < 0.65
    # most reach the target length (61 tokens + 3 specials)
    assert sum(len(ids) == 64 for ids in cols["input_ids"]) > 0.5 * len(made)


def test_instances_deterministic_and_short_seq_prob(tok, docs, instances):
    tokenized = tokenize_documents(tok, docs)
    assert create_instances(tokenized, max_seq_length=64, seed=1) == instances[0]
    assert create_instances(tokenized, max_seq_length=64, seed=2) != instances[0]

    def short_share(p: float) -> float:
        made = create_instances(tokenized, max_seq_length=64, short_seq_prob=p, seed=3)
        return sum(len(a) + len(b) + 3 < 64 for a, b, _ in made) / len(made)

    assert short_share(0.0) < 0.01 and short_share(0.5) > 0.05  # half the documents aim shorter
    # with nsp_prob 0, B is random only where a chunk has a single sentence (as in google's code)
    made = create_instances(tokenized, max_seq_length=64, nsp_prob=0.0, seed=4)
    assert sum(r for *_, r in made) < 0.3 * len(made)
    assert all(r for *_, r in create_instances(tokenized, max_seq_length=64, nsp_prob=1.0, seed=4))


# --- masking ----------------------------------------------------------------------------------------
def _samples(cols, n: int) -> list[dict]:
    ds = PretrainingInstances(_as_dataset(cols))
    return [ds[i] for i in range(n)]


def _as_dataset(cols):
    import datasets

    return datasets.Dataset.from_dict(cols)


def test_masking_statistics(tok, instances):
    samples = _samples(instances[1], 512)
    collator = MaskedLMCollator(tok, mlm_probability=0.15, pad_to_multiple_of=8)
    torch.manual_seed(0)
    batch = collator(samples)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
    assert batch["input_ids"].shape[1] % 8 == 0 and all(v.dtype == torch.long for v in batch.values())
    assert MaskedLMCollator(tok, pad_to_multiple_of=48, max_length=64)(samples)["input_ids"].shape[1] == 64  # not 96
    original = batch["labels"].clone()
    chosen = batch["labels"] != -100
    lengths = torch.tensor([len(s["input_ids"]) for s in samples])
    assert (batch["attention_mask"].sum(1) == lengths).all()
    unmasked = batch["input_ids"].masked_fill(chosen, 0)
    # the unchosen positions are unchanged; specials and padding are never chosen
    ids = torch.zeros_like(batch["input_ids"])
    for row, s in enumerate(samples):
        ids[row, : len(s["input_ids"])] = torch.tensor(s["input_ids"])
    assert (unmasked == ids.masked_fill(chosen, 0)).all()
    assert (original[chosen] == ids[chosen]).all()
    eligible = ids >= len(SPECIAL_TOKENS)
    assert not (chosen & ~eligible).any()
    assert abs(chosen.sum() / eligible.sum() - 0.15) < 0.005
    out = batch["input_ids"][chosen]
    masked, kept = (out == special_ids(tok)["[MASK]"]).float().mean(), (out == ids[chosen]).float().mean()
    replaced = 1 - masked - kept
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(replaced - 0.1) < 0.02
    assert (out[(out != special_ids(tok)["[MASK]"])] >= len(SPECIAL_TOKENS)).all()  # random tokens are not special


def test_whole_word_masking(tok, instances):
    samples = _samples(instances[1], 256)
    collator = MaskedLMCollator(tok, whole_word_masking=True)
    torch.manual_seed(1)
    batch = collator(samples)
    chosen = batch["labels"] != -100
    pieces = 0
    for row, s in enumerate(samples):
        tokens = [tok.id_to_token(int(i)) for i in s["input_ids"]]
        for j in range(1, len(tokens)):
            if tokens[j].startswith("##") and tokens[j - 1] not in SPECIAL_TOKENS:
                assert chosen[row, j] == chosen[row, j - 1], (row, j, tokens[j - 1 : j + 1])
                pieces += int(chosen[row, j])
        eligible = sum(t not in SPECIAL_TOKENS for t in tokens)
        assert chosen[row].sum() <= max(1, round(0.15 * eligible))
    assert pieces > 50  # words of several pieces were masked whole
    assert abs(chosen.sum() / (batch["attention_mask"].sum() - 3 * len(samples)) - 0.15) < 0.01


def test_masking_is_seeded_per_batch(tok, instances):
    ds = PretrainingInstances(_as_dataset(instances[1]))
    seeded = SeededTransform(ds, MaskedLMCollator(tok), seed=3, collate=True)
    state = torch.get_rng_state()
    a, b = seeded.__getitems__([5, 6, 7]), seeded.__getitems__([5, 6, 7])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    next_epoch = seeded.__getitems__([len(ds) + 5, len(ds) + 6, len(ds) + 7])
    assert torch.equal(next_epoch["token_type_ids"], a["token_type_ids"]) and not torch.equal(next_epoch["labels"], a["labels"])


# --- DataModule -------------------------------------------------------------------------------------
def test_datamodule_batches_and_cache(cache, tmp_path):
    dm = BertPretrainingDataModule(max_documents=40, vocab_size=2000, cache_dir=str(cache), batch_size=8, max_seq_length=64)
    assert (dm.tokenizer_vocab_size, dm.pad_token_id) == (2000, 0)
    dm.setup("fit")
    assert len(dm.train_set) > 10 * len(dm.val_set) > 0 and len(dm.test_set) > 0
    batch = next(iter(dm.train_dataloader()))
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == {
        "input_ids": ((8, 64), torch.long),
        "token_type_ids": ((8, 64), torch.long),
        "attention_mask": ((8, 64), torch.long),
        "labels": ((8, 64), torch.long),
        "next_sentence_label": ((8,), torch.long),
    }
    # validation masks the same every epoch
    loader = dm.val_dataloader()
    first = next(iter(loader))
    loader.sampler.set_epoch(3)
    assert torch.equal(next(iter(loader))["input_ids"], first["input_ids"])
    assert dm.save_tokenizer(tmp_path / "run").is_file()
    # a second DataModule loads the cached tokenizer and instances: no corpus reading
    start = time.perf_counter()
    again = BertPretrainingDataModule(max_documents=40, vocab_size=2000, cache_dir=str(cache), batch_size=8, max_seq_length=64)
    again.setup("fit")
    assert time.perf_counter() - start < 2.0 and again._documents is None
    assert list(again.train_set.ds["input_ids"]) == list(dm.train_set.ds["input_ids"])


def test_datamodule_resumes_with_the_same_batches(cache):
    kwargs = {"max_documents": 40, "vocab_size": 2000, "cache_dir": str(cache), "batch_size": 8, "max_seq_length": 64, "seed": 5}
    dm = BertPretrainingDataModule(**kwargs)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    full = [b for _, b in zip(range(5), loader)]
    resumed = BertPretrainingDataModule(**kwargs)
    resumed.setup("fit")
    resumed.load_state_dict({"epoch": 1, "batches": 2, "seed": 5})
    loader = resumed.train_dataloader()
    loader.sampler.set_epoch(1)
    for want, got in zip(full[2:], loader):
        assert all(torch.equal(want[k], got[k]) for k in want)


def test_datamodule_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        BertPretrainingDataModule(source=str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="tokenizer"):
        BertPretrainingDataModule(tokenizer=str(tmp_path / "vocab.txt"))
    with pytest.raises(UserError, match="val_fraction"):
        BertPretrainingDataModule(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(UserError, match="max_seq_length"):
        BertPretrainingDataModule(max_seq_length=4)
    with pytest.raises(UserError, match=r"--data.num_proc 999 is not between 1 and the \d+ CPUs"):
        BertPretrainingDataModule(num_proc=999)


# --- preparation on datasets ------------------------------------------------------------------------
def test_instances_do_not_depend_on_the_number_of_processes(cache, tmp_path):
    """The same instances from 1 and 2 preparation processes; the splits are memory-mapped Arrow,
    read in place (read-only views), and a reader pickles as its file."""
    import pickle

    kwargs = {"max_documents": 40, "vocab_size": 2000, "max_seq_length": 64}
    one = BertPretrainingDataModule(cache_dir=str(cache), num_proc=1, **kwargs)
    two = BertPretrainingDataModule(cache_dir=str(tmp_path / "two"), num_proc=2, **kwargs)
    two._tokenizer = one.tokenizer  # training a vocabulary is not reproducible to the token (see wordpiece_tokenizer)
    one.setup("fit")
    two.setup("fit")
    assert len(list((tmp_path / "two" / "pretraining").glob("*/train_0000*_of_00002.arrow"))) == 2  # two processes wrote it
    for split in ("train_set", "val_set", "test_set"):
        a, b = getattr(one, split), getattr(two, split)
        assert len(a) == len(b) > 0
        assert list(a.ds["input_ids"]) == list(b.ds["input_ids"]) and list(a.ds["next_sentence_label"]) == list(b.ds["next_sentence_label"])
    item = one.train_set[3]
    assert item["input_ids"].dtype == np.int32 and not item["input_ids"].flags.writeable  # a view of the mapped file
    again = pickle.loads(pickle.dumps(one.train_set))
    assert all(np.array_equal(again[i]["input_ids"], one.train_set[i]["input_ids"]) for i in (0, 5, len(again) - 1))


def test_tokenizer_reads_a_seeded_sample_of_a_large_corpus(tmp_path):
    from tfm.data.text import row_sizes, sample_rows

    sizes = np.arange(1, 101)
    picks = sample_rows(sizes, 500, seed=0)
    assert list(picks) == sorted(picks) and sizes[picks].sum() <= 500 < sizes[picks].sum() + sizes.max()
    assert list(picks) == list(sample_rows(sizes, 500, seed=0)) != list(sample_rows(sizes, 500, seed=1))
    assert list(sample_rows(sizes, 10**9, seed=0)) == list(range(100))  # a small corpus: all of it, in order
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.txt").write_text(f"Document {i} says hello.\nIt ends here.\n" * (i + 1))
    source = resolve_source(str(folder))
    assert list(row_sizes(source.dataset())) == [(folder / f"{i}.txt").stat().st_size for i in range(6)]
    kwargs = {"source": str(folder), "vocab_size": 100, "cache_dir": str(tmp_path / "c"), "val_fraction": 0.2, "test_fraction": 0.2}
    whole = BertPretrainingDataModule(**kwargs).tokenizer.get_vocab()
    sampled = BertPretrainingDataModule(tokenizer_sample_bytes=60, **kwargs).tokenizer.get_vocab()
    assert "document" in whole and "document" in sampled and len(sampled) < len(whole)
