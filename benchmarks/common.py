"""Shared by the benchmarks: the device and precision options, one training step under them,
interleaved timing and the JSON result line (see DESIGN.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from typing import Any, Callable

import torch

PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def add_runtime_args(ap: argparse.ArgumentParser, cli: bool = False) -> None:
    """``--device`` and ``--precision``, which every benchmark takes, and ``--smoke`` (tiny shapes,
    one repetition). ``cli``: a benchmark of ``python -m tfm`` runs, whose defaults are tfm's own
    (the GPU when there is one, bf16-mixed there)."""
    ap.add_argument("--device", default=None if cli else "cpu",
                    help="cpu, cuda or cuda:N (default: " + ("tfm's: a GPU when there is one)" if cli else "cpu)"))
    ap.add_argument("--precision", default=None if cli else "32-true", choices=list(PRECISIONS),
                    help="as Lightning's: 32-true, or autocast to bf16 / fp16 (fp16 with a gradient scaler)"
                    + (" (default: tfm's, bf16-mixed on GPUs)" if cli else ""))
    if not cli:
        ap.add_argument("--quick", action="store_true", help="fewer cases and repetitions")
        ap.add_argument("--smoke", action="store_true", help="tiny shapes and one repetition: checks that the script runs, measures nothing")
        ap.add_argument("--reps", type=int, default=None, help="timed repetitions of each side")
        ap.add_argument("--threads", type=int, default=None, help="torch threads on both sides (default: torch's)")


class Runtime:
    """Where and in what precision a benchmark runs both sides: autocast as Lightning's
    ``MixedPrecision`` does, a ``GradScaler`` for fp16, a synchronised clock on GPUs."""

    def __init__(self, device: str = "cpu", precision: str = "32-true") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"--device {device}: no CUDA GPU is visible")
        self.precision = precision
        self.dtype = PRECISIONS[precision]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Runtime":
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        return cls(args.device, args.precision)

    def pick(self, args: argparse.Namespace, smoke: Any, quick: Any, full: Any, gpu: Any = None) -> Any:
        """What a benchmark runs in this mode: ``--smoke``, a GPU (``gpu``, when given), ``--quick``, or the full run."""
        if args.smoke:
            return smoke
        if self.device.type == "cuda" and gpu is not None:
            return gpu
        return quick if args.quick else full

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def to(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_step(self, loss_fn: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        """One training step: the forward under autocast, backward (scaled for fp16), optimizer step."""
        scaler = torch.amp.GradScaler(self.device.type) if self.dtype is torch.float16 else None

        def step() -> None:
            with self.autocast():
                loss = loss_fn()
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
        return step

    def peak_flops(self) -> float:
        """The matmul peak this device reaches now in the benchmark's precision (fp32 on a CPU,
        where bf16 matmuls are emulated)."""
        from tfm.callbacks import measure_matmul_peak

        dtype = torch.float32 if self.device.type == "cpu" or self.dtype is None else self.dtype
        return measure_matmul_peak(dtype=dtype, device=self.device)

    def describe(self) -> dict[str, Any]:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        info: dict[str, Any] = {"device": name, "precision": self.precision}
        if self.device.type == "cpu":
            info["threads"] = torch.get_num_threads()
        return info


def interleaved(cases: dict[str, Callable[[], Any]], warmup: int, reps: int) -> dict[str, float]:
    """Median seconds per call of each case, measured A B A B ... after ``warmup`` calls each."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
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


def cli_runtime_overrides(args: argparse.Namespace) -> list[str]:
    """The CLI overrides that put a quality benchmark's training run on ``--device`` in ``--precision``."""
    out = [f"--trainer.precision={args.precision}"] if args.precision else []
    if args.device:
        out.append(f"--trainer.accelerator={'gpu' if args.device.startswith('cuda') else 'cpu'}")
        out.append(f"--trainer.devices=[{args.device.split(':')[1]}]" if ":" in args.device else "--trainer.devices=1")
    return out
