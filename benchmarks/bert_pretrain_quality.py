"""BERT-Mini pretrained on the bundled Brown corpus for a fixed 15-minute budget on this CPU:
masked-token accuracy on held-out documents.

    python benchmarks/bert_pretrain_quality.py [--quick] [--root runs]

Runs ``python -m tfm fit --config configs/bert_mini.yaml`` with ``--trainer.max_time`` set to
the budget and ``--trainer.max_steps`` to the steps that fit in it on this machine (so that the
linear learning-rate decay ends with the budget), then tests the best checkpoint (by validation
loss) on the test documents, which neither the training nor the validation saw. Fine-tuning
configs can start from the checkpoint it leaves (``--root runs`` keeps it in
``runs/bert_pretrain_quality/<version>/checkpoints``). ``--quick`` trains a few steps only.
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

CONFIG = "configs/bert_mini.yaml"
BUDGET_S = 15 * 60
STEPS = 700  # what fits in the budget on the 2-core development machine (~1.2 s a step); max_time stops it anyway


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--root", default=None, help="run folder root (default: a temporary folder)")
    ap.add_argument("--steps", type=int, default=STEPS)
    add_runtime_args(ap, cli=True)
    args, extra = ap.parse_known_args()
    extra = cli_runtime_overrides(args) + extra  # --device / --precision as the CLI's own options
    root = args.root or tempfile.mkdtemp(prefix="tfm-bench-")
    if args.quick:
        overrides = ["--trainer.max_steps=5", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2"]
    else:
        seconds = BUDGET_S
        overrides = [f"--trainer.max_steps={args.steps}", f"--trainer.max_time=00:00:{seconds // 60:02d}:00",
                     "--trainer.max_epochs=1000"]
    t0 = time.perf_counter()
    cli = tfm_main(["fit", "--config", CONFIG, f"--run.root={root}", "--run.name=bert_pretrain_quality", "--run.test_after_fit=true",
                    *overrides, *extra])
    wall = time.perf_counter() - t0
    m = cli.trainer.callback_metrics
    emit("bert_pretrain_quality", "test_mlm_acc", float(m["test/mlm_acc"]), None, None,
         {"config": CONFIG, "overrides": overrides + extra, "budget_s": BUDGET_S, "quick": args.quick},
         wall_time_s=round(wall, 1), steps=cli.trainer.global_step, test_perplexity=round(float(m["test/perplexity"]), 2),
         test_nsp_acc=round(float(m["test/nsp_acc"]), 4), test_sequences=len(cli.datamodule.test_set),
         checkpoint=str(cli.trainer.checkpoint_callback.best_model_path))


if __name__ == "__main__":
    main()
