"""Token classification data and entity metrics: Brown -> universal tags, sub-token label
alignment, CoNLL / CoNLL-U / Hugging Face readers, the generated Brown NER set, the DataModule,
entity F1 (function and torchmetrics Metric)."""

from __future__ import annotations

import random
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch

from tfm.data.synthetic.brown_ner import brown_ner_documents, sample_ner_split
from tfm.data.tagging import (
    NER_TAGS,
    UNIVERSAL_TAGS,
    TokenClassificationDataModule,
    brown_to_universal,
    continuation_ids,
    detect_scheme,
    encode_tagged,
    label_set,
    read_conll,
    read_conllu,
)
from tfm.data.text import BROWN, brown_tagged_sentences
from tfm.data.tokenizers import SPECIAL_TOKENS, bert_tokenizer
from tfm.errors import UserError
from tfm.metrics import EntityF1, entity_f1, get_entities


# --- Brown -> universal -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tag, universal",
    [
        ("nn", "NOUN"), ("vbd", "VERB"), ("at", "DET"), ("in", "ADP"), ("cc", "CONJ"), ("cd", "NUM"), (".", "."),
        ("np-tl", "NOUN"), ("fw-nn", "X"), ("to", "PRT"), ("rb", "ADV"), ("jj", "ADJ"), ("pps", "PRON"),
        ("nn-tl-hl", "NOUN"), ("np$", "NOUN"), ("nns$-tl", "NOUN"), ("bez*", "VERB"), ("md*-hl", "VERB"),
        ("*", "ADV"), ("pp$", "DET"), ("pp$$", "PRON"), ("cs", "ADP"), ("ap", "ADJ"), ("od", "ADJ"), ("ex", "PRT"),
        ("abn", "PRT"), ("abx", "DET"), ("uh", "PRT"), ("ql", "ADV"), ("wdt", "DET"), ("wps", "PRON"), ("nr", "NOUN"),
        ("pps+bez", "PRT"), ("ppss+md", "PRT"), ("vb+ppo", "VERB"), ("fw-in+nn-tl", "X"), ("nil", "X"),
        ("``", "."), ("''", "."), ("--", "."), ("---hl", "."), (",-hl", "."), ("(", "."), ("NP-TL", "NOUN"),
    ],
)
def test_brown_to_universal(tag, universal):
    assert brown_to_universal(tag) == universal


def test_brown_universal_counts_match_nltk():
    """The per-tag counts of NLTK's ``brown.tagged_words(tagset='universal')`` on the whole corpus."""
    nltk = {"NOUN": 275558, "VERB": 182750, ".": 147565, "ADP": 144766, "DET": 137019, "ADJ": 83721,
            "ADV": 56239, "PRON": 49334, "CONJ": 38151, "PRT": 29829, "NUM": 14874, "X": 1386}
    ours = Counter(brown_to_universal(t) for s in brown_tagged_sentences() for _, t in s)
    assert set(ours) == set(UNIVERSAL_TAGS)
    assert sum(ours.values()) == sum(nltk.values())
    assert max(abs(ours[k] - nltk[k]) for k in nltk) <= 10, ours
    assert sum(abs(ours[k] - nltk[k]) for k in nltk) <= 40


# --- sub-token alignment ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_tok():
    vocab = [*SPECIAL_TOKENS, "the", "un", "##believ", "##able", "dog", "runs", "."]
    return bert_tokenizer({t: i for i, t in enumerate(vocab)})


LABELS = ["O", "B-MISC", "I-MISC"]


def test_labels_on_first_subtoken_only(tiny_tok):
    words = ["the", "unbelievable", "dog"]
    assert tiny_tok.encode(words, is_pretokenized=True).tokens == ["[CLS]", "the", "un", "##believ", "##able", "dog", "[SEP]"]
    data, stats = encode_tagged(tiny_tok, [words], [[0, 1, 0]], max_seq_length=16)
    item = data[0]
    assert item["input_ids"].tolist() == [2, 5, 6, 7, 8, 9, 3]
    assert item["labels"].tolist() == [-100, 0, 1, -100, -100, 0, -100]
    assert stats.truncated_words == 0 and stats.empty_words == 0


