"""Extractive QA data: the generated Brown span-QA set, SQuAD readers, windowed features (against
Hugging Face's fast tokenizer and run_qa.py labels), post-processing across windows, v2 null
threshold, SQuAD v1/v2 metrics and the DataModule's batches."""

from __future__ import annotations

import itertools
import json
import tarfile

import numpy as np
import pytest
import torch

from tfm.data.qa import (
    QuestionAnsweringDataModule,
    postprocess_predictions,
    prepare_features,
    read_squad_file,
    squad_json,
    write_predictions,
)
from tfm.data.synthetic.brown_qa import QAExample, generate_brown_qa
from tfm.data.text import BROWN
from tfm.errors import UserError
from tfm.metrics import SQuADv2, normalize_answer, squad_v1_metrics, squad_v2_metrics


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("qa_cache")


@pytest.fixture(scope="module")
def dm(cache) -> QuestionAnsweringDataModule:
    """The generated set, SQuAD 2.0 style (its answerable questions are the v1 set)."""
    dm = QuestionAnsweringDataModule(version_2_with_negative=True, vocab_size=4000, cache_dir=str(cache), batch_size=8)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def small_brown(tmp_path_factory):
    """A folder with the first 60 Brown documents (fast generation)."""
    root = tmp_path_factory.mktemp("brown60")
    with tarfile.open(BROWN) as tar:
        members = sorted((m for m in tar if m.isfile() and len(m.name.rsplit("/", 1)[-1]) == 4 and m.name.rsplit("/", 1)[-1][:2] == "ca"), key=lambda m: m.name)
        for m in members[:60]:
            (root / m.name.rsplit("/", 1)[-1]).write_bytes(tar.extractfile(m).read())
    return root


def _hand_window(context: str, question: str, tok, **kw):
    ex = QAExample("q", question, context, [], False)
    return prepare_features(tok, [ex], **kw)


# --- the generated set ---------------------------------------------------------------------------
def test_generator_deterministic_for_a_seed(small_brown):
    a = generate_brown_qa(0, True, path=small_brown, eval_documents=5)
    b = generate_brown_qa(0, True, path=small_brown, eval_documents=5)
    c = generate_brown_qa(1, True, path=small_brown, eval_documents=5)
    v1 = generate_brown_qa(0, False, path=small_brown, eval_documents=5)
    assert a == b
    assert a != c
    for split in a:  # the answerable questions do not depend on the negatives
        assert [e for e in a[split] if not e.is_impossible] == v1[split]
        assert not any(e.is_impossible for e in v1[split])
        assert all(e.question.endswith("?") and e.answers for e in v1[split])


def test_generated_set_sizes_splits_and_answers(dm):
    ex = {s: dm.examples(s) for s in ("train", "validation", "test")}
    answerable = {s: sum(not e.is_impossible for e in v) for s, v in ex.items()}
    assert 3000 <= answerable["train"] <= 5000
    assert 200 <= answerable["validation"] <= 600 and 200 <= answerable["test"] <= 600
    titles = {s: {e.title for e in v} for s, v in ex.items()}
    assert not titles["train"] & titles["test"] and not titles["train"] & titles["validation"] and not titles["validation"] & titles["test"]
    for examples in ex.values():
        contexts = {e.context for e in examples}
        assert sum(e.is_impossible for e in examples) == len(contexts)  # one unanswerable question per context
        for e in examples:
            for text, start in e.answers:
                assert e.context[start : start + len(text)] == text
    assert len({e.id for v in ex.values() for e in v}) == sum(len(v) for v in ex.values())
    kinds = {e.question.split()[0].lower() for e in ex["train"]}
    assert {"who", "what"} <= kinds


# --- features -------------------------------------------------------------------------------------
def test_every_train_answer_recoverable_from_offsets(dm):
    feats, examples = dm.features("train"), dm.examples("train")
    labelled = set()
    for i in range(len(feats)):
        ex = examples[feats.example_index[i]]
        s, e = feats.start_positions[i], feats.end_positions[i]
        off = feats.offsets(i)
        assert (off[: 2, 0] == -1).all() and off[-1, 0] == -1  # [CLS], the question's first token, the last [SEP]
        if s == 0:
            assert e == 0
            if ex.answers:  # the window does not hold the whole answer
                text, start = ex.answers[0]
                ctx = off[off[:, 0] >= 0]
                assert not (ctx[0, 0] <= start and ctx[-1, 1] >= start + len(text))
            continue
        assert 0 < s <= e and off[s, 0] >= 0 and off[e, 0] >= 0
        assert ex.context[off[s, 0] : off[e, 1]] == ex.answers[0][0]
        labelled.add(int(feats.example_index[i]))
    answerable = {k for k, ex in enumerate(examples) if ex.answers}
    assert labelled == answerable  # every answer fits some window


