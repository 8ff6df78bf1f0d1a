"""Writes fgvc/recipes/<method>_<dataset>_<size>.yaml: one recipe per method x dataset x resolution.

The settings of each method come from its paper (and official code where the paper is silent); what the
papers do not say is marked "fgvc's choice". ``expected_top1`` is the paper's reported top-1 for exactly that
method, dataset and resolution, or null where the paper reports none (or where the number is only in a table
image that was not transcribed: never guessed). Run after changing a setting here, then commit the YAML files:

    python scripts/make_recipes.py
"""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "fgvc" / "recipes"
BACKBONE = "vit_base_patch16_224.orig_in21k"  # Google's original ViT-B/16 ImageNet-21k weights (ViT-B_16.npz)

DATASETS = {
    # name: (fgvc dataset, root, options)
    "cub": ("cub", "data/CUB_200_2011", {}),
    "cars": ("cars", "data/stanford_cars", {}),
    "aircraft": ("aircraft", "data/fgvc-aircraft-2013b", {"annotation_level": "variant"}),
    "nabirds": ("nabirds", "data/nabirds", {}),
}

GLSIM = "Rios, Hu, Lai: Global-Local Similarity for Efficient Fine-Grained Image Recognition with Vision Transformers, 2024"
DCAL = "Zhu et al.: Dual Cross-Attention Learning for Fine-Grained Visual Categorization and Object Re-Identification, CVPR 2022, Table 1"
TRANSFG = "He et al.: TransFG: A Transformer Architecture for Fine-Grained Recognition, AAAI 2022"

# (method, dataset, size) -> (expected top-1, source). Absent: null, "not reported" (see NOT_REPORTED).
EXPECTED = {
    ("glsim", "cub", 224): (90.93, f"{GLSIM} (CUB, 224 px)"),
    ("glsim", "cub", 448): (92.1, f"{GLSIM} (CUB, 448 px: about 92.1)"),
    ("dcal", "cub", 448): (91.4, f"{DCAL} (ViT-B/16: 90.8 -> 91.4)"),
    ("dcal", "cars", 448): (93.4, f"{DCAL} (ViT-B/16: 92.5 -> 93.4)"),
    ("dcal", "aircraft", 448): (91.5, f"{DCAL} (ViT-B/16: 90.0 -> 91.5)"),
    ("vit", "cub", 448): (90.8, f"{DCAL}, its ViT-B/16 baseline (trained with DCAL's settings, which this recipe uses)"),
    ("vit", "cars", 448): (92.5, f"{DCAL}, its ViT-B/16 baseline (trained with DCAL's settings, which this recipe uses)"),
    ("vit", "aircraft", 448): (90.0, f"{DCAL}, its ViT-B/16 baseline (trained with DCAL's settings, which this recipe uses)"),
    ("transfg", "cub", 448): (91.7, f"{TRANSFG} (independent reproductions report 90.8-91.2)"),
    ("transfg", "cars", 448): (94.8, f"{TRANSFG}"),
    ("transfg", "nabirds", 448): (90.8, f"{TRANSFG}"),
}
NOT_REPORTED = {
    "glsim": f"{GLSIM}: its tables for this dataset / size were not transcribed into fgvc; check the paper",
    "dcal": f"{DCAL}: reports 448 px only (CUB, Cars, Aircraft)",
    "vit": "no paper number for this plain ViT-B/16 setting",
    "transfg": f"{TRANSFG}: reports 448 px only (CUB, Cars, Dogs, NABirds)",
}