def test_label_all_subtokens_b_becomes_i(tiny_tok):
    cont = continuation_ids(LABELS)
    assert cont == [0, 2, 2]
    data, _ = encode_tagged(tiny_tok, [["the", "unbelievable", "dog"]], [[0, 1, 0]], max_seq_length=16, continuation=cont)
    assert data[0]["labels"].tolist() == [-100, 0, 1, 2, 2, 0, -100]
    plain = continuation_ids(["NOUN", "VERB"])
    data, _ = encode_tagged(tiny_tok, [["unbelievable"]], [[1]], continuation=plain)
    assert data[0]["labels"].tolist() == [-100, 1, 1, 1, -100]


def test_truncation_counts_cut_words_and_empty_word_gets_unk(tiny_tok):
    data, stats = encode_tagged(tiny_tok, [["the", "unbelievable", "dog", "runs"]], [[0, 1, 0, 0]], max_seq_length=5)
    assert data[0]["input_ids"].tolist() == [2, 5, 6, 7, 3]  # [CLS] the un ##believ [SEP]
    assert data[0]["labels"].tolist() == [-100, 0, 1, -100, -100]
    assert (stats.truncated_sentences, stats.truncated_words) == (1, 2)  # dog, runs
    data, stats = encode_tagged(tiny_tok, [["the", "\x07", "dog"]], [[0, 1, 0]])
    assert data[0]["input_ids"].tolist() == [2, 5, 1, 9, 3]  # the [UNK] dog: the word keeps a scored position
    assert data[0]["labels"].tolist() == [-100, 0, 1, 0, -100]
    assert stats.empty_words == 1


