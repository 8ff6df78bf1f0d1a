"""Draws docs/images/parts.png: which parts each method looks at, on the synthetic data's one part (the detail).

    python scripts/parts_figure.py                                  # docs/images/parts.png, CPU, seconds
    python scripts/parts_figure.py --demo fgvc_demo --out parts.png  # the models `fgvc demo` fine-tuned

Without ``--demo`` every method is built on fgvc's shipped backbone (pretrained on synthetic images of other
classes, no download) and scored before any fine-tuning: where each method's selection looks, not what it
learned on these classes. With ``--demo DIR`` it reads ``DIR/<method>/best.safetensors``. Both score the test
split ``fgvc demo`` draws (its settings: 10 classes, 128 px images, a 31 px detail) with
``fgvc.evaluate(..., parts=True)`` and print each method's part table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import fgvc
from fgvc.studies.demo import FULL
from fgvc.viz import plot_parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/parts.png", help="the PNG (default: %(default)s)")
    parser.add_argument("--demo", default=None, help="a folder fgvc demo wrote (default: the shipped backbone)")
    parser.add_argument("--test", type=int, default=300, help="test images (default: %(default)s)")
    parser.add_argument("--radius", type=float, default=1.0, help="grid cells (default: %(default)s)")
    args = parser.parse_args()

    methods = ("vit", "glsim", "dcal", "transfg")
    test = FULL.splits()["test"] if args.test == FULL.test else fgvc.data.synthetic_splits(
        **dict(FULL.data_options(), test=args.test, train=0, val=0))["test"]
    results = {}
    for method in methods:
        if args.demo:
            folder = Path(args.demo) / method
            folder = folder if folder.is_dir() else Path(args.demo) / f"{method}_nodropout"
            model = fgvc.load_model(folder / "best.safetensors")
        else:
            model = fgvc.create_model(method, num_classes=FULL.num_classes, **FULL.model_options())
        results[method] = fgvc.evaluate(model, test, parts=True, part_radius=args.radius, progress=False)
        print(f"{method}:\n{results[method].parts_table()}\n")
    how = "fine-tuned by fgvc demo" if args.demo else "shipped backbone, before fine-tuning"
    fig = plot_parts(results, "peak", title=f"Which parts each method looks at: synthetic data's detail, {how}\n"
                     f"map peak within {args.radius:g} grid cell(s), {len(test)} test images", pyplot=False)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
