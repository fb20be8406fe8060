"""Data preparation at scale: tfm's BERT pretraining data vs a Hugging Face ``run_mlm.py``-style
pipeline on 1x, 4x, 16x and 64x the bundled Brown text, and tfm's translation data vs the
``run_translation.py``-style preprocessing on 1x-64x the Bible pairs.

    python benchmarks/data_scaling.py [--quick] [--scales 1 4 16 64] [--num_proc 2] [--task pretraining|translation|both]

The corpus of scale ``k`` is a folder of ``500 k`` text files: each Brown document ``k`` times,
each copy with its sentences in another seeded order (one sentence a line; ~6 MB of text per
copy), built once under ``--work``. Each case runs in a fresh process (peak memory is a
per-process number) with a fresh cache, A B A B over the scales:

* ``ours``: ``BertPretrainingDataModule(source=<folder>, num_proc=P)``, ``prepare_data()`` and
  ``setup("fit")``: WordPiece training (timed apart), tokenisation and sentence pairs;
* ``hf``: the ``run_mlm.py`` recipe on the same files: the ``datasets`` ``text`` loader, a batched
  ``map`` tokenising every line with the same WordPiece vocabulary (a transformers
  ``PreTrainedTokenizerFast``, with ``num_proc=P``), then grouping into 126-token blocks;
* ``loader``: one training epoch's loader of the prepared data (tfm's cache) read by 1 process,
  then by 2 at once (two DDP ranks of one node): the memory each holds for the data, as the growth
  of its proportional set size (PSS: a shared page counted once over its sharers) from before
  the DataModule to the end of the epoch, summed over the ranks.

Translation: a TSV of the 30,270 Bible pairs ``k`` times (each copy in another seeded order);
``TranslationDataModule(source="tsv", train_file=...)`` ``prepare_data()`` + ``setup("fit")``
(BPE training timed apart, validation held out and both splits tokenised) against the ``csv``
loader and a batched ``map`` tokenising both sides with the same BPE vocabulary.

Time is wall time; memory the peak resident memory of the process and its workers together,
as the sum of their PSS (sampled every 50 ms from /proc; summing plain RSS would count every page
a forked worker shares with its parent once per process). Throughput is MB of text per second of preparation, tokenizer training
excluded (reported apart). One JSON line per scale and metric.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import emit  # noqa: E402

VOCAB = 8192
SEQ = 128


# --- the corpus -------------------------------------------------------------------------------------
def build_corpus(work: Path, scale: int) -> Path:
    """``500 scale`` files, each copy of a Brown document with its sentences shuffled (seeded)."""
    folder = work / f"brown-x{scale}"
    if (folder / ".done").is_file():
        return folder
    from tfm.data.text import read_brown

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    docs = read_brown()
    for copy in range(scale):
        rng = random.Random(copy)
        sub = folder / f"copy{copy:03d}"
        sub.mkdir()
        for d in docs:
            sentences = d.text()
            if copy:
                rng.shuffle(sentences)
            (sub / f"{d.id}.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    (folder / ".done").write_text("")
    return folder


def text_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*.txt"))


def build_pairs(work: Path, scale: int) -> Path:
    """A TSV (``en``, ``es``) of the Bible's verse pairs ``scale`` times, each copy in another seeded order."""
    path = work / f"bible-x{scale}.tsv"
    if path.is_file():
        return path
    from tfm.data.translation import read_bible

    verses = [f"{v.en}\t{v.es}\n" for v in read_bible()]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("en\tes\n")
        for copy in range(scale):
            order = verses[:]
            if copy:
                random.Random(copy).shuffle(order)
            f.writelines(order)
    tmp.rename(path)
    return path