def test_long_context_gets_overlapping_windows(dm):
    tok = dm.tokenizer
    context = " ".join(dm.examples("test")[k].context for k in (0, 10, 20))
    feats = _hand_window(context, "Who said what on Friday?", tok, max_seq_length=64, doc_stride=16, max_query_length=16)
    n_ctx = len(tok.encode(context, add_special_tokens=False).ids)
    n_q = len(tok.encode("Who said what on Friday?", add_special_tokens=False).ids)
    room = 64 - 3 - n_q  # context tokens per window
    assert len(feats) == 1 + -(-(n_ctx - room) // (room - 16))
    windows = []
    for i in range(len(feats)):
        item, off = feats[i], feats.offsets(i)
        assert len(item["input_ids"]) <= 64
        assert tok.decode(item["input_ids"][1 : 1 + n_q].tolist()) == "who said what on friday?"
        ctx = off[:, 0] >= 0
        assert (item["token_type_ids"][ctx] == 1).all() and (item["token_type_ids"][: np.argmax(ctx)] == 0).all()
        windows.append([tuple(o) for o in off[ctx]])
    for a, b in itertools.pairwise(windows):
        assert a[-16:] == b[:16]  # doc_stride tokens shared
    assert windows[0][0][0] == 0 and windows[-1][-1][1] == len(context.rstrip())
    assert feats.example_index.tolist() == [0] * len(feats)


def test_question_truncated_to_max_query_length(dm):
    tok = dm.tokenizer
    question = " ".join(["the jury said"] * 40) + "?"
    feats = _hand_window("The jury met on Friday.", question, tok, max_seq_length=128, doc_stride=16, max_query_length=10)
    types = feats[0]["token_type_ids"]
    assert int((types == 0).sum()) == 10 + 2  # [CLS] + 10 question tokens + [SEP]


def test_windows_and_labels_match_hf_fast_tokenizer_and_run_qa(dm):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer

    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(dm.tokenizer.to_str()), cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]"
    )
    examples = [e for e in dm.examples("validation") if len(e.context) > 1500][:6] + dm.examples("validation")[:20]
    ours = prepare_features(dm.tokenizer, examples, max_seq_length=128, doc_stride=32, max_query_length=64)
    enc = hf(
        [e.question.lstrip() for e in examples], [e.context for e in examples], truncation="only_second", max_length=128, stride=32,
        return_overflowing_tokens=True, return_offsets_mapping=True, return_token_type_ids=True,
    )
    assert len(enc["input_ids"]) == len(ours) > len(examples)
    for i in range(len(ours)):  # run_qa.py prepare_train_features
        assert ours[i]["input_ids"].tolist() == enc["input_ids"][i]
        assert ours[i]["token_type_ids"].tolist() == enc["token_type_ids"][i]
        seq, offsets = enc.sequence_ids(i), enc["offset_mapping"][i]
        ex = examples[enc["overflow_to_sample_mapping"][i]]
        assert ours.example_index[i] == enc["overflow_to_sample_mapping"][i]
        assert [tuple(o) if s == 1 else (-1, -1) for o, s in zip(offsets, seq)] == [tuple(o) for o in ours.offsets(i).tolist()]
        if not ex.answers:
            label = (0, 0)
        else:
            start_char = ex.answers[0][1]
            end_char = start_char + len(ex.answers[0][0])
            ts = seq.index(1)
            te = len(seq) - 1 - seq[::-1].index(1)
            if not (offsets[ts][0] <= start_char and offsets[te][1] >= end_char):
                label = (0, 0)
            else:
                while ts < len(offsets) and offsets[ts][0] <= start_char:
                    ts += 1
                while offsets[te][1] >= end_char:
                    te -= 1
                label = (ts - 1, te + 1)
        assert (ours.start_positions[i], ours.end_positions[i]) == label


# --- post-processing ------------------------------------------------------------------------------
def _two_windows(tok):
    context = " ".join(f"word{k}" for k in range(40)) + " Alice met Bob in Paris on Friday and then " + " ".join(f"tail{k}" for k in range(40))
    ex = QAExample("x", "Who met Bob?", context, [("Alice", context.index("Alice"))], False)
    feats = prepare_features(tok, [ex], max_seq_length=96, doc_stride=24, max_query_length=32)
    assert len(feats) >= 2
    return ex, feats


