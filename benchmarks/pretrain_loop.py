"""Compare the loss curves of pretraining runs (log.jsonl folders): a table every 20 steps and a plot.

The old loop logged the loss at step indices 0, 20, ... (after that many updates), fit after updates 20, 40, ...
(the loss of update k, computed after k - 1 updates): both are shown at their own numbers, one update apart.

    python benchmarks/pretrain_loop.py --out docs/images/pretrain_loop.png \\
        "old loop, seed 1000=RUN_A" "old loop, seed 1001=RUN_B" "fit, seed 1000=RUN_C"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve(folder: str) -> dict[int, tuple[float, float]]:
    """step -> (loss_cls, loss_loc) of a run's step lines."""
    out = {}
    for line in (Path(folder) / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "loss_cls" in r:
            out[r["step"]] = (r["loss_cls"], r["loss_loc"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=FOLDER")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    runs = {label: curve(folder) for label, folder in (r.split("=", 1) for r in args.runs)}
    steps = sorted({s for c in runs.values() for s in c})
    print("| step | " + " | ".join(f"{k} cls / loc" for k in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for s in steps:
        cells = [f"{c[s][0]:.2f} / {c[s][1]:.2f}" if s in c else "" for c in runs.values()]
        print(f"| {s} | " + " | ".join(cells) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (label, c), style in zip(runs.items(), ("-o", "--s", "-^", ":d"), strict=False):
        xs = sorted(c)
        for ax, i in zip(axes, (0, 1), strict=True):
            ax.plot(xs, [c[x][i] for x in xs], style, label=label, markersize=4)
    for ax, title in zip(axes, ("loss_cls (CLS + token labelling)", "loss_loc (similarity + rollout)"), strict=True):
        ax.set(title=title, xlabel="optimizer step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("fgvc pretrain, first steps of the shipped settings: the old loop and fit", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
