"""tfm.data.sources: the one way every DataModule reads Hugging Face datasets (hub specs and
save_to_disk folders), through the real ``datasets`` client."""

from __future__ import annotations

import gzip
import json

import datasets
import pytest

from tfm.data.sources import HubSpec, load_splits, read_records, require_columns
from tfm.errors import UserError


def test_hub_specs():
    assert HubSpec.parse("hf:glue:sst2") == HubSpec("glue", "sst2")
    assert HubSpec.parse("hf:wikimedia/wikipedia:20231101.en@a1b2c3") == HubSpec("wikimedia/wikipedia", "20231101.en", "a1b2c3")
    assert HubSpec.parse("hf:squad_v2@main") == HubSpec("squad_v2", None, "main")
    assert str(HubSpec("glue", "sst2", "v1")) == "hf:glue:sst2@v1" and str(HubSpec("squad")) == "hf:squad"
    with pytest.raises(UserError, match=r"--data.source 'hf:' names no dataset: write hf:<name>\[:<config>\]\[@<revision>\], e.g. hf:glue:sst2"):
        HubSpec.parse("hf:")


def test_saved_datasets_get_canonical_splits(tmp_path):
    rows = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    datasets.DatasetDict({"train": rows, "dev": rows, "test_matched": rows, "extra": rows}).save_to_disk(str(tmp_path / "dict"))
    ds = load_splits(str(tmp_path / "dict"))
    assert list(ds) == ["train", "validation", "test", "extra"]
    assert list(load_splits(f"hf:{tmp_path / 'dict'}")) == list(ds)  # hf:<folder> reads the same
    rows.save_to_disk(str(tmp_path / "lone"))
    assert list(load_splits(str(tmp_path / "lone"))) == ["train"] and len(load_splits(str(tmp_path / "lone"), split="train")) == 2
    with pytest.raises(UserError, match="is a single dataset: tfm needs train and validation splits"):
        load_splits(str(tmp_path / "lone"), lone=None)
    with pytest.raises(UserError, match=r"dataset '.*dict' has no 'nope' split \(it has train, validation, test, extra\)"):
        load_splits(str(tmp_path / "dict"), split="nope")
    with pytest.raises(UserError, match=r"dataset 'x' has no column 'sentence' in its train split \(columns: text, label\): set --data.text_column"):
        require_columns(ds["train"].column_names, {"sentence": "text_column"}, "x", " in its train split")


def test_a_hub_dataset_not_in_the_offline_cache_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError) as e:
        load_splits("hf:acme/no-such-dataset:default")
    msg = str(e.value)
    assert msg.startswith("could not load the Hugging Face dataset 'hf:acme/no-such-dataset:default' (offline: HF_HUB_OFFLINE / "
                          "HF_DATASETS_OFFLINE is set, and it is not in the cache): ") and "\n" not in msg


