"""Fashion-MNIST test accuracy of the `make demo` recipe, and its wall time on this machine.

    python benchmarks/vit_fashion_quality.py [--quick]

Runs exactly ``python -m tfm fit --config configs/vit_tiny_fashion.yaml`` (training, then the
test of the best checkpoint on all 10,000 test images) and reports test top-1 accuracy and the
wall time from start to the end of the test. ``--quick`` trains a few steps only (a smoke test
of the benchmark, not a measurement).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)
os.environ.setdefault("WANDB_MODE", "offline")

from benchmarks.common import add_runtime_args, cli_runtime_overrides, emit  # noqa: E402
from tfm.cli import main as tfm_main  # noqa: E402

CONFIG = "configs/vit_tiny_fashion.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--root", default=None, help="run folder root (default: a temporary folder)")
    add_runtime_args(ap, cli=True)
    args, extra = ap.parse_known_args()
    extra = cli_runtime_overrides(args) + extra  # --device / --precision as the CLI's own options
    root = args.root or tempfile.mkdtemp(prefix="tfm-bench-")
    overrides = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=10", "--trainer.limit_val_batches=5"] if args.quick else []
    t0 = time.perf_counter()
    cli = tfm_main(["fit", "--config", CONFIG, f"--run.root={root}", "--run.name=vit_fashion_quality", *overrides, *extra])
    wall = time.perf_counter() - t0
    acc = float(cli.trainer.callback_metrics["test/acc1"])
    emit("vit_fashion_quality", "test_top1", acc, None, None,
         {"config": CONFIG, "overrides": overrides + extra, "test_images": 10000, "quick": args.quick},
         wall_time_s=round(wall, 1), epochs=cli.trainer.current_epoch, steps=cli.trainer.global_step,
         target={"test_top1": 0.90, "wall_time_s": 1200})


if __name__ == "__main__":
    main()
