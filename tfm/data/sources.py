"""Datasets as every DataModule reads them: ``hf:<name>[:<config>][@<revision>]`` or a ``save_to_disk`` folder with
canonical split names (``dev`` -> ``validation``, ...), table files, column checks, caches and their errors."""

from __future__ import annotations

import csv
import gc
import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
from filelock import FileLock

from ..errors import UserError

SPLITS = ("train", "validation", "test")
STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("predict",)}
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "validation_matched", "val", "valid", "dev"),
    "test": ("test", "test_matched"),
}
TABLE_FILES = ("csv", "tsv", "json", "jsonl", "parquet", "arrow")


@dataclass(frozen=True)
class HubSpec:
    """``hf:<name>[:<config>][@<revision>]``."""

    name: str
    config: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, spec: str, option: str = "--data.source", example: str = "hf:glue:sst2") -> HubSpec:
        body, _, revision = spec.removeprefix("hf:").partition("@")
        name, _, config = body.partition(":")
        if not name:
            raise UserError(f"{option} {spec!r} names no dataset: write hf:<name>[:<config>][@<revision>], e.g. "
                            f"{example}")
        return cls(name, config or None, revision or None)

    def __str__(self) -> str:
        return f"hf:{self.name}{':' + self.config if self.config else ''}{'@' + self.revision if self.revision else ''}"