# --- memory of a process tree -----------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def pss(pid: int | str = "self") -> int:
    """Proportional set size: resident memory, a page shared by n processes counted 1/n in each
    (the sum over a process and its forked workers counts shared pages once)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next((int(ln.split()[1]) * 1024 for ln in text.splitlines() if ln.startswith("Pss:")), 0)


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[dict, float, int]:
    """``(the child's last JSON line, wall seconds, peak memory (PSS) of the child and its descendants)``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], sum(pss(p) for p in _tree(proc.pid)))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return (json.loads(lines[-1]) if lines else {}), wall, peak[0]


# --- the cases (each in its own process) ------------------------------------------------------------
def case_ours(folder: str, cache: str, num_proc: int) -> dict:
    from tfm.data.pretraining import BertPretrainingDataModule

    dm = BertPretrainingDataModule(source=folder, cache_dir=cache, num_proc=num_proc, vocab_size=VOCAB, max_seq_length=SEQ)
    t = time.perf_counter()
    dm.tokenizer  # noqa: B018  (trains the vocabulary)
    tokenizer_s = time.perf_counter() - t
    dm.prepare_data()
    dm.setup("fit")
    return {"tokenizer_s": tokenizer_s, "instances": len(dm.train_set) + len(dm.val_set) + len(dm.test_set)}


def case_hf(folder: str, cache: str, num_proc: int, tokenizer: str) -> dict:
    """run_mlm.py's preparation (line by line off: tokenise every line, group into blocks)."""
    from itertools import chain

    import datasets
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                  unk_token="[UNK]")
    files = sorted(str(f) for f in Path(folder).rglob("*.txt"))
    raw = datasets.load_dataset("text", data_files={"train": files}, cache_dir=cache, num_proc=num_proc)
    tokenized = raw.map(lambda ex: tok(ex["text"], return_special_tokens_mask=True), batched=True, num_proc=num_proc, remove_columns=["text"])
    block = SEQ - 2

    def group_texts(examples: dict) -> dict:
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = (len(concatenated["input_ids"]) // block) * block
        return {k: [t[i : i + block] for i in range(0, total, block)] for k, t in concatenated.items()}

    grouped = tokenized.map(group_texts, batched=True, num_proc=num_proc)
    return {"instances": len(grouped["train"])}


def case_translation(train_file: str, cache: str, num_proc: int) -> dict:
    from tfm.data.translation import TranslationDataModule

    dm = TranslationDataModule(source="tsv", train_file=train_file, cache_dir=cache, num_proc=num_proc, vocab_size=VOCAB)
    t = time.perf_counter()
    dm.tokenizer  # noqa: B018  (trains the vocabulary)
    tokenizer_s = time.perf_counter() - t
    dm.prepare_data()
    dm.setup("fit")
    return {"tokenizer_s": tokenizer_s, "instances": len(dm.train_set) + len(dm.val_set)}


def case_translation_hf(train_file: str, cache: str, num_proc: int, tokenizer: str) -> dict:
    """The HF examples' recipe (run_translation.py's preprocessing on a TSV): the ``datasets`` csv
    loader, then a batched ``map`` tokenising both sides with the same BPE vocabulary."""
    import csv

    import datasets
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer, pad_token="[PAD]", unk_token="[UNK]")
    raw = datasets.load_dataset("csv", data_files={"train": train_file}, delimiter="\t", quoting=csv.QUOTE_NONE, cache_dir=cache, num_proc=num_proc)

    def encode(batch: dict) -> dict:
        return {"input_ids": tok(batch["en"])["input_ids"], "labels": tok(text_target=batch["es"])["input_ids"]}

    encoded = raw.map(encode, batched=True, num_proc=num_proc, remove_columns=["en", "es"])
    return {"instances": len(encoded["train"])}


def case_loader(folder: str, cache: str, rank: int, replicas: int, batches: int, barrier: str) -> dict:
    """Rank ``rank`` of ``replicas``: its training loader over the prepared (cached) data, ``batches``
    batches read (its shard of the epoch, as under DDP)."""
    import datasets  # noqa: F401  (imports a rank holds anyway, before the baseline)
    import pyarrow.compute  # noqa: F401

    from tfm.data.pretraining import BertPretrainingDataModule

    baseline = pss()  # the interpreter, torch, datasets: what a rank holds anyway
    dm = BertPretrainingDataModule(source=folder, cache_dir=cache, vocab_size=VOCAB, max_seq_length=SEQ, batch_size=32, num_workers=0)
    dm.setup("fit")
    dm._replicas = lambda: (replicas, rank)  # what a Trainer with `replicas` DDP processes tells it
    for i, _ in enumerate(dm.train_dataloader()):
        if i + 1 >= batches:
            break
    _wait_for_all(barrier, f"read{rank}", replicas)  # measured while every rank maps what it read
    data = pss() - baseline
    _wait_for_all(barrier, f"measured{rank}", replicas)
    return {"data_pss": data}


def _wait_for_all(folder: str, mark: str, count: int) -> None:
    (Path(folder) / mark).touch()
    prefix = mark.rstrip("0123456789")
    while len(list(Path(folder).glob(prefix + "*"))) < count:
        time.sleep(0.05)


def child(args: argparse.Namespace) -> None:
    if args.child == "ours":
        out = case_ours(args.folder, args.cache, args.num_proc)
    elif args.child == "hf":
        out = case_hf(args.folder, args.cache, args.num_proc, args.tokenizer)
    elif args.child == "translation":
        out = case_translation(args.folder, args.cache, args.num_proc)
    elif args.child == "translation_hf":
        out = case_translation_hf(args.folder, args.cache, args.num_proc, args.tokenizer)
    else:
        out = case_loader(args.folder, args.cache, args.rank, args.replicas, args.batches, args.barrier)
    print(json.dumps(out), flush=True)


