"""Text classification data: the bundled fortunes, CSV/TSV/JSON/JSONL files with text pairs,
multi-label and regression labels, Hugging Face datasets (saved to disk), predict files, and one
clear error for each kind of bad input."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tfm.data.classification import (
    SPLITS,
    TextClassificationDataModule,
    clean_fortune,
    infer_problem_type,
    read_fortunes,
    split_fortunes,
    stratified_split,
)
from tfm.data.tokenizers import special_ids
from tfm.errors import UserError

FORTUNE_COUNTS = {
    "art": 465, "computers": 1051, "education": 203, "food": 198, "kids": 150, "law": 206, "linux": 336,
    "literature": 262, "love": 150, "medicine": 74, "people": 1251, "politics": 703, "science": 625, "wisdom": 425,
}
WORDS = [
    "the", "cat", "dog", "sat", "ran", "on", "a", "mat", "log", "red", "blue",
    "big", "small", "fast", "slow", "happy", "sad", "day", "night", "sun", "moon",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def fortunes_dm(cache) -> TextClassificationDataModule:
    dm = TextClassificationDataModule(batch_size=16, cache_dir=cache)
    dm.setup("fit")
    return dm


def sentence(i: int, n: int = 6) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n))


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- fortunes -------------------------------------------------------------------------------------
def test_fortunes_reader_counts_per_topic():
    topics = read_fortunes()
    assert {t: len(v) for t, v in topics.items()} == FORTUNE_COUNTS
    # 6,095 '%' lines: four files (computers, law, people, wisdom) end with an entry and no '%'
    assert sum(FORTUNE_COUNTS.values()) == 6099
    texts = [t for v in topics.values() for t in v]
    assert all(t and t == t.strip() and "\x08" not in t for t in texts)
    assert topics["people"][-1].startswith("I'm the only person I know that's lost a quarter of a billion")
    assert not any(line == "%" for t in texts for line in t.splitlines())


def test_fortune_parsing_details():
    assert clean_fortune("whiter teeth *___\b\b\band* fresher") == "whiter teeth *and* fresher"
    assert clean_fortune("\t  A joke.\n\t\t-- Someone\n\n") == "A joke.\n\t\t-- Someone"
    assert split_fortunes("one\n%\ntwo\n%DCL-MEM-BAD is text\n%\n\n%\nthree") == ["one", "two\n%DCL-MEM-BAD is text", "three"]


def test_fortunes_split_deterministic_and_stratified(fortunes_dm, cache):
    topics = read_fortunes()
    keys = [t for t, v in topics.items() for _ in v]
    a = stratified_split(keys, len(keys), 0.1, 0.1, seed=0)
    assert a == stratified_split(keys, len(keys), 0.1, 0.1, seed=0)
    assert a != stratified_split(keys, len(keys), 0.1, 0.1, seed=1)
    assert sorted(a["train"] + a["validation"] + a["test"]) == list(range(len(keys)))
    assert len({keys[i] for i in a["validation"][:32]}) >= 6  # in random order: a first batch mixes topics
    for split in ("validation", "test"):
        counts = Counter(keys[i] for i in a[split])
        assert sum(counts.values()) == 610 and all(abs(counts[t] - n * 0.1) < 1 for t, n in FORTUNE_COUNTS.items())
    tiny = stratified_split(["a", "a", "b", "b", "b"], 5, 0.1, 0.1, seed=0)
    assert [len(tiny[s]) for s in SPLITS] == [3, 1, 1] and {"a", "b"} <= {["a", "a", "b", "b", "b"][i] for i in tiny["train"]}
    # the DataModule's splits are those, with labels in sorted topic order
    dm = fortunes_dm
    assert dm.label_names == sorted(FORTUNE_COUNTS) and dm.num_labels == 14 and dm.problem_type == "single_label"
    assert {s: len(dm.raw_splits[s]) for s in SPLITS} == {s: len(a[s]) for s in SPLITS} == {"train": 4879, "validation": 610, "test": 610}
    assert np.bincount(dm.train_set.labels, minlength=14).tolist() == [Counter(keys[i] for i in a["train"])[t] for t in dm.label_names]
    other = TextClassificationDataModule(cache_dir=cache, split_seed=0)
    assert other.raw_splits["validation"].texts == dm.raw_splits["validation"].texts


def test_fortunes_batch_shapes_and_dtypes(fortunes_dm):
    dm = fortunes_dm
    assert dm.tokenizer_vocab_size == dm.tokenizer.get_vocab_size() > 1000 and dm.pad_token_id == 0 and dm.max_seq_length == 128
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    b, t = batch["input_ids"].shape
    assert b == 16 and t % 8 == 0 and t <= 128
    for k in ("input_ids", "token_type_ids", "attention_mask"):
        assert batch[k].shape == (16, t) and batch[k].dtype == torch.long
    assert batch["labels"].shape == (16,) and batch["labels"].dtype == torch.long and 0 <= batch["labels"].min() and batch["labels"].max() < 14
    ids = special_ids(dm.tokenizer)
    lengths = batch["attention_mask"].sum(1)
    assert (batch["input_ids"][:, 0] == ids["[CLS]"]).all()
    assert (batch["input_ids"][torch.arange(16), lengths - 1] == ids["[SEP]"]).all()
    assert torch.equal(batch["attention_mask"].bool(), batch["input_ids"] != dm.pad_token_id)
    assert (batch["token_type_ids"] == 0).all()
    val = next(iter(dm.val_dataloader()))
    assert val["labels"].tolist() == dm.val_set.labels[:16].tolist()  # evaluation is in order
    assert dm.train_set.lengths().max() == 128  # long fortunes are truncated


def test_tokenizer_saved_and_reloaded(fortunes_dm, tmp_path, cache):
    path = fortunes_dm.save_tokenizer(tmp_path / "run")
    assert path.name == "tokenizer.json" and (tmp_path / "run" / "vocab.txt").is_file()
    dm = TextClassificationDataModule(tokenizer=str(tmp_path / "run"), cache_dir=cache, max_seq_length=32)
    dm.setup("test")
    assert dm.tokenizer.get_vocab() == fortunes_dm.tokenizer.get_vocab()
    assert dm.test_set.lengths().max() <= 32


# --- files: pairs, multi-label, regression -----------------------------------------------------------
def test_csv_and_jsonl_pairs_give_token_type_ids(tmp_path, cache):
    rows = [{"premise": sentence(i), "hypothesis": sentence(i + 3, 3 + i % 4), "label": ["yes", "no", "maybe"][i % 3]} for i in range(30)]
    train = write_csv(tmp_path / "train.csv", rows[:24])
    val = write_jsonl(tmp_path / "val.jsonl", rows[24:])
    dm = TextClassificationDataModule(
        train_file=str(train), validation_file=str(val), text_column="premise", text_pair_column="hypothesis",
        vocab_size=200, cache_dir=cache, batch_size=4, pad_to_multiple_of=None,
    )
    assert dm.label_names == ["maybe", "no", "yes"] and dm.problem_type == "single_label"
    assert dm.raw_splits["test"] is dm.raw_splits["validation"]  # no test file: test on validation
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    tok, sep = dm.tokenizer, special_ids(dm.tokenizer)["[SEP]"]
    for row in range(4):
        n = int(batch["attention_mask"][row].sum())
        ids, types = batch["input_ids"][row, :n].tolist(), batch["token_type_ids"][row, :n].tolist()
        first_sep = ids.index(sep)
        assert types == [0] * (first_sep + 1) + [1] * (n - first_sep - 1)
        pair = tok.encode(rows[24 + row]["hypothesis"], add_special_tokens=False).ids
        assert ids[first_sep + 1 :] == [*pair, sep]
    assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())  # padded to the longest
    assert batch["labels"].tolist() == [dm.label_names.index(r["label"]) for r in rows[24:28]]


def test_pairs_truncate_longest_first(tmp_path, cache):
    rows = [{"a": sentence(i, 40), "b": sentence(i, 4), "label": i % 2} for i in range(10)]
    dm = TextClassificationDataModule(source=str(write_jsonl(tmp_path / "d.jsonl", rows)), text_column="a", text_pair_column="b",
                                      max_seq_length=16, vocab_size=200, cache_dir=cache)
    assert dm.label_names == ["0", "1"]
    dm.setup("fit")
    ds = dm.train_set
    assert (ds.lengths() == 16).all()
    item = ds[0]
    assert int((item["token_type_ids"] == 1).sum()) == 5  # the short second text kept whole (4 words + [SEP])


def test_multi_label_multi_hot(tmp_path, cache):
    rows = [{"text": sentence(i), "tags": [["sports"], ["news", "sports"], [], ["arts", "news"]][i % 4]} for i in range(20)]
    dm = TextClassificationDataModule(source=str(write_jsonl(tmp_path / "tags.jsonl", rows)), label_column="tags", vocab_size=200, cache_dir=cache, batch_size=4)
    assert dm.problem_type == "multi_label" and dm.label_names == ["arts", "news", "sports"] and dm.num_labels == 3
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (4, 3)
    raw = dm.raw_splits["train"]
    expected = [[float(n in raw.labels[i]) for n in dm.label_names] for i in range(len(raw))]
    assert dm.train_set.labels.tolist() == expected
    # a CSV of ';'-joined names is the same problem
    csv_rows = [{"text": r["text"], "label": ";".join(r["tags"])} for r in rows]  # "": no label applies
    dm2 = TextClassificationDataModule(source=str(write_csv(tmp_path / "tags.csv", csv_rows)), vocab_size=200, cache_dir=cache)
    assert dm2.problem_type == "multi_label" and dm2.label_names == ["arts", "news", "sports"]
    assert dm2._labels["train"].sum(1).tolist() == [len([n for n in v.split(";") if n]) for v in dm2.raw_splits["train"].labels]


def test_regression_floats(tmp_path, cache):
    rows = [{"text": sentence(i), "score": round(i / 7, 3)} for i in range(20)]
    dm = TextClassificationDataModule(source=str(write_jsonl(tmp_path / "s.jsonl", rows)), label_column="score", vocab_size=200, cache_dir=cache, batch_size=4)
    assert (dm.problem_type, dm.num_labels, dm.label_names) == ("regression", 1, ["score"])
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (2,)
    assert batch["labels"].tolist() == pytest.approx([float(v) for v in dm.raw_splits["validation"].labels])
    assert infer_problem_type(["0.5", "1", "2.25"]) == "regression"
    assert infer_problem_type(["1", "2", "10"]) == "single_label"
    assert infer_problem_type([0, 1, 1]) == "single_label"
    assert infer_problem_type(["a;b", "c"]) == "multi_label"


def test_integer_labels_sorted_numerically_and_tsv_folder(tmp_path, cache):
    rows = [{"sentence": sentence(i), "label": str([2, 10, 1][i % 3])} for i in range(30)]
    write_csv(tmp_path / "train.tsv", rows[:21], delimiter="\t")
    write_csv(tmp_path / "dev.tsv", rows[21:], delimiter="\t")
    dm = TextClassificationDataModule(source=str(tmp_path), text_column="sentence", vocab_size=200, cache_dir=cache)
    assert dm.label_names == ["1", "2", "10"]
    assert len(dm.raw_splits["train"]) == 21 and len(dm.raw_splits["validation"]) == 9


# --- Hugging Face datasets (a saved DatasetDict; hf:<name> runs the same code) ------------------------
@pytest.fixture(scope="module")
def glue_like(tmp_path_factory):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"]), "idx": datasets.Value("int32")})

    def split(n: int, offset: int, hidden: bool = False) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"sentence": [sentence(i + offset) for i in range(n)], "label": [-1 if hidden else (i + offset) % 2 for i in range(n)], "idx": list(range(n))},
            features=features,
        )

    ds = datasets.DatasetDict({"train": split(24, 0), "validation": split(8, 100), "test": split(6, 200, hidden=True)})
    path = tmp_path_factory.mktemp("glue") / "sst2"
    ds.save_to_disk(str(path))
    return ds, path


def test_hf_dataset_on_disk(glue_like, cache):
    _, path = glue_like
    dm = TextClassificationDataModule(source=str(path), text_column="sentence", vocab_size=200, cache_dir=cache)
    assert dm.label_names == ["negative", "positive"] and dm.problem_type == "single_label"
    raw = dm.raw_splits
    assert len(raw["train"]) == 24 and raw["test"] is raw["validation"]  # hidden test labels: test on validation
    dm.setup("test")
    assert dm.test_set.labels.tolist() == [(i + 100) % 2 for i in range(8)]
    dm.setup("predict")  # predict: the hidden-label test split
    assert dm.predict_texts == [sentence(i + 200) for i in range(6)] and dm.predict_ids == [str(i) for i in range(6)]


def test_hf_name_loads_with_load_dataset(glue_like, cache, monkeypatch):
    import datasets

    ds, _ = glue_like
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None: calls.append((name, config)) or ds)
    dm = TextClassificationDataModule(source="hf:glue:sst2", text_column="sentence", vocab_size=200, cache_dir=cache)
    assert dm.num_labels == 2 and calls == [("glue", "sst2")]


def test_hf_multi_label_and_regression_features(tmp_path, cache):
    import datasets

    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.Sequence(datasets.ClassLabel(names=["b", "a", "c"]))})
    ds = datasets.Dataset.from_dict({"text": [sentence(i) for i in range(20)], "label": [[i % 3] if i % 2 else [0, 2] for i in range(20)]}, features=feats)
    ds.save_to_disk(str(tmp_path / "ml"))
    dm = TextClassificationDataModule(source=str(tmp_path / "ml"), vocab_size=200, cache_dir=cache)
    assert dm.problem_type == "multi_label" and dm.label_names == ["b", "a", "c"]  # the ClassLabel's order
    reg = datasets.Dataset.from_dict({"text": [sentence(i) for i in range(20)], "label": [i / 3 for i in range(20)]},
                                     features=datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("float32")}))
    reg.save_to_disk(str(tmp_path / "reg"))
    assert TextClassificationDataModule(source=str(tmp_path / "reg"), vocab_size=200, cache_dir=cache).problem_type == "regression"


# --- predict --------------------------------------------------------------------------------------
def test_predict_file_and_texts(fortunes_dm, tmp_path, cache):
    (tmp_path / "p.txt").write_text("A cat sat on the mat.\n\nComputers are fast.\nLove is blind.\n")
    dm = TextClassificationDataModule(predict_file=str(tmp_path / "p.txt"), cache_dir=cache, batch_size=2)
    dm.setup("predict")
    assert dm.predict_texts == ["A cat sat on the mat.", "Computers are fast.", "Love is blind."]
    assert dm.predict_ids == ["1", "3", "4"]
    batches = list(dm.predict_dataloader())
    assert [len(b["input_ids"]) for b in batches] == [2, 1] and all("labels" not in b for b in batches)
    assert batches[0]["input_ids"].dtype == torch.long
    # default: the test split, its texts by index
    fortunes_dm.setup("predict")
    assert fortunes_dm.predict_texts == fortunes_dm.raw_splits["test"].texts and len(fortunes_dm.predict_set) == 610
    # a JSONL predict file with an id column
    write_jsonl(tmp_path / "p.jsonl", [{"id": "x1", "text": "hello there"}, {"id": "x2", "text": "good bye"}])
    dm2 = TextClassificationDataModule(predict_file=str(tmp_path / "p.jsonl"), cache_dir=cache)
    assert dm2.predict_ids == ["x1", "x2"] and dm2.predict_texts == ["hello there", "good bye"]


# --- bad input: one clear line each -------------------------------------------------------------------
def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_empty_text_names_file_and_row(tmp_path, cache):
    rows = [{"text": sentence(i), "label": "a" if i % 2 else "b"} for i in range(6)]
    rows[3]["text"] = "  "
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(UserError) as e:
        _ = TextClassificationDataModule(train_file=str(path), cache_dir=cache).num_labels
    msg = one_line(e)
    assert str(path) in msg and "row 4" in msg and "'text'" in msg


def test_missing_column_lists_columns(tmp_path, cache):
    path = write_csv(tmp_path / "d.csv", [{"sentence": "x y", "label": "a"}, {"sentence": "y z", "label": "b"}])
    with pytest.raises(UserError) as e:
        _ = TextClassificationDataModule(source=str(path), cache_dir=cache).num_labels
    msg = one_line(e)
    assert "no column 'text'" in msg and "sentence, label" in msg and "--data.text_column" in msg


def test_unseen_validation_label(tmp_path, cache):
    train = write_csv(tmp_path / "t.csv", [{"text": sentence(i), "label": "ab"[i % 2]} for i in range(6)])
    val = write_csv(tmp_path / "v.csv", [{"text": "x", "label": "a"}, {"text": "y", "label": "zebra"}])
    with pytest.raises(UserError) as e:
        _ = TextClassificationDataModule(train_file=str(train), validation_file=str(val), cache_dir=cache).label_names
    msg = one_line(e)
    assert "'zebra'" in msg and "validation split" in msg and str(val) in msg and "row 2" in msg


@pytest.mark.parametrize("option", ["train_file", "source", "predict_file", "tokenizer"])
def test_missing_file(option, tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(UserError) as e:
        TextClassificationDataModule(**{option: missing})
    assert missing in one_line(e)


def test_other_bad_settings(tmp_path, cache):
    with pytest.raises(UserError, match="problem_type 'binary'"):
        TextClassificationDataModule(problem_type="binary")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="need --data.train_file"):
        TextClassificationDataModule(validation_file="v.csv")
    one = write_csv(tmp_path / "one.csv", [{"text": sentence(i), "label": "only"} for i in range(5)])
    with pytest.raises(UserError, match="only the label 'only'"):
        _ = TextClassificationDataModule(source=str(one), cache_dir=cache).num_labels
    reg = write_jsonl(tmp_path / "r.jsonl", [{"text": "a b", "label": 0.5}, {"text": "c d", "label": "high"}])
    with pytest.raises(UserError, match="row 2: label 'high' is not a number"):
        _ = TextClassificationDataModule(source=str(reg), problem_type="regression", cache_dir=cache).num_labels


# --- streaming (--data.streaming=true): a saved dataset streams through the same datasets code as the hub --------
@pytest.fixture(scope="module")
def streamed(tmp_path_factory) -> Path:
    """48 training and 16 validation rows, string labels (their names come from the validation split)."""
    import datasets

    def split(n: int, offset: int) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"sentence": [sentence(i + offset) for i in range(n)],
                                           "label": ["ab"[i % 2] for i in range(n)]})

    path = tmp_path_factory.mktemp("streamed") / "data"
    datasets.DatasetDict({"train": split(48, 0), "validation": split(16, 100)}).save_to_disk(str(path))
    return path


def streaming_dm(path: Path, cache: str) -> TextClassificationDataModule:
    return TextClassificationDataModule(source=str(path), text_column="sentence", streaming=True, stream_block_size=16,
                                        batch_size=4, vocab_size=200, cache_dir=cache)


def test_a_stream_is_read_in_seeded_blocks_and_resumes_at_the_batch(streamed, cache):
    dm = streaming_dm(streamed, cache)
    dm.setup("fit")
    assert dm.label_names == ["a", "b"] and len(dm.val_set) == 16
    assert "train" not in dm._encoded and "train" not in dm.raw_splits  # the training split is never read whole
    batches = list(dm.train_dataloader())
    assert len(batches) == 12 and [b["_stream_position"]["block"] for b in batches] == [k // 4 for k in range(12)]
    rows = [(tuple(ids[mask.bool()].tolist()), int(label))
            for b in batches for ids, mask, label in zip(b["input_ids"], b["attention_mask"], b["labels"])]
    expected = [(tuple(e.ids), i % 2) for i, e in enumerate(dm.encoder.encode_batch([sentence(i) for i in range(48)]))]
    assert sorted(rows) == sorted(expected)  # every training row once
    assert rows[:16] != expected[:16] and sorted(rows[:16]) == sorted(expected[:16])  # shuffled within its block
    # resumed after batch k (a position a checkpoint holds): the same batches from k + 1 on
    for k in (0, 5, 10):
        again = streaming_dm(streamed, cache)
        again.setup("fit")
        again.load_state_dict({"stream": [batches[k]["_stream_position"]], "seed": 0})
        rest = list(again.train_dataloader())
        assert len(rest) == 11 - k
        assert all(torch.equal(a[key], b[key]) for a, b in zip(rest, batches[k + 1 :])
                   for key in ("input_ids", "token_type_ids", "attention_mask", "labels"))


@pytest.mark.slow
def test_sigkill_then_resume_of_a_streamed_classifier_is_bitwise_exact(tmp_path, streamed):
    from resume_helper import assert_exact_resume

    args = ["--model.arch=bert_tiny", f"--data.source={streamed}", "--data.text_column=sentence",
            "--data.streaming=true", "--data.stream_block_size=16", "--data.batch_size=8", "--data.vocab_size=200",
            f"--data.cache_dir={tmp_path / 'cache'}", "--trainer.limit_val_batches=1"]
    # 6 batches an epoch: killed in the first, so the resumed run also crosses into the next epoch
    assert assert_exact_resume("configs/bert_mini_topics.yaml", args, tmp_path, steps=10, seed=1) < 6
    (last,) = (tmp_path / "straight").glob("*/*/checkpoints/last.ckpt")
    position = torch.load(last, map_location="cpu", weights_only=True)["TextClassificationDataModule"]["stream"]
    # streamed: step 10 is the 4th batch of epoch 2, the 2nd of its 2nd block (of 16 rows, 2 batches)
    assert (position[0]["epoch"], position[0]["block"], position[0]["done"]) == (1, 1, 2)


def test_streaming_mistakes_are_one_line(tmp_path, cache):
    import datasets

    rows = datasets.Dataset.from_dict({"text": [sentence(i) for i in range(8)], "label": list("abababab")})
    datasets.DatasetDict({"validation": rows}).save_to_disk(str(tmp_path / "val_only"))
    datasets.DatasetDict({"train": rows}).save_to_disk(str(tmp_path / "train_only"))

    def error(**kw) -> str:
        with pytest.raises(UserError) as e:
            TextClassificationDataModule(streaming=True, vocab_size=200, cache_dir=cache, **kw).setup("fit")
        return one_line(e)

    assert error(source=str(tmp_path / "val_only")).endswith("val_only' has no 'train' split (it has validation)")
    assert "needs a validation split" in error(source=f"hf:{tmp_path / 'train_only'}")
    assert error().startswith("--data.streaming reads hf: datasets and save_to_disk folders, not fortunes")
