"""COCO mAP@0.5 of the generated-scene detection recipe on 1,000 held-out test scenes, and its time.

    python benchmarks/vit_det_quality.py [--quick] [--minutes 30] [--steps auto|N] [--root runs] [--picture PNG]

Runs ``python -m tfm fit --config configs/vit_tiny_det_scenes.yaml`` within a training budget of
``--minutes`` (``--trainer.max_time``, validations included), then the test of the best
checkpoint on the 1,000 test scenes (generated from the Fashion-MNIST test images, never seen in
training), then ``predict`` on a few test scenes, which saves overlay pictures (predicted | true
boxes) and the COCO results file ``predictions/detections.json`` under the predict run.

``--steps auto`` (the default) sizes ``--trainer.max_steps`` to the budget from a 40-step probe
of this machine's speed (see ``vit_seg_quality.py``). Reports test mAP@0.5 (10 classes), mAP@[.5:.95],
mAP@0.75 and the times. ``--quick`` trains a few steps only (a smoke test, not a measurement).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.vit_seg_quality import run_quality  # noqa: E402

if __name__ == "__main__":
    run_quality("vit_det_quality", "configs/vit_tiny_det_scenes.yaml", "test/map_50", 0.70, 30.0, __doc__)