# --- the driver -------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="scales 1 and 4")
    ap.add_argument("--scales", type=int, nargs="+", default=None)
    ap.add_argument("--num_proc", type=int, default=2)
    ap.add_argument("--batches", type=int, default=None, help="batches each of 2 ranks reads (default: its half of an epoch; 1 rank reads twice as many)")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "tfm-data-scaling"))
    ap.add_argument("--task", choices=["pretraining", "translation", "both"], default="both")
    ap.add_argument("--cases", nargs="+", choices=["prep", "loader"], default=["prep", "loader"], help="pretraining: what to measure")
    ap.add_argument("--child", choices=["ours", "hf", "loader", "translation", "translation_hf"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--replicas", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--barrier", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    scales = args.scales or ([1, 4] if args.quick else [1, 4, 16, 64])
    work = Path(args.work)
    me = [sys.executable, str(Path(__file__).resolve())]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true"}
    for scale in scales if args.task != "translation" else []:
        folder = build_corpus(work, scale)
        mb = text_bytes(folder) / 1e6
        cache = work / f"cache-x{scale}"
        shutil.rmtree(cache, ignore_errors=True)
        common = ["--folder", str(folder), "--num_proc", str(args.num_proc)]
        ours, ours_s, ours_peak = run_measured([*me, "--child", "ours", *common, "--cache", str(cache)], env)
        config = {"case": f"brown x{scale}", "text_mb": round(mb, 1), "num_proc": args.num_proc, "max_seq_length": SEQ}
        if "prep" in args.cases:
            (tok,) = (cache / "tokenizers").glob("wordpiece-*.json")
            hf_cache = work / f"hf-cache-x{scale}"
            shutil.rmtree(hf_cache, ignore_errors=True)
            hf, hf_s, hf_peak = run_measured([*me, "--child", "hf", *common, "--cache", str(hf_cache), "--tokenizer", str(tok)], env)
            shutil.rmtree(hf_cache, ignore_errors=True)
            prep_s = ours_s - ours["tokenizer_s"]
            emit("data_scaling", "prep_mb_per_s", mb / prep_s, mb / hf_s, "HF run_mlm.py pipeline (text loader, map tokenize, group_texts)", config,
                 wall_s=round(ours_s, 1), tokenizer_s=round(ours["tokenizer_s"], 1), reference_wall_s=round(hf_s, 1),
                 instances=ours["instances"], reference_blocks=hf["instances"])
            emit("data_scaling", "prep_peak_memory_gb", ours_peak / 1e9, hf_peak / 1e9, "HF run_mlm.py pipeline", config, higher_is_better=False)
        if "loader" not in args.cases:
            shutil.rmtree(cache, ignore_errors=True)
            continue
        batches = args.batches or -(-ours["instances"] // 64)  # a rank's half of an epoch of batches of 32
        loader = [*me, "--child", "loader", "--folder", str(folder), "--cache", str(cache)]
        barriers = [Path(tempfile.mkdtemp(dir=work)) for _ in range(2)]
        one, _, one_peak = run_measured([*loader, "--batches", str(2 * batches), "--barrier", str(barriers[0])], env)
        procs = [subprocess.Popen([*loader, "--batches", str(batches), "--rank", str(r), "--replicas", "2", "--barrier", str(barriers[1])],
                                  stdout=subprocess.PIPE, text=True, env=env) for r in range(2)]
        two = [json.loads(p.communicate()[0].splitlines()[-1]) for p in procs]
        both = sum(t["data_pss"] for t in two)
        emit("data_scaling", "loader_memory_2_ranks_over_1", both / one["data_pss"], None, None, {**config, "batches_per_rank": batches},
             higher_is_better=False, one_rank_gb=round(one["data_pss"] / 1e9, 3), two_ranks_gb=round(both / 1e9, 3),
             one_rank_peak_gb=round(one_peak / 1e9, 3))
        for path in (cache, *barriers):
            shutil.rmtree(path, ignore_errors=True)
    for scale in scales if args.task != "pretraining" else []:
        tsv = build_pairs(work, scale)
        mb = tsv.stat().st_size / 1e6
        cache, hf_cache = work / f"cache-bible-x{scale}", work / f"hf-cache-bible-x{scale}"
        for path in (cache, hf_cache):
            shutil.rmtree(path, ignore_errors=True)
        common = ["--folder", str(tsv), "--num_proc", str(args.num_proc)]
        ours, ours_s, ours_peak = run_measured([*me, "--child", "translation", *common, "--cache", str(cache)], env)
        (tok,) = (cache / "tokenizers").glob("bpe-*.json")
        hf, hf_s, hf_peak = run_measured([*me, "--child", "translation_hf", *common, "--cache", str(hf_cache), "--tokenizer", str(tok)], env)
        config = {"case": f"bible x{scale}", "text_mb": round(mb, 1), "pairs": 30270 * scale, "num_proc": args.num_proc}
        emit("data_scaling", "prep_mb_per_s", mb / (ours_s - ours["tokenizer_s"]), mb / hf_s, "HF run_translation.py-style (csv loader, map tokenize)",
             config, wall_s=round(ours_s, 1), tokenizer_s=round(ours["tokenizer_s"], 1), reference_wall_s=round(hf_s, 1))
        emit("data_scaling", "prep_peak_memory_gb", ours_peak / 1e9, hf_peak / 1e9, "HF run_translation.py-style", config, higher_is_better=False)
        for path in (cache, hf_cache):
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
