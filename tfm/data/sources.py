"""Hugging Face datasets as every DataModule reads them: one spec syntax, one set of split names,
one column check and one set of error messages.

* ``hf:<name>[:<config>][@<revision>]``: a dataset on the Hub (``hf:glue:sst2``,
  ``hf:wikimedia/wikipedia:20231101.en``, ``hf:squad@<commit>``), through ``datasets.load_dataset``
  and its cache (``HF_DATASETS_OFFLINE=1`` reads the cache alone);
* a folder written by ``datasets.save_to_disk`` (a ``DatasetDict`` or a lone ``Dataset``), also
  as ``hf:<folder>``.

Split names are made canonical (``train``, ``validation``, ``test``; ``dev``, ``valid``,
``validation_matched`` ... are aliases); a lone ``Dataset`` is the ``train`` split.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import UserError

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "validation_matched", "val", "valid", "dev"),
    "test": ("test", "test_matched"),
}


@dataclass(frozen=True)
class HubSpec:
    """``hf:<name>[:<config>][@<revision>]``."""

    name: str
    config: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, spec: str, option: str = "--data.source", example: str = "hf:glue:sst2") -> HubSpec:
        body = spec.removeprefix("hf:")
        body, _, revision = body.partition("@")
        name, _, config = body.partition(":")
        if not name:
            raise UserError(f"{option} {spec!r} names no dataset: write hf:<name>[:<config>][@<revision>], e.g. "
                            f"{example}")
        return cls(name, config or None, revision or None)

    def __str__(self) -> str:
        return f"hf:{self.name}{':' + self.config if self.config else ''}{'@' + self.revision if self.revision else ''}"


def is_hub(spec: str) -> bool:
    return spec.startswith("hf:")


def is_saved_dataset(path: str | Path) -> bool:
    """A folder written by ``save_to_disk`` (a ``DatasetDict`` or a ``Dataset``)."""
    p = Path(path).expanduser()
    return (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()


def load_splits(source: str | Path | HubSpec, split: str | None = None, lone: str | None = "train",
                streaming: bool = False) -> Any:
    """A ``DatasetDict`` with canonical split names from a hub spec or a ``save_to_disk`` folder
    (``split``: that split alone, as a ``Dataset``). A lone ``Dataset`` becomes the ``lone``
    split (None: refused, for tasks that need given splits). ``streaming``: an
    ``IterableDatasetDict`` read as iterated (nothing downloaded ahead). One line when it cannot
    be loaded."""
    import datasets

    if isinstance(source, str) and is_hub(source):
        source = HubSpec.parse(source)
    label = str(source)
    try:
        if isinstance(source, HubSpec) and not is_saved_dataset(source.name):
            revision = {"revision": source.revision} if source.revision else {}
            ds = datasets.load_dataset(source.name, source.config, **revision,
                                       **({"streaming": True} if streaming else {}))
        else:  # a save_to_disk folder (also as hf:<folder>)
            ds = datasets.load_from_disk(str(Path(source.name if isinstance(source, HubSpec) else source).expanduser()))
            if streaming:
                ds = ds.to_iterable_dataset() if isinstance(ds, datasets.Dataset) else datasets.IterableDatasetDict(
                    {k: v.to_iterable_dataset() for k, v in ds.items()})
    except Exception as e:  # noqa: BLE001  (network, unknown name or config, not a dataset folder, ...)
        first = str(e).splitlines()[0] if str(e) else ""
        offline = ""
        if _offline():
            offline = " (offline: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set, and it is not in the cache)"
        raise UserError(f"could not load the Hugging Face dataset {label!r}{offline}: {type(e).__name__}: "
                        f"{first}") from None
    if isinstance(ds, (datasets.Dataset, datasets.IterableDataset)):
        if lone is None:
            raise UserError(f"{label} is a single dataset: tfm needs train and validation splits (a DatasetDict)")
        ds = (datasets.DatasetDict if isinstance(ds, datasets.Dataset) else datasets.IterableDatasetDict)({lone: ds})
    ds = canonical_splits(ds)
    if split is not None:
        if split not in ds:
            raise UserError(f"dataset {label!r} has no {split!r} split (it has {', '.join(ds)})")
        return ds[split]
    return ds


def canonical_splits(ds: Any) -> Any:
    """The splits renamed: for each of train / validation / test, the first of its aliases there
    (``dev`` -> ``validation``, ...); other splits keep their names."""
    import datasets

    out, used = {}, set()
    for split, names in SPLIT_ALIASES.items():
        found = next((n for n in names if n in ds), None)
        if found is not None:
            out[split] = ds[found]
            used.add(found)
    out.update({k: v for k, v in ds.items() if k not in used and k not in out})
    return datasets.IterableDatasetDict(out) if isinstance(ds,
                                                           datasets.IterableDatasetDict) else datasets.DatasetDict(out)


def require_train(ds: Any, label: str) -> None:
    if "train" not in ds:
        raise UserError(f"dataset {label!r} has no 'train' split (it has {', '.join(ds)})")


def require_columns(columns: Iterable[str], needed: dict[str, str | None], label: str, where: str = "") -> None:
    """Each needed column (``{column: the option that names it}``) is there; else one line naming
    the columns there are and the option to set."""
    have = list(columns)
    for column, option in needed.items():
        if column is not None and column not in have:
            hint = f": set --data.{option}" if option else ""
            raise UserError(f"dataset {label!r} has no column {column!r}{where} (columns: {', '.join(have)}){hint}")


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def build_cached(path: Path, build: Callable[[Path], None], exists: Callable[[Path], bool] | None = None) -> Path:
    """``path`` (a file or a folder), built by ``build(tmp)`` unless it is there already: once, by
    the first of several processes (DDP ranks, concurrent runs; the others wait on a file lock),
    written to a temporary name and renamed, so a cache is never half-written. tfm's one cache
    mechanism (tokenizers, prepared datasets)."""
    from filelock import FileLock

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
    """``num_proc`` of a ``Dataset.map``: ``--data.num_proc``, or (None) one per CPU up to 8 for a
    source of 10,000 rows or more and one below that (forking costs more than it saves); None
    for one (``datasets`` then runs the map in this process)."""
    processes = (min(8, cpu_count()) if rows >= 10_000 else 1) if num_proc is None else max(1, min(num_proc, rows))
    return processes if processes > 1 else None


@contextmanager
def quiet_fork(processes: int | None) -> Iterator[None]:
    """Around a ``Dataset.map`` in ``processes`` forked workers: this process' objects frozen out of
    the garbage collector's reach (a collection in a worker would touch, and so copy, every page of
    the parent's heap), and no "the current process just got forked" warning of ``tokenizers``."""
    import gc

    old = os.environ.get("TOKENIZERS_PARALLELISM")
    if processes:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        gc.collect()
        gc.freeze()
    try:
        yield
    finally:
        if processes:
            gc.unfreeze()
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def load_shards(folder: Path, name: str) -> Any:
    """The ``datasets.Dataset`` a ``map(cache_file_name=folder / f"{name}.arrow")`` wrote: one file,
    or one per process (``name_0000k_of_0000n.arrow``), memory-mapped and concatenated in order."""
    import datasets

    files = sorted(folder.glob(f"{name}*.arrow"))
    return datasets.concatenate_datasets([datasets.Dataset.from_file(str(f)) for f in files])