def _token_of(feats, f, context, word, last=False):
    """The first (``last``: the last) token of ``word`` in window ``f``, or None."""
    off = feats.offsets(f)
    at = context.index(word) + (len(word) - 1 if last else 0)
    hits = np.flatnonzero((off[:, 0] <= at) & (off[:, 1] > at))
    return int(hits[0]) if len(hits) else None


def test_postprocess_picks_best_span_across_windows(dm):
    ex, feats = _two_windows(dm.tokenizer)
    n = [len(feats.offsets(f)) for f in range(len(feats))]
    starts = [np.full(k, -5.0, dtype=np.float32) for k in n]
    ends = [np.full(k, -5.0, dtype=np.float32) for k in n]
    a0, p0 = _token_of(feats, 0, ex.context, "word3"), _token_of(feats, 0, ex.context, "word3", last=True)
    last = max(f for f in range(len(feats)) if _token_of(feats, f, ex.context, "Paris") is not None)
    assert last > 0 and _token_of(feats, 0, ex.context, "Paris") is None
    a1, p1 = _token_of(feats, last, ex.context, "Paris"), _token_of(feats, last, ex.context, "Friday", last=True)
    starts[0][a0], ends[0][p0] = 4.0, 4.0  # "word3" (2 tokens): 8
    starts[last][a1], ends[last][p1] = 5.0, 4.5  # "Paris on Friday": 9.5, the best
    starts[0][3], ends[0][3] = 9.0, 9.0  # a question token: never an answer
    starts[last][p1 + 2], ends[last][a1 - 1] = 9.0, 9.0  # end before start: invalid
    # batches of different widths, padded rows, a repeated feature (DDP padding)
    pad = lambda rows, w: torch.tensor(np.stack([np.pad(r, (0, w - len(r)), constant_values=50.0) for r in rows]))
    idx = [torch.tensor([0]), torch.tensor(list(range(1, len(feats))) + [0])]
    s_batches = [pad(starts[:1], 104), pad(starts[1:] + starts[:1], 96)]
    e_batches = [pad(ends[:1], 104), pad(ends[1:] + ends[:1], 96)]
    assert postprocess_predictions([ex], feats, idx, s_batches, e_batches) == {"x": "Paris on Friday"}
    assert postprocess_predictions([ex], feats, idx, s_batches, e_batches, max_answer_length=3) == {"x": "word3"}
    # only the first window seen: its best
    assert postprocess_predictions([ex], feats, torch.tensor([0]), starts[:1], ends[:1]) == {"x": "word3"}


def test_v2_null_threshold(dm):
    ex, feats = _two_windows(dm.tokenizer)
    n = [len(feats.offsets(f)) for f in range(len(feats))]
    starts = [np.zeros(k, dtype=np.float32) for k in n]
    ends = [np.zeros(k, dtype=np.float32) for k in n]
    a, b = _token_of(feats, 0, ex.context, "word3"), _token_of(feats, 0, ex.context, "word4", last=True)
    starts[0][a], ends[0][b] = 4.0, 4.0  # best span: 8
    for f in range(len(feats)):
        starts[f][0], ends[f][0] = 6.0, 6.0  # null 12 in every window
    idx = list(range(len(feats)))
    run = lambda **kw: postprocess_predictions([ex], feats, idx, starts, ends, version_2_with_negative=True, **kw)["x"]
    assert run() == ""  # 12 - 8 > 0
    assert run(null_score_diff_threshold=3.9) == ""
    assert run(null_score_diff_threshold=4.1) == "word3 word4"
    assert postprocess_predictions([ex], feats, idx, starts, ends)["x"] == "word3 word4"  # v1: never empty
    starts[-1][0], ends[-1][0] = 1.0, 1.0  # the null score is the lowest over windows: 2 < 8
    assert run() == "word3 word4"


# --- metrics --------------------------------------------------------------------------------------
REFS = [
    {"id": "a", "answers": {"text": ["the Eiffel Tower", "Eiffel Tower"], "answer_start": [0, 4]}},
    {"id": "b", "answers": {"text": ["Paris France"], "answer_start": [0]}},
    {"id": "c", "answers": {"text": [], "answer_start": []}},
    {"id": "d", "answers": {"text": [], "answer_start": []}},
    {"id": "e", "answers": {"text": ["1889"], "answer_start": [3]}},
]
PREDS = {"a": "eiffel tower!", "b": "Paris", "c": "", "d": "London", "e": "in 1889 ."}