def test_label_set_and_scheme():
    assert label_set(["O", "B-PER", "I-LOC", "B-LOC"]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert detect_scheme(["O", "B-PER"]) == "bio" and detect_scheme(["NOUN", "VERB"]) == "plain"
    assert detect_scheme(["O"]) == "plain"
    assert label_set(["VERB", "NOUN"]) == ["NOUN", "VERB"]


# --- readers -----------------------------------------------------------------------------------------
CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def test_read_conll(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text(CONLL)
    split = read_conll(f)
    assert [w for w, _ in split.sentences] == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert [t for _, t in split.sentences] == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert split.lines[1] == [9, 10] and split.where(1, 1) == f"{f}:10"
    assert [t for _, t in read_conll(f, tag_column=1).sentences][1] == ["NNP", "NNP"]


def test_read_conll_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("EU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(UserError, match=rf"{bad}:2: 3 columns where line 1 has 4"):
        read_conll(bad)
    with pytest.raises(UserError, match="does not exist"):
        read_conll(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("-DOCSTART- -X- -X- O\n\n\n")
    with pytest.raises(UserError, match="holds no sentences"):
        read_conll(empty)


CONLLU = """# sent_id = 1
# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t3:conj\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# sent_id = 2
1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_read_conllu(tmp_path):
    f = tmp_path / "train.conllu"
    f.write_text(CONLLU)
    split = read_conllu(f)
    assert split.sentences == [(["Do", "n't", "go", "."], ["AUX", "PART", "VERB", "PUNCT"]), (["Yes"], ["INTJ"])]
    assert split.lines[0] == [4, 5, 6, 8]
    assert read_conllu(f, "xpos").sentences[0][1] == ["VBP", "RB", "VB", "."]
    assert read_conllu(f, 2).sentences[1][1] == ["yes"]
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tDo\tdo\tAUX\n")
    with pytest.raises(UserError, match=rf"{bad}:1: 4 tab-separated columns"):
        read_conllu(bad)
    with pytest.raises(UserError, match="not a CoNLL-U column"):
        read_conllu(f, "pos")


# --- the generated NER set ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def brown_news(tmp_path_factory):
    """The first 44 Brown documents (press reportage) as a folder."""
    folder = tmp_path_factory.mktemp("brown")
    with tarfile.open(BROWN) as tar:
        for m in tar:
            name = m.name.rsplit("/", 1)[-1]
            if m.isfile() and name[:2] == "ca":
                (folder / name).write_bytes(tar.extractfile(m).read())
    return folder


def _valid_bio(tags: list[str]) -> bool:
    prev = "O"
    for t in tags:
        if t.startswith("I-") and prev[2:] != t[2:]:
            return False
        prev = t
    return True


def test_ner_brown_deterministic_and_valid_bio(brown_news):
    docs = brown_ner_documents(brown_news)
    assert docs == brown_ner_documents(brown_news)
    sentences = [s for d in docs for s in d]
    assert len(docs) == 44 and len(sentences) > 2000
    assert all(len(w) == len(t) and _valid_bio(t) for w, t in sentences)
    types = Counter(t[2:] for _, tags in sentences for t in tags if t.startswith("B-"))
    assert set(types) == {"PER", "LOC", "ORG", "MISC"} and min(types.values()) > 50
    assert {t for _, tags in sentences for t in tags} <= set(NER_TAGS)
    first = dict(zip(*sentences[0]))  # The Fulton County Grand Jury said Friday an investigation of Atlanta's ...
    assert (first["Fulton"], first["Jury"], first["Atlanta's"], first["Friday"]) == ("B-ORG", "I-ORG", "B-LOC", "O")
    tagged = {" ".join(w): t for w, t in sentences}
    gov = next(t for s, t in tagged.items() if s.startswith("-- Committee approval of Gov. Price Daniel's"))
    assert gov[4:7] == ["O", "B-PER", "I-PER"]  # Gov. Price Daniel's
    a = sample_ner_split(sentences, seed=1)
    assert a == sample_ner_split(sentences, seed=1) and a != sample_ner_split(sentences, seed=2)
    negatives = sum(all(t == "O" for t in tags) for _, tags in a)
    assert 0.15 < negatives / len(a) < 0.35


# --- entity F1 ---------------------------------------------------------------------------------------
SEQEVAL_TRUE = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
SEQEVAL_PRED = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]


def test_entity_f1_seqeval_readme_example():
    assert entity_f1(SEQEVAL_TRUE, SEQEVAL_PRED) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_entity_f1_hand_checked():
    assert get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert get_entities(["I-PER", "I-PER", "I-LOC", "O"]) == [("PER", 0, 1), ("LOC", 2, 2)]  # I- without B- starts one
    assert get_entities(["B-PER", "B-PER"]) == [("PER", 0, 0), ("PER", 1, 1)]
    # true: PER(0,1) LOC(3,3) ORG(5,5); predicted: PER(0,1) LOC(3,4) ORG(5,5) MISC(6,6) -> 2 of 4 right, 2 of 3 found
    true = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "O"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-ORG", "B-MISC"]]
    scores = entity_f1(true, pred)
    assert scores["precision"] == pytest.approx(0.5) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert entity_f1([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="sequence 0"):
        entity_f1([["O", "O"]], [["O"]])


def _random_batches(names, seed=0, batches=4):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        labels = torch.randint(len(names), (3, 12), generator=g)
        preds = torch.where(torch.rand(3, 12, generator=g) < 0.7, labels, torch.randint(len(names), (3, 12), generator=g))
        labels[torch.rand(3, 12, generator=g) < 0.3] = -100
        labels[:, 0] = -100
        out.append((preds, labels))
    return out


def _word_sequences(batches, names):
    true, pred = [], []
    for preds, labels in batches:
        for p, t in zip(preds, labels):
            keep = t != -100
            true.append([names[i] for i in t[keep].tolist()])
            pred.append([names[i] for i in p[keep].tolist()])
    return true, pred


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_entity_f1_metric_matches_function():
    names = list(NER_TAGS)
    batches = _random_batches(names)
    metric = EntityF1(names)
    for preds, labels in batches:
        metric.update(preds, labels)
    got = {k: float(v) for k, v in metric.compute().items()}
    want = entity_f1(*_word_sequences(batches, names))
    assert got == pytest.approx(want) and 0 < want["f1"] < 1
    # logits work as predictions; states are lists of tensors concatenated over ranks
    logits = torch.nn.functional.one_hot(batches[0][0], len(names)).float()
    one = EntityF1(names)
    one.update(logits, batches[0][1])
    assert {k: float(v) for k, v in one.compute().items()} == pytest.approx(entity_f1(*_word_sequences(batches[:1], names)))
    assert all(metric._reductions[s] is not None for s in ("pred_ids", "true_ids", "lengths"))
    # two "ranks" merged give the score of all their sentences
    a, b = EntityF1(names), EntityF1(names)
    for i, (preds, labels) in enumerate(batches):
        (a if i % 2 else b).update(preds, labels)
    b.merge_state(a)
    merged = {k: float(v) for k, v in b.compute().items()}
    order = batches[0::2] + batches[1::2]
    assert merged == pytest.approx(entity_f1(*_word_sequences(order, names)))
    assert {k: float(v) for k, v in EntityF1(names).compute().items()} == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_entity_f1_agrees_with_seqeval():
    seqeval = pytest.importorskip("seqeval.metrics")
    assert entity_f1(SEQEVAL_TRUE, SEQEVAL_PRED)["f1"] == pytest.approx(seqeval.f1_score(SEQEVAL_TRUE, SEQEVAL_PRED))
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    for _ in range(30):
        true = [[rng.choice(tags) for _ in range(rng.randint(1, 9))] for _ in range(5)]
        pred = [[t if rng.random() < 0.6 else rng.choice(tags) for t in s] for s in true]
        ours = entity_f1(true, pred)
        assert ours["precision"] == pytest.approx(seqeval.precision_score(true, pred, zero_division=0))
        assert ours["recall"] == pytest.approx(seqeval.recall_score(true, pred, zero_division=0))
        assert ours["f1"] == pytest.approx(seqeval.f1_score(true, pred, zero_division=0))


# --- the DataModule ----------------------------------------------------------------------------------
def test_brown_pos_datamodule_batch(tmp_path):
    dm = TokenClassificationDataModule(source="brown_pos", vocab_size=1000, max_sentences=300, batch_size=8, cache_dir=str(tmp_path))
    assert dm.label_names == list(UNIVERSAL_TAGS) and dm.num_labels == 12 and dm.tag_scheme == "plain"
    assert dm.pad_token_id == 0 and dm.tokenizer_vocab_size <= 1000
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    b, t = batch["input_ids"].shape
    assert b == 8 and t % 8 == 0 and t <= dm.max_seq_length
    for v in batch.values():
        assert v.shape == (b, t) and v.dtype == torch.long
    assert (batch["labels"][:, 0] == -100).all() and (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert (batch["token_type_ids"] == 0).all()
    # the scored positions are the words: as many as the sentence has, labels matching its tags
    val = dm.splits["validation"].sentences
    first = next(iter(dm.val_dataloader()))
    for row in range(4):
        scored = first["labels"][row][first["labels"][row] != -100]
        assert [dm.label_names[i] for i in scored.tolist()] == val[row][1]
    path = dm.save_tokenizer(tmp_path / "run")
    assert path.name == "tokenizer.json" and (tmp_path / "run" / "vocab.txt").is_file()
    again = TokenClassificationDataModule(source="brown_pos", tokenizer=str(path), max_sentences=300)
    assert again.tokenizer_vocab_size == dm.tokenizer_vocab_size


def test_ner_brown_datamodule_split_is_seeded(tmp_path):
    kw = {"source": "ner_brown", "vocab_size": 1000, "cache_dir": str(tmp_path)}
    a = TokenClassificationDataModule(**kw)
    assert a.label_names == list(NER_TAGS) and a.tag_scheme == "bio"
    b = TokenClassificationDataModule(**kw)
    c = TokenClassificationDataModule(split_seed=1, **kw)
    assert a.splits["validation"].sentences == b.splits["validation"].sentences
    assert a.splits["validation"].sentences != c.splits["validation"].sentences
    assert all(_valid_bio(t) for _, t in a.splits["train"].sentences[:2000])


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_conll_datamodule_and_unknown_validation_tag(tmp_path):
    train = _write(tmp_path / "train.txt", CONLL)
    val = _write(tmp_path / "val.txt", "Peter NNP B-NP B-PER\nParis NNP B-NP I-LOC\n")
    dm = TokenClassificationDataModule(source="conll", train_file=train, validation_file=val, vocab_size=100, batch_size=2, cache_dir=str(tmp_path))
    assert dm.label_names == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert dm.tag_scheme == "bio" and dm.num_labels == 9
    dm.setup("fit")
    assert len(next(iter(dm.val_dataloader()))["labels"]) == 1
    with pytest.raises(UserError, match="there is no test data"):
        _ = dm.test_set
    bad = _write(tmp_path / "bad.txt", "Peter NNP B-NP B-PER\nthe DT B-NP B-DATE\n")
    dm = TokenClassificationDataModule(source="conll", train_file=train, validation_file=bad, cache_dir=str(tmp_path))
    with pytest.raises(UserError, match=rf"{bad}:2: tag 'B-DATE' of the validation data is not among the training tags"):
        _ = dm.label_names


def test_conllu_datamodule(tmp_path):
    train = _write(tmp_path / "train.conllu", CONLLU)
    dm = TokenClassificationDataModule(source="conllu", train_file=train, validation_file=train, test_file=train, vocab_size=100, cache_dir=str(tmp_path))
    assert dm.label_names == ["AUX", "INTJ", "PART", "PUNCT", "VERB"] and dm.tag_scheme == "plain"
    dm.setup("test")
    assert len(dm.test_set) == 2


def test_hf_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")), "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    rows = {"tokens": [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]], "ner_tags": [[3, 0, 7, 0], [1, 2]]}
    ds = datasets.DatasetDict({s: datasets.Dataset.from_dict(rows, features=features) for s in ("train", "validation", "test")})
    ds.save_to_disk(str(tmp_path / "conll2003"))
    dm = TokenClassificationDataModule(source=f"hf:{tmp_path / 'conll2003'}", vocab_size=100, batch_size=2, cache_dir=str(tmp_path))
    assert dm.label_names == names and dm.tag_scheme == "bio"
    assert dm.splits["train"].sentences[1] == (["Peter", "Blackburn"], ["B-PER", "I-PER"])
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["labels"][0][batch["labels"][0] != -100].tolist() == [3, 0, 7, 0]
    with pytest.raises(UserError, match="could not load the Hugging Face dataset"):
        _ = TokenClassificationDataModule(source=f"hf:{tmp_path / 'nothing'}").label_names


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="unknown"):
        TokenClassificationDataModule(source="brown")
    with pytest.raises(UserError, match="needs --data.validation_file"):
        TokenClassificationDataModule(source="conll", train_file=_write(tmp_path / "t.txt", CONLL))
    with pytest.raises(UserError, match="--data.train_file .* does not exist"):
        TokenClassificationDataModule(source="conll", train_file=str(tmp_path / "no.txt"), validation_file=str(tmp_path / "no.txt"))
    with pytest.raises(UserError, match="read only with --data.source conll or conllu"):
        TokenClassificationDataModule(source="brown_pos", train_file=_write(tmp_path / "t.txt", CONLL))
    with pytest.raises(UserError, match="max_seq_length"):
        TokenClassificationDataModule(max_seq_length=2)
    empty = _write(tmp_path / "e.txt", "\n\n")
    dm = TokenClassificationDataModule(source="conll", train_file=empty, validation_file=empty)
    with pytest.raises(UserError, match="holds no sentences"):
        _ = dm.num_labels


def test_arrays_are_compact(tiny_tok):
    data, _ = encode_tagged(tiny_tok, [["the", "dog"], ["runs", "."]], [[0, 0], [1, 0]])
    assert data.ids.dtype == np.int32 and data.labels.dtype == np.int16 and len(data) == 2
