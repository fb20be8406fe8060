"""English -> Spanish translation on the bundled Bible verse pairs, trained for at most 45 minutes on
this CPU: detokenised sacreBLEU and chrF on the test books (beam 4).

    python benchmarks/translation_quality.py [--quick] [--root runs] [--minutes 45]

Runs ``python -m tfm fit --config configs/translation_small_bible.yaml`` with
``--trainer.max_time`` set to the budget, then tests the weights it ends with on
the test books (II Chronicles and Mark: books no training or validation pair comes from) with
beam search, k = 4. The budget covers training and the validations; the final test decode is
timed apart. ``--quick`` trains a few steps only.
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

CONFIG = "configs/translation_small_bible.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--root", default=None, help="run folder root (default: a temporary folder)")
    ap.add_argument("--minutes", type=int, default=45, help="training budget")
    add_runtime_args(ap, cli=True)
    args, extra = ap.parse_known_args()
    extra = cli_runtime_overrides(args) + extra  # --device / --precision as the CLI's own options
    root = args.root or tempfile.mkdtemp(prefix="tfm-bench-")
    if args.quick:
        overrides = ["--trainer.max_steps=5", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", "--model.bleu_every_n_epochs=1"]
    else:
        overrides = [f"--trainer.max_time=00:00:{args.minutes:02d}:00"]
    t0 = time.perf_counter()
    cli = tfm_main(["fit", "--config", CONFIG, f"--run.root={root}", "--run.name=translation_quality", "--run.test_after_fit=false",
                    *overrides, *extra])
    train_s = time.perf_counter() - t0
    run = Path(cli.trainer.default_root_dir)
    t1 = time.perf_counter()
    # the weights the budget ends with (last.ckpt), in a run of their own beside the training run
    test = tfm_main(["test", "--config", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"--run.root={root}",
                     "--run.name=translation_quality_test", *(["--trainer.limit_test_batches=2"] if args.quick else [])])
    test_s = time.perf_counter() - t1
    m = test.trainer.callback_metrics
    emit("translation_quality", "test_bleu", float(m["test/bleu"]), None, None,
         {"config": CONFIG, "overrides": overrides + extra, "budget_min": args.minutes, "quick": args.quick, "beam": test.model.decoding.num_beams},
         test_chrf=round(float(m["test/chrf"]), 2), test_rougeL=round(float(m["test/rougeL"]), 4), test_loss=round(float(m["test/loss"]), 4),
         train_wall_s=round(train_s, 1), test_decode_s=round(test_s, 1), steps=cli.trainer.global_step, epochs=cli.trainer.current_epoch,
         test_sentences=len(test.model.decoded), run=str(run))


if __name__ == "__main__":
    main()
