"""The GPU suite (``make bench-gpu``): every task at its GPU size on one CUDA device, then the
side-by-side benchmarks there.

    python benchmarks/gpu_suite.py [--device cuda] [--precision bf16-mixed] [--steps 100]
    python benchmarks/gpu_suite.py --quick      # tiny sizes on this CPU: checks the suite runs

1. Training through the CLI, as a user runs it: each task's GPU-size config (``bert_base``,
   ``vit_base`` on synthetic 224 px JPEGs written to a temporary ImageFolder, ``translation_base``,
   ``bert_base_topics``, ``vit_base_seg_scenes``, ``vit_base_det_scenes``) trains ``--steps``
   optimizer steps with its own clipping, in ``--precision``, with tfm's GPU defaults (DataLoader
   workers, pinned memory). Reported from the run's own throughput monitor over its last window
   of steps (data loading included): steps/s, samples/s, tokens/s, and MFU: the FLOPs of one
   training step (counted by ``FlopCounterMode``) times steps/s over the matmul peak measured on
   this device in this precision at the start of the suite.
2. The side-by-side benchmarks (BERT vs HF, ViT vs timm, translation training and decoding vs HF)
   with ``--device`` and ``--precision``, each in a process of its own.

Nothing downloads: the bundled data, generated scenes and synthetic images. One JSON line per case,
the last lines printed. ``--quick``: ``--device cpu``, tiny models and a few steps (bf16 autocast
runs on a CPU, slowly), every benchmark with ``--smoke`` in this process: a test runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import PRECISIONS, Runtime, emit  # noqa: E402

SIDE_BY_SIDE = ["bert_pretrain_throughput", "vit_throughput", "translation_train_throughput", "translation_decode_speed"]
QUIET = ["--run.wandb=false", "--run.media_images=0", "--run.test_after_fit=false", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0"]
TINY_VIT_B = ["--model.depth=2", "--model.dim=64", "--model.num_heads=2"]
TINY_SCENES = [*TINY_VIT_B, "--data.batch_size=2", "--data.num_val_scenes=2", "--data.num_test_scenes=2"]
# case -> (config, overrides on the GPU, overrides with --quick)
CASES: dict[str, tuple[str, list[str], list[str]]] = {
    "bert_base": ("configs/bert_base.yaml", [], ["--model.depth=2", "--data.batch_size=4", "--data.max_seq_length=64"]),
    "vit_base": ("configs/vit_base.yaml", ["--data.dataset={images}"],
                 ["--data.dataset={images}", *TINY_VIT_B, "--data.batch_size=4", "--data.image_size=32"]),
    "translation_base": ("configs/translation_base.yaml", [],
                         ["--model.encoder_layers=1", "--model.decoder_layers=1", "--data.vocab_size=2000", "--data.max_tokens=512"]),
    "bert_base_topics": ("configs/bert_base_topics.yaml", [], ["--model.depth=2", "--data.batch_size=4"]),
    "vit_base_seg_scenes": ("configs/vit_base_seg_scenes.yaml", [], TINY_SCENES),
    "vit_base_det_scenes": ("configs/vit_base_det_scenes.yaml", [], TINY_SCENES),
}


def synthetic_images(root: Path, n: int, size: int, classes: int = 10) -> Path:
    """An ImageFolder of ``n`` random JPEGs of ``size`` px (``root/train/<class>/*.jpg``)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / "train" / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=90)
    return root


def train_case(name: str, config: str, overrides: list[str], steps: int, args: argparse.Namespace, peak: float, scratch: Path) -> None:
    from tfm.callbacks import ThroughputMonitor
    from tfm.cli import main as tfm_main

    window = max(steps // 4, 1)  # the last window of steps is the one reported
    device = [f"--trainer.accelerator={'gpu' if args.device.startswith('cuda') else 'cpu'}", "--trainer.devices=1"]
    argv = ["fit", "--config", config, f"--run.root={scratch / 'runs'}", f"--run.name={name}", *QUIET, *device,
            f"--trainer.precision={args.precision}", f"--trainer.max_steps={steps}", f"--trainer.log_every_n_steps={window}",
            *overrides]
    t0 = time.perf_counter()
    cli = tfm_main(argv)
    wall = time.perf_counter() - t0
    m = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("perf/")}
    monitor = next(c for c in cli.trainer.callbacks if isinstance(c, ThroughputMonitor))
    steps_per_s = m.get("perf/steps_per_s", float("nan"))
    mfu = monitor.flops_per_batch * steps_per_s / peak if monitor.flops_per_batch else None
    emit("gpu_train", "steps_per_s", steps_per_s, None, None,
         {"case": name, "config": config, "overrides": overrides, "steps": steps, "window": window, **Runtime(args.device, args.precision).describe(),
          "num_workers": cli.trainer.train_dataloader.num_workers, "pin_memory": cli.trainer.train_dataloader.pin_memory,
          "gradient_clip_val": cli.trainer.gradient_clip_val},
         samples_per_s=round(m.get("perf/samples_per_s", 0.0), 1), tokens_per_s=round(m.get("perf/tokens_per_s", 0.0), 1),
         mfu=None if mfu is None else round(mfu, 4), step_tflop=round((monitor.flops_per_batch or 0) / 1e12, 4),
         peak_tflops=round(peak / 1e12, 2), wall_s=round(wall, 1), global_step=cli.trainer.global_step)
    del cli
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def side_by_side(script: str, args: argparse.Namespace) -> list[str]:
    """The JSON lines of one side-by-side benchmark on ``--device`` in ``--precision``."""
    argv = ["--device", args.device, "--precision", args.precision, *(["--smoke"] if args.quick else [])]
    if args.quick:  # a smoke run: in this process (each new Python re-imports torch, transformers, timm)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            importlib.import_module(f"benchmarks.{script}").main(argv)
        text, ok = out.getvalue(), True
    else:
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *argv], capture_output=True, text=True)
        text, ok = proc.stdout, proc.returncode == 0
        if not ok:
            print(proc.stderr[-3000:], file=sys.stderr)
    lines = [ln for ln in text.splitlines() if ln.startswith('{"bench"')]
    if not ok or not lines:
        raise SystemExit(f"{script} failed")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --quick)")
    ap.add_argument("--precision", default="bf16-mixed", choices=list(PRECISIONS))
    ap.add_argument("--steps", type=int, default=None, help="training steps per task (default: 100; 4 with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes on the CPU: checks that the suite runs")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated training cases (default: all)")
    ap.add_argument("--skip_side_by_side", action="store_true")
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.quick else "cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench-gpu needs a CUDA GPU (none is visible); `make bench-gpu QUICK=1` runs the suite at tiny sizes on the CPU")
    steps = args.steps or (4 if args.quick else 100)
    rt = Runtime(args.device, args.precision)
    os.environ.setdefault("WANDB_MODE", "offline")
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")  # the suite's own argv is not the CLI's
    print(f"== gpu suite on {rt.describe()['device']} in {args.precision}", flush=True)
    t0 = time.perf_counter()
    peak = rt.peak_flops()
    print(f"matmul peak measured: {peak / 1e12:.1f} TFLOP/s", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="tfm-gpu-suite-"))
    lines: list[str] = []
    try:
        images = synthetic_images(scratch / "images", n=64 if args.quick else 2048, size=32 if args.quick else 224)
        for name in args.cases.split(","):
            config, gpu, quick = CASES[name]
            overrides = [o.format(images=images) for o in (quick if args.quick else gpu)]
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                train_case(name, config, overrides, steps, args, peak, scratch)
            lines += [ln for ln in out.getvalue().splitlines() if ln.startswith('{"bench"')]
            print(f"{name}: {json.loads(lines[-1])['ours']:.2f} steps/s ({time.perf_counter() - t0:.0f} s)", flush=True)
            shutil.rmtree(scratch / "runs", ignore_errors=True)
        if not args.skip_side_by_side:
            for script in SIDE_BY_SIDE:
                lines += side_by_side(script, args)
                print(f"{script} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"suite: {time.perf_counter() - t0:.0f} s", flush=True)
    for ln in lines:  # the JSON lines come last
        print(ln, flush=True)


if __name__ == "__main__":
    main()
