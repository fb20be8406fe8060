"""Shared by the benchmarks: interleaved timing and the JSON result line (see DESIGN.md)."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any, Callable

import torch


def interleaved(cases: dict[str, Callable[[], Any]], warmup: int, reps: int) -> dict[str, float]:
    """Median seconds per call of each case, measured A B A B ... after ``warmup`` calls each."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def emit(bench: str, metric: str, ours: float, reference: float | None, reference_name: str | None,
         config: dict[str, Any], higher_is_better: bool = True, **extra: Any) -> None:
    ratio = None
    if reference is not None:
        ratio = ours / reference if higher_is_better else reference / ours
    line = {"bench": bench, "metric": metric, "ours": round(ours, 4), "reference": None if reference is None else round(reference, 4),
            "ratio": None if ratio is None else round(ratio, 4), "higher_is_better": higher_is_better,
            "reference_name": reference_name, "config": config, **extra}
    print(json.dumps(line), flush=True)