def test_parquet_and_arrow_files_as_text_and_pair_sources(tmp_path):
    """A .parquet or .arrow file is a source of documents (a ``text`` column) and of sentence pairs
    (the language columns); a missing column is one line naming the columns there are."""
    from tfm.data.pretraining import BertPretrainingDataModule
    from tfm.data.text import read_brown
    from tfm.data.translation import TranslationDataModule, read_bible

    docs = datasets.Dataset.from_dict({"text": ["\n".join(d.text()) for d in read_brown()[:30]], "id": list(range(30))})
    docs.to_parquet(str(tmp_path / "docs.parquet"))
    arrow = docs.map(lambda r: r, cache_file_name=str(tmp_path / "docs.arrow"))  # an Arrow file as datasets writes it
    assert arrow.num_rows == 30
    for name in ("docs.parquet", "docs.arrow"):
        dm = BertPretrainingDataModule(source=str(tmp_path / name), vocab_size=500, max_seq_length=32, cache_dir=str(tmp_path / "c"))
        dm.setup("fit")
        assert len(dm.train_set) > 100 and dm.documents().num_rows == 30
    docs.rename_column("text", "body").to_parquet(str(tmp_path / "body.parquet"))
    with pytest.raises(UserError, match=r"body.parquet' has no column 'text' \(columns: body, id\)"):
        BertPretrainingDataModule(source=str(tmp_path / "body.parquet"), cache_dir=str(tmp_path / "c")).tokenizer  # noqa: B018

    verses = read_bible()[:200]
    pairs = datasets.Dataset.from_dict({"en": [v.en for v in verses], "es": [v.es for v in verses]})
    pairs.to_parquet(str(tmp_path / "pairs.parquet"))
    dm = TranslationDataModule(source="tsv", train_file=str(tmp_path / "pairs.parquet"), vocab_size=400, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 200 and dm.raw_splits["train"].where == str(tmp_path / "pairs.parquet")
    pairs.rename_column("es", "fr").to_parquet(str(tmp_path / "fr.parquet"))
    with pytest.raises(UserError, match=r"has no column 'es' \(columns: en, fr\): set --data.target_column"):
        TranslationDataModule(source="tsv", train_file=str(tmp_path / "fr.parquet"), vocab_size=400, cache_dir=str(tmp_path / "c")).setup("fit")


def test_one_reader_of_table_files(tmp_path):
    """CSV, TSV, JSON (a list, an object of columns, JSON lines), JSON lines, Parquet and Arrow, ``.gz`` or not: the
    same records (a CSV or TSV's values as strings), each with its line or row; every mistake one line naming it."""
    rows = [{"en": "Hello.", "es": "Hola.", "n": "1"}, {"en": "Bye, now.", "es": "Adiós.", "n": "2"}]

    def read(name: str, text: str | bytes, columns=None, kind=None) -> list:
        path = tmp_path / name
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode() if isinstance(text, str) else text)
        return list(read_records(path, columns or {"en": "source_column"}, tmp_path / "c", kind))

    tsv = "en\tes\tn\n" + "".join(f"{r['en']}\t{r['es']}\t{r['n']}\n" for r in rows)
    assert read("a.tsv", tsv) == read("a.tsv.gz", tsv) == [("line", 2, rows[0]), ("line", 3, rows[1])]
    assert read("a.txt", tsv.replace("\n", "\n\n"), kind="tsv") == [("line", 3, rows[0]), ("line", 5, rows[1])]
    assert read("a.csv", 'en,es,n\nHello.,Hola.,1\n"Bye, now.",Adiós.,2\n') == [("line", 2, rows[0]), ("line", 3, rows[1])]
    jsonl = "".join(json.dumps(r) + "\n" for r in rows)
    assert read("a.jsonl", jsonl) == read("lines.json", jsonl) == [("line", 1, rows[0]), ("line", 2, rows[1])]
    assert read("list.json", json.dumps(rows)) == read("cols.json", json.dumps({k: [r[k] for r in rows] for k in rows[0]})) == [
        ("row", 1, rows[0]), ("row", 2, rows[1])]
    assert read("one.json", json.dumps({"data": rows})) == [("row", 1, rows[0]), ("row", 2, rows[1])]
    hf = read("hf.jsonl", json.dumps({"id": 0, "translation": {"en": "Hi.", "es": "Hola."}}), {"es": "target_column"})
    assert hf[0][2]["es"] == "Hola."  # Hugging Face's translation format
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "a.parquet"))
    assert list(read_records(tmp_path / "a.parquet", {"en": None}, tmp_path / "c")) == [("row", 1, rows[0]), ("row", 2, rows[1])]

    def error(name: str, text: str | bytes, columns=None) -> str:
        with pytest.raises(UserError) as e:
            read(name, text, columns)
        assert "\n" not in str(e.value)
        return str(e.value)

    where = str(tmp_path)
    assert error("b.tsv", "english\tspanish\nHello.\tHola.\n") == (
        f"dataset '{where}/b.tsv' has no column 'en' (columns: english, spanish): set --data.source_column or write a header row")
    assert error("b.tsv", "en\tes\nHello.\tHola.\tHi.\n") == f"{where}/b.tsv line 2 has 3 tab-separated fields but the header has 2"
    assert error("b.csv", "en\n" + "x" * 200_000).startswith(f"{where}/b.csv is not a valid CSV file: field larger than")
    assert error("b.csv", "en\nHello.,Hola.\n") == f"{where}/b.csv line 2 has 2 fields but the header has 1"
    assert error("b.jsonl", '{"en": "Hello."}\n{"en": \n') == f"{where}/b.jsonl line 2 is not valid JSON: Expecting value"
    assert error("b.jsonl", '{"en": "Hello."}\n["Hi."]\n') == f"{where}/b.jsonl line 2 is not a JSON object: write one object per line"
    assert error("b.json", '["Hello."]').endswith("b.json holds no list of objects: write one object per line (JSON lines) or a list of objects")
    assert "no column 'en' (columns: es, n)" in error("b.jsonl", '{"es": "Hola.", "n": 1}\n')
    assert error("b.tsv", "en\nHell\xf6\n".encode("latin-1")) == f"{where}/b.tsv is not UTF-8 text: save it as UTF-8 (CSV, TSV, JSON or JSON lines)"
