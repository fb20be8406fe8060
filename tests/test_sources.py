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