def is_saved_dataset(path: str | Path) -> bool:
    """A folder written by ``save_to_disk`` (a ``DatasetDict`` or a ``Dataset``)."""
    p = Path(path).expanduser()
    return (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()


def load_splits(source: str | Path | HubSpec, split: str | None = None, lone: str | None = "train",
                streaming: bool = False) -> Any:
    """A ``DatasetDict`` with canonical split names (``split``: that ``Dataset`` alone); a lone ``Dataset`` is the
    ``lone`` split (None: refused). ``streaming``: an ``IterableDatasetDict``, nothing downloaded ahead."""
    import datasets  # 0.35 s to import: only when a dataset is read

    if isinstance(source, str) and source.startswith("hf:"):
        source = HubSpec.parse(source)
    label = str(source)
    try:
        if isinstance(source, HubSpec) and not is_saved_dataset(source.name):
            extra = {k: v for k, v in (("revision", source.revision), ("streaming", streaming)) if v}
            ds = datasets.load_dataset(source.name, source.config, **extra)
        else:  # a save_to_disk folder (also as hf:<folder>)
            ds = datasets.load_from_disk(str(Path(source.name if isinstance(source, HubSpec) else source).expanduser()))
    except Exception as e:  # noqa: BLE001  (network, unknown name or config, not a dataset folder, ...)
        first = str(e).splitlines()[0] if str(e) else ""
        flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
        offline = " (offline: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set, and it is not in the cache)" if any(
            os.environ.get(v, "").lower() in ("1", "true", "yes") for v in flags) else ""
        raise UserError(f"could not load the Hugging Face dataset {label!r}{offline}: {type(e).__name__}: "
                        f"{first}") from None
    if isinstance(ds, (datasets.Dataset, datasets.IterableDataset)):
        if lone is None:
            raise UserError(f"{label} is a single dataset: tfm needs train and validation splits (a DatasetDict)")
        ds = {lone: ds}
    found = {split: next((n for n in names if n in ds), None) for split, names in SPLIT_ALIASES.items()}
    out = {canonical: ds[name] for canonical, name in found.items() if name is not None}
    out.update({k: v for k, v in ds.items() if k not in found.values() and k not in out})
    if streaming:
        out = {k: v.to_iterable_dataset() if isinstance(v, datasets.Dataset) else v for k, v in out.items()}
    ds = (datasets.IterableDatasetDict if streaming else datasets.DatasetDict)(out)
    if split is None:
        return ds
    require_train(ds, label, split)
    return ds[split]


def require_train(ds: Any, label: str, split: str = "train") -> None:
    if split not in ds:
        raise UserError(f"dataset {label!r} has no {split!r} split (it has {', '.join(ds)})")


def require_columns(columns: Iterable[str], needed: dict[str, str | None], label: str, where: str = "") -> None:
    """Each needed column (``{column: the option that names it}``) is there; else one line naming the columns there
    are and the option to set."""
    have = list(columns)
    for column, option in needed.items():
        if column is not None and column not in have:
            hint = f": set --data.{option}" if option else ""
            raise UserError(f"dataset {label!r} has no column {column!r}{where} (columns: {', '.join(have) or 'none'})"
                            f"{hint}")


def build_cached(path: Path, build: Callable[[Path], None], exists: Callable[[Path], bool] | None = None) -> Path:
    """``path`` (a file or a folder), built by ``build(tmp)`` unless there: once, by the first of several processes
    (the others wait on a file lock), written to a temporary name and renamed, so a cache is never half-written."""
    done = exists or (lambda p: p.exists())
    if done(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if done(path):  # built by another process while this one waited
            return path
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        try:
            build(tmp)
            if path.is_dir():
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()
    return path


def cpu_count() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def preparation_processes(num_proc: int | None, rows: int) -> int | None:
    """``num_proc`` of a ``Dataset.map``: ``--data.num_proc``, or (None) one per CPU up to 8 from 10,000 rows, else
    one; None for one (the map then runs in this process)."""
    processes = (min(8, cpu_count()) if rows >= 10_000 else 1) if num_proc is None else max(1, min(num_proc, rows))
    return processes if processes > 1 else None


@contextmanager
def quiet_fork(processes: int | None) -> Iterator[None]:
    """Around a ``Dataset.map`` in forked ``processes``: the heap frozen out of the garbage collector's reach (a
    collection in a worker would copy every page), no fork warning of ``tokenizers``."""
    if not processes:
        yield
        return
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def load_shards(folder: Path, name: str) -> Any:
    """The ``Dataset`` a ``map(cache_file_name=folder / f"{name}.arrow")`` wrote, in one file or one per process."""
    import datasets  # 0.35 s to import: only when a dataset is read

    files = sorted(folder.glob(f"{name}*.arrow"))
    return datasets.concatenate_datasets([datasets.Dataset.from_file(str(f)) for f in files])


def check_num_proc(num_proc: int | None) -> None:
    if num_proc is not None and not 1 <= num_proc <= cpu_count():
        raise UserError(f"--data.num_proc {num_proc} is not between 1 and the {cpu_count()} CPUs of this machine: "
                        "lower it (unset: one process per CPU for large corpora)")


def write_records(records: Iterable[dict[str, Any]], path: Path, features: Any, batch_rows: int = 10_000) -> None:
    """Rows (dicts of ``features``' columns) written to an Arrow file ``batch_rows`` at a time (flat memory)."""
    rows = iter(records)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, features.arrow_schema) as writer:
        while batch := list(islice(rows, batch_rows)):
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=features.arrow_schema))


def is_table_file(path: str | Path) -> bool:
    """A Parquet file or an Arrow file as ``datasets`` writes them."""
    return Path(path).suffix.lower() in (".parquet", ".arrow")


def load_table_file(path: Path, needed: dict[str, str | None], cache_dir: Path | None = None) -> Any:
    """A ``.parquet`` (converted once to Arrow in ``cache_dir``) or ``.arrow`` file as a ``Dataset`` with the
    ``needed`` columns (see :func:`require_columns`)."""
    import datasets  # 0.35 s to import: only when a dataset is read

    try:
        if path.suffix.lower() == ".parquet":
            ds = datasets.Dataset.from_parquet(str(path), cache_dir=str(cache_dir) if cache_dir else None)
        else:
            ds = datasets.Dataset.from_file(str(path))
    except Exception as e:  # noqa: BLE001  (not Parquet / not an Arrow stream)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path} is not a readable {path.suffix} file ({first}): write it with pyarrow/pandas "
                        "to_parquet or datasets") from None
    require_columns(ds.column_names, needed, str(path))
    return ds


def file_kind(path: str | Path) -> str:
    """A file's type by its name's suffix (``tsv``, ``jsonl``, ...; a ``.gz`` passed over)."""
    return Path(Path(path).name.lower().removesuffix(".gz")).suffix.lstrip(".")


