"""Cost of GLSim, DCAL and TransFG against the plain ViT, measured in the same run on the same backbone.

For each input size, on one backbone with the same random weights for all four models (timing needs no
pretrained weights):

* **inference**: wall time of one batch (``inference_mode``, eval mode) and its ratio to the ViT's;
* **training step**: forward + the method's loss + backward + AdamW step, and its ratio to the ViT's;
  also DCAL without PWCA (``pwca=False``), so that PWCA's share of DCAL's training step is seen, and the
  matmul-type FLOPs of the training steps (forward + backward) of DCAL and DCAL without PWCA over the ViT's;
* **selection step alone**, as a share of one encoder forward (the backbone's ``forward``, fused attention):
  GLSim's CLS-patch similarity + top-k + box on the final tokens; DCAL's CLS-row attention rollout over the
  blocks before GLCA + top-R, from attention maps already recorded; TransFG's part selection (CLS row of
  the attention product of the first L-1 blocks, per-head argmax) from recorded maps. For reference, also
  the full-matrix versions (all rows of the rollout; the official TransFG product of whole (T, T) maps),
  which is what the GLSim paper's figures count.

Times are medians of ``--repeats`` runs after ``--warmup`` runs (CUDA synchronized); the models' inference
and training runs take turns (one run of each model, then the next round), so that a change in the load of
a shared machine does not tilt the ratios. Selection shares are **wall-time** shares; the GLSim paper
(Rios et al., 2024) reports FLOP shares of the backbone: about 0.003% (GLSim), 1-14% (rollout) and 47-781%
(TransFG's part selection). FLOP shares are printed too, counted by
``torch.utils.flop_counter.FlopCounterMode`` with attention on the math backend: it counts matmul-type ops
only (linear, conv, bmm), so GLSim's cosine similarity (no matmul) is given as the analytic ``6 B N D``.

Targets (issue 3): DCAL inference <= 1.15x the ViT's time, DCAL training step <= 2x (the paper: 1.8x).
No assertion is made: the figures are printed. PWCA (training only) runs every block a second time, with
its backward and twice the keys, so its FLOPs alone are the ViT's training step plus the attention's share
again (the printed "PWCA alone"): with SA, DCAL's training step has at least 2x the ViT's FLOPs plus that
share, before GLCA and the rollout.

    python benchmarks/method_cost.py                                   # deit_tiny, 224 and 448 px, batch 4
    python benchmarks/method_cost.py --backbone vit_base_patch16_224 --img-size 448 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch
from _timing import timed
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import fgvc
from fgvc.layers import attention_rollout, rollout_map
from fgvc.methods.dcal import local_query_count
from fgvc.methods.glsim import cls_patch_similarity, select_box
from fgvc.methods.transfg import part_selection

METHODS = ("vit", "glsim", "dcal", "transfg", "dcal_nopwca")  # the last: DCAL with pwca=False
TARGETS = dict(inference=1.15, train=2.0)  # DCAL's time over the ViT's


def count_flops(fn: Callable[[], Any]) -> int:
    """Matmul-type FLOPs of ``fn()`` (attention on the math backend, so it is counted as two bmm)."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def count_train_flops(model: fgvc.FGVCModel, x: torch.Tensor, y: torch.Tensor) -> int:
    """Matmul-type FLOPs of one forward + loss + backward of ``model`` in training mode."""
    model.train()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model.loss(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    return counter.get_total_flops()


def timed_in_turn(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int
) -> dict[str, float]:
    """Median seconds of each ``fn()``, the functions taking turns run by run: a change in the machine's
    load (a shared CPU) then reaches every model's figure alike, so the ratios to the ViT hold."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            t = timed(fn, device, 1, 0)
            if i >= warmup:
                times[name].append(t)
    return {name: statistics.median(t) for name, t in times.items()}


def train_step(model: fgvc.FGVCModel, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One optimizer step of ``model`` on (x, y): forward, the method's loss, backward, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        loss = model.loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure(args: argparse.Namespace, size: int, device: torch.device) -> dict[str, Any]:
    """All figures at one input size."""
    b = args.batch_size
    common = dict(backbone=args.backbone, num_classes=200, img_size=size, backbone_kwargs=args.backbone_kwargs)
    models = {}
    for method in METHODS:
        torch.manual_seed(0)
        options = dict(pwca=False) if method == "dcal_nopwca" else {}
        models[method] = fgvc.create_model(method.removesuffix("_nopwca"), **common, **options).to(device)
    x = torch.randn(b, 3, size, size, device=device)
    y = torch.randint(0, 200, (b,), device=device)
    run = dict(device=device, repeats=args.repeats, warmup=args.warmup)

    r: dict[str, Any] = dict(size=size, infer={}, train={}, select={}, flops={})
    with torch.inference_mode():
        for model in models.values():
            model.eval()
        r["infer"] = timed_in_turn({m: lambda m=m: models[m](x) for m in models}, **run)
    for model in models.values():
        model.train()
    r["train"] = timed_in_turn({m: train_step(model, x, y) for m, model in models.items()}, **run)
    for model in models.values():
        model.zero_grad(set_to_none=True)  # free the gradients
        model.eval()

    bb = models["vit"].backbone
    prefix, depth, (rows, cols) = bb.num_prefix_tokens, bb.depth, bb.grid_size
    glca_index, top_k = models["dcal"].glca_index, models["glsim"].top_k
    n_queries = local_query_count(models["dcal"].glca_ratio, rows * cols)
    with torch.inference_mode():
        enc = bb(x, return_attention=True)
        tokens, maps = enc.tokens, enc.attentions  # (B, T, D); per block (B, H, T, T)
        rollout_maps, part_maps = maps[:glca_index], maps[: depth - 1]  # what DCAL / TransFG select from

        def full_transfg() -> torch.Tensor:  # official Part_Attention: whole (T, T) products, then the CLS row
            product = part_maps[0]
            for attn in part_maps[1:]:
                product = attn @ product  # (B, H, T, T)
            return product[:, :, 0, prefix:].argmax(-1)

        steps = {
            "glsim: similarity + top-k + box": lambda: select_box(
                cls_patch_similarity(tokens, prefix, (rows, cols)), top_k, bb.patch_size, bb.img_size
            ),
            "dcal: rollout (CLS row) + top-R": lambda: rollout_map(rollout_maps, prefix).topk(n_queries, -1),
            "transfg: part selection (CLS row)": lambda: part_selection(part_maps, prefix),
            "ref: full rollout (all rows)": lambda: attention_rollout(rollout_maps)[:, 0, prefix:].topk(
                n_queries, -1
            ),
            "ref: full TransFG product": full_transfg,
        }
        r["encoder"] = timed(lambda: bb(x), **run)
        for name, fn in steps.items():
            # the small steps run many times per timing to rise above the timer's resolution
            calls = max(1, min(100, int(1e-2 / max(timed(fn, device, 1, 1), 1e-7))))
            r["select"][name] = timed(lambda f=fn, c=calls: [f() for _ in range(c)], **run) / calls
    r["flops"]["encoder"] = count_flops(lambda: bb(x))
    for name, fn in steps.items():
        r["flops"][name] = count_flops(fn)
    r["flops"]["glsim: similarity + top-k + box"] = 6 * b * rows * cols * bb.embed_dim  # analytic, see doc
    r["train_flops"] = {m: count_train_flops(models[m], x, y) for m in ("vit", "dcal", "dcal_nopwca")}
    r.update(tokens=tokens.shape[1], grid=(rows, cols), depth=depth, glca_index=glca_index)
    return r


def report(args: argparse.Namespace, r: dict[str, Any]) -> bool:
    """Print the tables of one size; returns whether DCAL's targets are met."""
    b, size = args.batch_size, r["size"]
    rows, cols = r["grid"]
    print(f"\n=== {size}x{size} px: {rows}x{cols} patches, T = {r['tokens']} tokens, batch {b} ===")
    print(f"{'model':<12}{'inference ms':>14}{'img/s':>9}{'x ViT':>8}{'train step ms':>16}{'img/s':>9}{'x ViT':>8}")
    for m in METHODS:
        ti, tt = r["infer"][m], r["train"][m]
        print(f"{m:<12}{ti * 1e3:>14.1f}{b / ti:>9.1f}{ti / r['infer']['vit']:>8.2f}"
              f"{tt * 1e3:>16.1f}{b / tt:>9.1f}{tt / r['train']['vit']:>8.2f}")
    enc_t, enc_f = r["encoder"], r["flops"]["encoder"]
    print(f"\nselection step alone vs one encoder forward ({enc_t * 1e3:.1f} ms, {enc_f / 1e9:.2f} GFLOP counted);"
          f" DCAL rolls out blocks 1..{r['glca_index']}, TransFG multiplies blocks 1..{r['depth'] - 1}")
    print(f"{'step':<36}{'ms':>10}{'% time':>10}{'MFLOP':>12}{'% FLOP':>10}")
    for name, t in r["select"].items():
        f = r["flops"][name]
        star = "*" if name.startswith("glsim") else " "
        print(f"{name:<36}{t * 1e3:>10.3f}{100 * t / enc_t:>10.3f}{f / 1e6:>11.2f}{star}{100 * f / enc_f:>10.3f}")
    inf = r["infer"]["dcal"] / r["infer"]["vit"]
    tr = r["train"]["dcal"] / r["train"]["vit"]
    pwca = (r["train"]["dcal"] - r["train"]["dcal_nopwca"]) / r["train"]["vit"]
    fl = {m: f / r["train_flops"]["vit"] for m, f in r["train_flops"].items()}
    print(f"\nDCAL training step = ViT's x ({tr:.2f}): PWCA {pwca:.2f} (dcal - dcal_nopwca) + the rest "
          f"{tr - pwca:.2f}; training-step FLOPs x ViT's: dcal {fl['dcal']:.2f}, dcal_nopwca "
          f"{fl['dcal_nopwca']:.2f}, so PWCA alone {fl['dcal'] - fl['dcal_nopwca']:.2f}")
    ok = inf <= TARGETS["inference"] and tr <= TARGETS["train"]
    print(f"DCAL targets: inference {inf:.2f}x <= {TARGETS['inference']}x: {'met' if inf <= TARGETS['inference'] else 'NOT met'}; "
          f"training step {tr:.2f}x <= {TARGETS['train']}x (paper 1.8x): {'met' if tr <= TARGETS['train'] else 'NOT met'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="deit_tiny_patch16_224")
    parser.add_argument("--depth", type=int, default=None, help="override the backbone's depth (quick runs)")
    parser.add_argument("--img-size", type=int, nargs="+", default=[224, 448])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    args.backbone_kwargs = None if args.depth is None else dict(depth=args.depth)

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"backbone {args.backbone}{'' if args.depth is None else f' (depth {args.depth})'}, batch {args.batch_size}, "
          f"median of {args.repeats} runs after {args.warmup} warm-up")
    print("cost ratios are time / ViT time; selection shares: wall time (and matmul FLOPs, * = analytic)")
    results = [measure(args, size, device) for size in args.img_size]
    met = [report(args, r) for r in results]
    print(f"\nall DCAL targets met: {all(met)}")


if __name__ == "__main__":
    main()
