"""tfm.data.sources: the one way every DataModule reads Hugging Face datasets (hub specs and
save_to_disk folders), through the real ``datasets`` client."""

from __future__ import annotations

import datasets
import pytest

from tfm.data.sources import HubSpec, load_splits, require_columns
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