def text_lines(path: Path, ends: bool = False) -> Iterator[tuple[int, str]]:
    """``(number, line)`` of a UTF-8 text file (``.gz`` decompressed), one at a time."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:  # type: ignore[operator]
            for n, line in enumerate(f, 1):
                yield n, line if ends else line.rstrip("\r\n")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: save it as UTF-8 (CSV, TSV, JSON or JSON lines)") from None
    except OSError as e:
        raise UserError(f"could not read {path}: {e.strerror or e}") from None


def json_lines(path: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``("line", number, object)`` of a JSON-lines file (blank lines passed over); a bad line: one line naming it."""
    for n, line in text_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {n} is not valid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path} line {n} is not a JSON object: write one object per line")
        yield "line", n, obj


def read_records(path: Path, columns: dict[str, str | None], cache_dir: Path | None = None,
                 kind: str | None = None) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(unit, number, record)`` of a table file (of :data:`TABLE_FILES` by its suffix, else ``kind``): TSV (a header,
    no quoting), CSV (strings), JSON lines, a JSON list of objects or object of columns, Parquet or Arrow; a
    ``translation`` object's keys are columns too. ``columns`` checked first, then each line as it is read."""
    kind = file_kind(path) if file_kind(path) in TABLE_FILES else kind
    if kind in ("parquet", "arrow"):
        yield from (("row", n, row) for n, row in enumerate(dataset_rows(load_table_file(path, columns, cache_dir)), 1))
    elif kind in ("tsv", "csv"):
        lines = text_lines(path, ends=kind == "csv")
        reader = csv.reader(line for _, line in lines)
        rows = ((n, line.split("\t")) for n, line in lines) if kind == "tsv" else ((reader.line_num, r) for r in reader)
        try:
            header = next(rows, (1, []))[1]
            require_columns(header, {c: f"{o} or write a header row" for c, o in columns.items()}, str(path))
            for n, values in rows:
                if not "".join(values).strip():
                    continue
                if len(values) != len(header):
                    raise UserError(f"{path} line {n} has {len(values)} {'tab-separated ' * (kind == 'tsv')}fields "
                                    f"but the header has {len(header)}")
                yield "line", n, dict(zip(header, values))
        except csv.Error as e:
            raise UserError(f"{path} is not a valid CSV file: {e}") from None
    else:
        for i, (unit, n, record) in enumerate(_json_records(path, kind)):
            record = flat(record)
            if not i:
                require_columns(record, columns, str(path))
            yield unit, n, record


def dataset_rows(ds: Any) -> Iterator[dict[str, Any]]:
    """A ``datasets.Dataset``'s rows, read 10,000 at a time."""
    for batch in ds.iter(batch_size=10_000):
        yield from (dict(zip(batch, values)) for values in zip(*batch.values()))


def flat(record: dict[str, Any]) -> dict[str, Any]:
    """A record with the keys of its ``translation`` object as its own (Hugging Face's translation format)."""
    return {**record, **inner} if isinstance(inner := record.get("translation"), dict) else record


def _json_records(path: Path, kind: str | None) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """A JSON file's objects: a list, an object of columns (or of one list of objects), else JSON lines."""
    try:
        data = json.loads("".join(line for _, line in text_lines(path, ends=True))) if kind == "json" else None
    except json.JSONDecodeError:
        data = None  # JSON lines in a .json file
    if data is None:
        yield from json_lines(path)
        return
    if isinstance(data, dict):
        values = list(data.values())
        if len(values) == 1 and isinstance(values[0], list) and all(isinstance(r, dict) for r in values[0]):
            data = values[0]
        elif values and all(isinstance(v, list) and len(v) == len(values[0]) for v in values):
            data = [dict(zip(data, row)) for row in zip(*values)]
        else:
            data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path} holds no list of objects: write one object per line (JSON lines) or a list of "
                        "objects")
    yield from (("row", n, r) for n, r in enumerate(data, 1))


def text_digest(texts: Iterable[str]) -> str:
    """A sha256 of texts, each ended by a NUL: what identifies a corpus (or a file's settings) for a cache."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()
