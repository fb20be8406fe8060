"""Pretraining must pay: BERT-Mini fine-tuned from the pretraining benchmark's checkpoint vs the
same model from random weights, with the same fine-tuning budget, on (a) fortune topics and
(b) Brown POS tagging; test accuracy of each.

    python benchmarks/bert_pretrain_quality.py --root runs      # first: the pretrained checkpoint
    python benchmarks/bert_finetune_quality.py [--init runs/bert_pretrain_quality/<version>/checkpoints/<best>.ckpt] [--quick]

Both sides use the pretrained run's tokenizer, the same config, seed, steps and data; only the
initial weights of the encoder differ. One JSON line per task: ``ours`` = from the pretrained
checkpoint, ``reference`` = from random weights.
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
from tfm.runs import best_checkpoint, find_last_checkpoint  # noqa: E402

# task: (config, steps, extra arguments): the fine-tuning budget, the same for both sides
TASKS = {
    "fortune_topics": ("configs/bert_mini_topics.yaml", 450, []),
    "brown_pos": ("configs/bert_mini_pos_brown.yaml", 600, ["--trainer.val_check_interval=300", "--trainer.limit_val_batches=40"]),
}


def pretrained_checkpoint(root: Path) -> Path:
    last = find_last_checkpoint(root / "bert_pretrain_quality")
    if last is None:
        raise SystemExit(f"no pretraining checkpoint under {root}/bert_pretrain_quality: run benchmarks/bert_pretrain_quality.py --root {root} first")
    return best_checkpoint(last)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", default=None, help="the pretrained checkpoint (default: the best of the newest pretraining benchmark run)")
    ap.add_argument("--pretrain_root", default="runs")
    ap.add_argument("--quick", action="store_true")
    add_runtime_args(ap, cli=True)
    args, extra = ap.parse_known_args()
    extra = cli_runtime_overrides(args) + extra  # --device / --precision as the CLI's own options
    init = Path(args.init) if args.init else pretrained_checkpoint(Path(args.pretrain_root))
    run = init.parent.parent if init.parent.name == "checkpoints" else init.parent
    tokenizer = run / "tokenizer.json"
    root = tempfile.mkdtemp(prefix="tfm-bench-")
    for task, (config, steps, task_args) in TASKS.items():
        if args.quick:
            steps, task_args = 3, ["--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2"]
        acc, wall = {}, {}
        for side in ("pretrained", "random"):
            init_args = [f"--model.init_from={init}"] if side == "pretrained" else []
            t0 = time.perf_counter()
            cli = tfm_main(["fit", "--config", config, f"--run.root={root}", f"--run.name={task}-{side}", "--run.test_after_fit=true",
                            f"--data.tokenizer={tokenizer}", f"--trainer.max_steps={steps}", "--trainer.max_epochs=1000",
                            *task_args, *init_args, *extra])
            wall[side] = round(time.perf_counter() - t0, 1)
            acc[side] = float(cli.trainer.callback_metrics["test/acc"])
        emit("bert_finetune_quality", "test_acc", acc["pretrained"], acc["random"], "the same BERT-Mini from random weights",
             {"case": task, "config": config, "steps": steps, "init": str(init), "quick": args.quick},
             points_gained=round(100 * (acc["pretrained"] - acc["random"]), 2), wall_time_s=wall)


if __name__ == "__main__":
    main()