def check_num_proc(num_proc: int | None) -> None:
    if num_proc is not None and not 1 <= num_proc <= cpu_count():
        raise UserError(f"--data.num_proc {num_proc} is not between 1 and the {cpu_count()} CPUs of this machine: "
                        "lower it (unset: one process per CPU for large corpora)")


def write_records(records: Iterable[dict[str, Any]], path: Path, features: Any, batch_rows: int = 10_000) -> None:
    """Rows (dicts of ``features``' columns) written to an Arrow file that ``datasets.Dataset.from_file``
    memory-maps, ``batch_rows`` at a time: a source of any size is read with flat memory."""
    import pyarrow as pa

    schema = features.arrow_schema
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(record)
            if len(batch) == batch_rows:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))


TABLE_SUFFIXES = (".parquet", ".arrow")


def is_table_file(path: str | Path) -> bool:
    """A Parquet file or an Arrow file as ``datasets`` writes them."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def load_table_file(path: Path, needed: dict[str, str | None], cache_dir: Path | None = None) -> Any:
    """A ``.parquet`` file (converted once to Arrow in ``cache_dir``) or an ``.arrow`` file
    (memory-mapped) as a ``datasets.Dataset``, with the ``needed`` columns (see :func:`require_columns`)."""
    import datasets

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
