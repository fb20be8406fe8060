"""Run every benchmark (``--quick`` passes through) and print a table of their JSON lines.

    python benchmarks/run_all.py [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    flags = sys.argv[1:]
    rows, failed = [], []
    for script in sorted(HERE.glob("*.py")):
        if script.name in ("common.py", "run_all.py", "__init__.py", "gpu_suite.py"):  # gpu_suite: make bench-gpu
            continue
        print(f"== {script.name}", flush=True)
        proc = subprocess.run([sys.executable, str(script), *flags], capture_output=True, text=True)
        lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{\"bench\"")]
        if proc.returncode != 0 or not lines:
            failed.append(script.name)
            print(proc.stderr[-2000:])
        rows += lines
    print(f"\n{'bench':24} {'case':20} {'metric':14} {'ours':>10} {'reference':>10} {'ratio':>7}")
    for r in rows:
        case = r.get("config", {}).get("case", "")
        ref = "-" if r["reference"] is None else f"{r['reference']:.4g}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        print(f"{r['bench']:24} {case:20} {r['metric']:14} {r['ours']:>10.4g} {ref:>10} {ratio:>7}")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
