"""DCAL's cost in detail: ``fgvc.benchmark`` with DCAL without PWCA beside it, and PWCA's share of the training step.

Everything is measured by ``fgvc.benchmark`` (see its module doc: same run, models taking turns, MACs under math
attention, selection shares); this script adds ``dcal_nopwca`` (DCAL with ``pwca=False``) and prints, per size,
what PWCA costs: the training step of DCAL = the ViT's x (PWCA = dcal - dcal_nopwca, + the rest), in time and
in training MACs, against DCAL's cost targets (inference <= 1.15x the ViT, training step <= 2x; the
paper reports 1.8x). PWCA (training only) runs every block a second time, with its backward and twice the
keys, so its MACs alone are the ViT's training step plus the attention's share again: with SA, DCAL's
training step has at least 2x the ViT's MACs plus that share, before GLCA and the rollout.

``--pwca-blocks 6 3`` adds DCAL with PWCA in the last T blocks only (the paper's T; ``dcal_T6``, ...), to see
what a cheaper PWCA costs; ``--dcal-only`` leaves GLSim and TransFG out (a quicker run).

    python benchmarks/method_cost.py                                   # deit_tiny, 224 and 448 px, batch 4
    python benchmarks/method_cost.py --dcal-only --pwca-blocks 9 6 3   # DCAL's training step against T
    python benchmarks/method_cost.py --backbone vit_base_patch16_224 --img-size 448 --device cuda
"""

from __future__ import annotations

import argparse

from _targets import targets_markdown

import fgvc

TARGETS = dict(inference=1.15, train=2.0)  # DCAL's time over the ViT's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="deit_tiny_patch16_224", help="timm ViT name (random weights)")
    parser.add_argument("--depth", type=int, default=None, help="override the backbone's depth (quick runs)")
    parser.add_argument("--img-size", type=int, nargs="+", default=[224, 448], help="input sizes")
    parser.add_argument("--batch-size", type=int, default=4, help="images per batch (at least 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--pwca-blocks", type=int, nargs="*", default=[], help="also DCAL with PWCA in the last T")
    parser.add_argument("--dcal-only", action="store_true", help="only vit and the DCAL variants")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    methods: list = ["vit", "dcal", "dcal_nopwca"] if args.dcal_only else ["vit", "glsim", "dcal", "transfg", "dcal_nopwca"]
    methods += [(f"dcal_T{t}", "dcal", dict(pwca_blocks=t)) for t in args.pwca_blocks]
    result = fgvc.benchmark(
        methods, backbone=args.backbone, threads=args.threads, img_sizes=args.img_size,
        batch_size=args.batch_size, device=args.device, repeats=args.repeats, warmup=args.warmup,
        backbone_kwargs=None if args.depth is None else dict(depth=args.depth), memory=False,
        timm_reference=False, progress=True,
    )
    print(result.to_markdown() + targets_markdown(result.rows))
    met = []
    for size in args.img_size:
        dcal, nopwca = result.row("dcal", size), result.row("dcal_nopwca", size)
        pwca = dcal.train_ratio - nopwca.train_ratio
        pwca_macs = dcal.train_macs_ratio - nopwca.train_macs_ratio
        print(f"\n{size} px: DCAL training step = ViT's x {dcal.train_ratio:.2f}: PWCA {pwca:.2f} (dcal - "
              f"dcal_nopwca) + the rest {dcal.train_ratio - pwca:.2f}; training MACs x ViT's: dcal "
              f"{dcal.train_macs_ratio:.2f}, dcal_nopwca {nopwca.train_macs_ratio:.2f}, so PWCA alone "
              f"{pwca_macs:.2f}")
        ok_inf = dcal.throughput_ratio >= 1 / TARGETS["inference"]
        ok_train = dcal.train_ratio <= TARGETS["train"]
        print(f"DCAL targets: inference time {1 / dcal.throughput_ratio:.2f}x <= {TARGETS['inference']}x: "
              f"{'met' if ok_inf else 'NOT met'}; training step {dcal.train_ratio:.2f}x <= {TARGETS['train']}x "
              f"(paper 1.8x): {'met' if ok_train else 'NOT met'}")
        met.append(ok_inf and ok_train)
        for t in args.pwca_blocks:
            row = result.row(f"dcal_T{t}", size)
            print(f"DCAL with PWCA in the last {t} blocks: training step {row.train_ratio:.2f}x the ViT's "
                  f"(training MACs {row.train_macs_ratio:.2f}x): {'met' if row.train_ratio <= TARGETS['train'] else 'NOT met'}")
    print(f"\nall DCAL targets met: {all(met)}")


if __name__ == "__main__":
    main()