def test_squad_v2_metrics_hand_example():
    assert normalize_answer("  The  Eiffel-Tower, an icon! ") == "eiffeltower icon"
    m = squad_v2_metrics(PREDS, REFS)
    f1_b, f1_e = 2 * 1.0 * 0.5 / 1.5, 2 * 0.5 * 1.0 / 1.5
    expected = {
        "exact": 100 * 2 / 5, "f1": 100 * (1 + f1_b + 1 + 0 + f1_e) / 5, "total": 5.0,
        "HasAns_exact": 100 / 3, "HasAns_f1": 100 * (1 + f1_b + f1_e) / 3, "HasAns_total": 3.0,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2.0,
    }
    assert m.keys() == expected.keys()
    for k, v in expected.items():
        assert m[k] == pytest.approx(v), k
    # a missing prediction scores 0; torchmetrics-style inputs; the Metric class agrees
    assert squad_v2_metrics({k: v for k, v in PREDS.items() if k != "a"}, REFS)["exact"] == pytest.approx(100 / 5)
    metric = SQuADv2()
    metric.update([{"id": k, "prediction_text": v} for k, v in list(PREDS.items())[:2]], REFS[:2])
    metric.update([{"id": k, "prediction_text": v} for k, v in list(PREDS.items())[2:]], REFS[2:])
    for k, v in metric.compute().items():
        assert float(v) == pytest.approx(expected[k], rel=1e-6), k


def test_squad_v1_metrics_is_torchmetrics():
    from torchmetrics.text import SQuAD

    refs = [r for r in REFS if r["answers"]["text"]]
    ours = squad_v1_metrics(PREDS, refs)
    theirs = SQuAD()([{"id": k, "prediction_text": PREDS[k]} for k in ("a", "b", "e")], refs)
    assert ours == pytest.approx({k: float(v) for k, v in theirs.items()})
    assert squad_v1_metrics({"a": "Eiffel Tower"}, refs) == pytest.approx({"exact_match": 100 / 3, "f1": 100 / 3})


# --- the DataModule -------------------------------------------------------------------------------
def test_batches(dm):
    train = next(iter(dm.train_dataloader()))
    assert set(train) == {"input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions"}
    assert all(v.dtype == torch.long for v in train.values())
    assert train["input_ids"].shape[0] == 8 and train["input_ids"].shape[1] % 8 == 0 and train["input_ids"].shape[1] <= dm.max_seq_length
    assert ((train["input_ids"] != dm.pad_token_id) == train["attention_mask"].bool()).all()
    val = next(iter(dm.val_dataloader()))
    assert set(val) == set(train) | {"feature_index"}
    assert val["feature_index"].tolist() == list(range(8))
    assert dm.tokenizer_vocab_size == 4000 and dm.max_seq_length == 384 and dm.version_2_with_negative


def test_oracle_logits_score_100(dm):
    """Logits that point at each window's label give every answer back (and "" for the
    unanswerable): post-processing, references and evaluate agree end to end."""
    idx, starts, ends = [], [], []
    for batch in dm.val_dataloader():
        s = torch.full(batch["input_ids"].shape, -10.0)
        e = s.clone()
        s[torch.arange(len(s)), batch["start_positions"]] = 10.0
        e[torch.arange(len(e)), batch["end_positions"]] = 10.0
        idx.append(batch["feature_index"])
        starts.append(s)
        ends.append(e)
    preds = dm.postprocess(idx, starts, ends, "validation")
    assert len(preds) == len(dm.examples("validation"))
    m = dm.evaluate(preds, "validation")
    assert m["exact"] == 100.0 and m["f1"] == 100.0 and m["NoAns_total"] > 0
    assert dm.evaluate({k: v for k, v in list(preds.items())[:10]}, "validation", only_predicted=True)["exact"] == 100.0


