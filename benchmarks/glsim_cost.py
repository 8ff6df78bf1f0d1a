"""GLSim's crop pass made cheaper: inference throughput of each option beside the plain ViT and standard GLSim.

Everything through ``fgvc.benchmark`` (same run, models taking turns run by run, medians with the range of the
runs, each ratio the median of the rounds' own ratios, the machine's load average stated). Rows:

* ``vit``; ``glsim`` (official: the crop resized to the input size and re-encoded); ``glsim_nocrop`` (one pass);
* ``glsim_half`` / ``glsim_quarter``: ``crop_size=0.5`` / ``0.25`` (a quarter / a sixteenth of the tokens);
  ``glsim_half_pe``: ``crop_size=0.5`` with its own learned position embedding (``crop_pos_embed="learned"``);
* ``glsim_tokens``: ``crop_mode="tokens"`` with the boxes random weights select (nearly the whole image: its
  worst case); ``glsim_tokens_box50``: the same pass on a centred box of half of each side (a quarter of the
  patches; ``_fixed_box.py``, a cost instrument), the cost a trained model's box of that size gives.

``--batched`` instead measures what running both passes as one batched forward would give: one encoder forward
of 2B images against two of B, in turn. (GLSim cannot batch its own two passes: the crop is chosen from the
first pass's output, so the second cannot start before the first ends.)

    OMP_NUM_THREADS=1 python benchmarks/glsim_cost.py --threads 1 --out benchmarks/results/cpu_deit_tiny_glsim_options_1thread
    OMP_NUM_THREADS=1 python benchmarks/glsim_cost.py --threads 1 --batched
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from _fixed_box import FIXED_BOX
from _targets import targets_markdown

import fgvc
from fgvc.studies.benchmark import timed_rounds

OPTIONS = [
    "glsim",
    ("glsim_half", "glsim", dict(crop_size=0.5)),
    "glsim_half_pe",
    ("glsim_quarter", "glsim", dict(crop_size=0.25)),
    "glsim_tokens",
    ("glsim_tokens_box50", FIXED_BOX, dict(crop_mode="tokens", box_side=0.5)),
    "glsim_nocrop",
]


def batched(args: argparse.Namespace) -> str:
    """One encoder forward of 2B images against two of B images (the models' weights shared), in turn."""
    lines = [f"encoder {args.backbone}, {torch.get_num_threads()} threads, B = {args.batch_size}, median (range) "
             f"of {args.repeats} rounds after {args.warmup}", "",
             "| size | 2 x forward(B) ms | forward(2B) ms | one batched / two passes |", "|---|---|---|---|"]
    for size in args.img_size:
        bb = fgvc.create_model("vit", backbone=args.backbone, num_classes=200, img_size=size).backbone.eval()
        x = torch.randn(2 * args.batch_size, 3, size, size)
        a, b = x[: args.batch_size], x[args.batch_size :]
        with torch.inference_mode():
            fns = {"two": lambda bb=bb, a=a, b=b: (bb(a), bb(b)), "one": lambda bb=bb, x=x: bb(x)}
            t = timed_rounds(fns, torch.device("cpu"), args.repeats, args.warmup)
        ratios = [o / w for o, w in zip(t["one"], t["two"], strict=True)]
        lines.append(f"| {size} | {statistics.median(t['two']) * 1e3:.0f} | {statistics.median(t['one']) * 1e3:.0f} "
                     f"| {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="deit_tiny_patch16_224", help="timm ViT name (random weights)")
    parser.add_argument("--img-size", type=int, nargs="+", default=[224, 448], help="input sizes")
    parser.add_argument("--batch-size", type=int, default=4, help="images per batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batched", action="store_true", help="measure one forward of 2B against two of B instead")
    parser.add_argument("--out", default=None, help="folder for methods.csv, benchmark.md (and batched.md)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batched:
        text = batched(args)
        print(text)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "batched.md").write_text(text + "\n")
        return
    result = fgvc.benchmark(OPTIONS, backbone=args.backbone, img_sizes=args.img_size, batch_size=args.batch_size,
                          device=args.device, repeats=args.repeats, warmup=args.warmup, train=False, memory=False,
                          selection=False, timm_reference=False, threads=args.threads, progress=True)
    print(result.to_markdown() + targets_markdown(result.rows))
    # the tokens pass's length: the padded sequence of each batch (boxes as these random weights select them)
    for size in args.img_size:
        model = fgvc.create_model("glsim", backbone=args.backbone, num_classes=200, img_size=size,
                                  crop_mode="tokens").eval()
        torch.manual_seed(0)
        with torch.inference_mode():
            boxes = model(torch.randn(args.batch_size, 3, size, size)).boxes
        ph, pw = model.backbone.patch_size
        patches = ((boxes[:, 2] - boxes[:, 0]) // pw * ((boxes[:, 3] - boxes[:, 1]) // ph)).tolist()
        total = model.backbone.grid_size[0] * model.backbone.grid_size[1]
        print(f"{size} px: glsim_tokens boxes hold {patches} of {total} patches (random weights); the pass runs on "
              f"1 + {max(patches)} tokens")
    if args.out:
        print("written: " + ", ".join(str(p) for p in result.save(args.out)))


if __name__ == "__main__":
    main()
