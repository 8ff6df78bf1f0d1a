"""Draws docs/images/reliability.png: the demo's four models before and after temperature scaling.

    HF_HUB_OFFLINE=1 fgvc demo --out fgvc_demo --no-progress   # about 2.5 minutes on 2 CPU cores
    python scripts/calibration_figure.py --demo fgvc_demo       # docs/images/reliability.png, seconds

Reads ``DIR/<method>/best.safetensors``, fits one temperature per model on the demo's validation split
(``fgvc.calibrate``, never on test), scores the test split with ``fgvc.evaluate`` and draws
``fgvc.viz.plot_reliability`` as trained (left) and calibrated (right); prints the numbers of the calibration
table in docs/results.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import fgvc  # noqa: E402
from fgvc.studies.demo import FULL  # noqa: E402
from fgvc.viz import plot_reliability  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", required=True, help="a folder `fgvc demo --out` wrote (its default settings)")
    parser.add_argument("--out", default="docs/images/reliability.png", help="the PNG (default: %(default)s)")
    args = parser.parse_args()
    data = FULL.splits()
    results = {}
    for method in ("vit", "glsim", "dcal", "transfg_nodropout"):
        path = Path(args.demo) / method / "best.safetensors"
        if not path.is_file():
            raise SystemExit(f"{path} not found: run `fgvc demo --out {args.demo}` with its default methods first")
        model = fgvc.load_model(path)
        fgvc.calibrate(model, data["val"])
        r = fgvc.evaluate(model, data["test"], progress=False)
        results[method.replace("_nodropout", " (no dropout)")] = r
        print(f"{method}: top-1 {r.top1:.1f}, T {model.temperature:.2f}, ECE {r.ece:.3f} -> {r.ece_calibrated:.3f}")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    plot_reliability(results, ax=axes[0], title="as trained", pyplot=False)
    plot_reliability(results, calibrated=True, ax=axes[1], title="after temperature scaling (fitted on val)",
                     pyplot=False)
    fig.suptitle(f"Reliability of the fgvc demo's models: {len(data['test'])} synthetic test images, 15 bins")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