def test_file_hf_and_predict_sources(dm, tmp_path, cache):
    """The generated set written as SQuAD JSON (and as a saved Hugging Face dataset) reads back
    to the same examples and features; predict reads JSON lines; predictions are written as
    ``{id: answer}``."""
    import datasets

    tok_dir = tmp_path / "tok"
    dm.save_tokenizer(tok_dir)
    val = dm.examples("validation")
    answerable = [e for e in val if e.answers]
    (tmp_path / "v2.json").write_text(json.dumps(squad_json(val)))
    (tmp_path / "v1.json").write_text(json.dumps(squad_json(answerable)))
    common = {"tokenizer": str(tok_dir), "cache_dir": str(cache), "batch_size": 8}
    v2 = QuestionAnsweringDataModule(validation_file=str(tmp_path / "v2.json"), version_2_with_negative=True, **common)
    assert v2.examples("validation") == val and v2.examples("test") == val
    assert np.array_equal(v2.features("validation").ids, dm.features("validation").ids)
    v1 = QuestionAnsweringDataModule(validation_file=str(tmp_path / "v1.json"), **common)
    v1.setup("validate")
    preds = {e.id: e.answers[0][0] for e in answerable}
    assert v1.evaluate(preds, "validation") == {"exact_match": 100.0, "f1": 100.0}
    with pytest.raises(UserError, match="train_file"):
        v1.setup("fit")

    rows = [{"id": e.id, "title": e.title, "context": e.context, "question": e.question,
             "answers": {"text": [t for t, _ in e.answers], "answer_start": [s for _, s in e.answers]}} for e in val]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:50]), "validation": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf"))
    hf = QuestionAnsweringDataModule(source=f"hf:{tmp_path / 'hf'}", version_2_with_negative=True, **common)
    assert [(e.id, e.context, e.answers, e.is_impossible) for e in hf.examples("validation")] == [(e.id, e.context, e.answers, e.is_impossible) for e in val]
    assert len(hf.examples("train")) == 50 and hf.examples("test") == hf.examples("validation")

    (tmp_path / "ask.jsonl").write_text("".join(json.dumps({"id": f"p{k}", "question": e.question, "context": e.context}) + "\n" for k, e in enumerate(answerable[:5])))
    p = QuestionAnsweringDataModule(predict_file=str(tmp_path / "ask.jsonl"), **common)
    p.setup("predict")
    batch = next(iter(p.predict_dataloader()))
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "feature_index"}
    logits = torch.zeros(batch["input_ids"].shape)
    preds = p.postprocess(batch["feature_index"], logits, logits, "predict")
    assert set(preds) == {f"p{k}" for k in range(5)}
    out = p.write_predictions(preds, tmp_path / "out" / "predictions.json")
    assert json.loads(out.read_text()) == preds


# --- bad input ------------------------------------------------------------------------------------
def _squad(qas, context="The jury met in Atlanta on Friday."):
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}


def test_answer_start_mismatch_names_the_id(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(_squad([{"id": "q-17", "question": "Where?", "answers": [{"text": "Atlanta", "answer_start": 3}]}])))
    with pytest.raises(UserError, match=r"'q-17'.*'Atlanta'.*answer_start 3"):
        QuestionAnsweringDataModule(validation_file=str(f), tokenizer=str(f)).examples("validation")


def test_bad_input_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        QuestionAnsweringDataModule(train_file=str(tmp_path / "missing.json"))
    with pytest.raises(UserError, match="does not exist"):
        read_squad_file(tmp_path / "missing.json")
    f = tmp_path / "not_squad.json"
    f.write_text(json.dumps({"rows": [1, 2]}))
    with pytest.raises(UserError, match='not in SQuAD format.*"data"'):
        read_squad_file(f)
    f.write_text(json.dumps({"data": [{"paragraphs": [{"context": "x", "qas": [{"question": "?"}]}]}]}))
    with pytest.raises(UserError, match="not in SQuAD format"):
        read_squad_file(f)
    f.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_squad_file(f)
    f.write_text(json.dumps(_squad([{"id": "n1", "question": "Who?", "answers": [], "is_impossible": True}])))
    with pytest.raises(UserError, match="'n1' has no answer.*version_2_with_negative"):
        QuestionAnsweringDataModule(validation_file=str(f)).examples("validation")
    assert QuestionAnsweringDataModule(validation_file=str(f), version_2_with_negative=True).examples("validation")[0].is_impossible
    with pytest.raises(UserError, match="doc_stride"):
        QuestionAnsweringDataModule(max_seq_length=128, doc_stride=64, max_query_length=64)
    with pytest.raises(UserError, match="not a QA source"):
        QuestionAnsweringDataModule(source="squad")
    with pytest.raises(UserError, match="tokenizer"):
        _ = QuestionAnsweringDataModule(validation_file=str(f), version_2_with_negative=True).tokenizer


def test_write_predictions(tmp_path):
    path = write_predictions({"a": "Paris", "b": ""}, tmp_path / "p.json")
    assert json.loads(path.read_text()) == {"a": "Paris", "b": ""}
    assert write_predictions({"a": "x"}, tmp_path) == tmp_path / "predictions.json"  # a run's folder
    assert write_predictions({"a": "x"}, tmp_path / "run" / "version_0") == tmp_path / "run" / "version_0" / "predictions.json"