def method_settings(method: str, size: int) -> tuple[dict, dict, dict, list[str]]:
    """(model, data, train) settings and comment lines for one method at one input size."""
    if method == "glsim":
        model = dict(drop_path_rate=0.1)
        data = dict(resize=round(1.34 * size), trivial_augment=True, random_erasing=0.3)  # 224 -> 300, 448 -> 600
        train = dict(
            epochs=50, batch_size=8, optimizer="sgd", momentum=0.9, lr=0.01, weight_decay=0.0,
            warmup_steps=500, label_smoothing=0.1, grad_clip=1.0,
        )
        notes = [
            "GLSim: SGD momentum 0.9, lr 0.01, batch 8, 50 epochs, 500 warmup steps, cosine decay, label",
            "smoothing 0.1, TrivialAugmentWide, RandomErasing 0.3, stochastic depth 0.1, resize 1.34 x S then",
            "crop S. Weight decay 0 and gradient clipping 1.0: fgvc's choice.",
        ]
    elif method in ("dcal", "vit"):
        model = dict(drop_path_rate=0.1)
        resize = [550, 550] if size == 448 else round(size / 0.875)
        data = dict(resize=resize, trivial_augment=False, random_erasing=0.0)
        train = dict(
            epochs=100, batch_size=16, optimizer="adamw", lr=5e-4, lr_base_batch_size=512, weight_decay=0.05,
            label_smoothing=0.0, grad_clip=None,
        )
        notes = [
            "DCAL: Adam with weight decay 0.05 (AdamW, as in DeiT whose recipe DCAL follows), lr 5e-4 / 512 x",
            "batch (batch 16), cosine decay, 100 epochs, images resized to 550 x 550 and cropped to 448.",
            "Warmup (fgvc's default: one epoch), stochastic depth 0.1 and the 224 px resize (S / 0.875): fgvc's choice.",
        ]
        if method == "vit":
            notes.insert(0, "Plain ViT baseline, trained with DCAL's settings (the baseline DCAL's table reports).")
    elif method == "transfg":
        model = dict(patch_stride=12)
        data = dict(resize=[round(1.34 * size)] * 2, trivial_augment=False, random_erasing=0.0)  # 448 -> 600 x 600
        train = dict(
            steps=10000, batch_size=16, optimizer="sgd", momentum=0.9, lr=0.03, weight_decay=0.0,
            warmup_steps=500, label_smoothing=0.0, grad_clip=1.0,
        )
        notes = [
            "TransFG (official code): SGD momentum 0.9, lr 0.03, batch 16, 10k steps (rounded up to whole",
            "epochs), 500 warmup steps, cosine decay, gradient clipping 1.0, overlapping patches (stride 12),",
            "600 x 600 resize then crop 448. The 224 px version scales the resize alike (300 x 300): fgvc's choice.",
        ]
    else:
        raise ValueError(method)
    return model, data, train, notes


def fmt(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def recipe_text(method: str, dataset: str, size: int) -> str:
    name = f"{method}_{dataset}_{size}"
    model, data, train, notes = method_settings(method, size)
    expected, source = EXPECTED.get((method, dataset, size), (None, NOT_REPORTED[method]))
    kind, root, options = DATASETS[dataset]
    lines = [f"# {name}: {method} on {dataset} at {size} px.", *(f"# {n}" for n in notes), ""]
    lines += [f"name: {name}", f"expected_top1: {fmt(expected)}", f'source: "{source}"', "seeds: [0, 1, 2]", ""]
    lines += ["model:", f"  method: {method}", f"  backbone: {BACKBONE}", "  pretrained: true", f"  img_size: {size}"]
    lines += [f"  {k}: {fmt(v)}" for k, v in model.items()]
    lines += ["", "data:", f"  dataset: {kind}", f"  root: {root}", "  val_fraction: 0.1   # carved from train, stratified"]
    lines += [f"  {k}: {fmt(v)}" for k, v in data.items()]
    if options:
        lines.append(f"  options: {fmt(options)}")
    lines += ["", "train:"] + [f"  {k}: {fmt(v)}" for k, v in train.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for method in ("vit", "glsim", "dcal", "transfg"):
        for dataset in DATASETS:
            for size in (224, 448):
                (OUT / f"{method}_{dataset}_{size}.yaml").write_text(recipe_text(method, dataset, size))
    print(f"wrote {len(list(OUT.glob('*.yaml')))} recipes to {OUT}")


if __name__ == "__main__":
    main()
