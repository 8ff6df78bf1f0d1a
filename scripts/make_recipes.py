"""Writes fgvc/recipes/<method>_<dataset>_<size>.yaml: one recipe per method x dataset x resolution.

Every setting is the official one by default and traceable: the comment beside it names the file and line
of the official code it comes from (arkel23/GLSim at commit 99cc474, TACJu/TransFG at commit 9336fba; DCAL
has no official code, so its settings come from the paper), or says "fgvc's choice" where paper and code are
both silent. Where paper and code disagree, the code is followed and the comment says so. Where fgvc
deliberately differs, the difference is an option whose default is the official behaviour, listed in the
README's deviations table.

``expected_top1`` is the paper's reported top-1 for exactly that method, dataset and resolution, or null
where the paper reports none (never guessed). It is compared with a run only under ``protocol: paper``.
Run after changing a setting here, then commit the YAML files (a test checks that they match):

    python scripts/make_recipes.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "fgvc" / "recipes"
BACKBONE = "vit_base_patch16_224.orig_in21k"  # Google's original ViT-B/16 ImageNet-21k weights (ViT-B_16.npz)
METHODS = ("vit", "glsim", "dcal", "transfg")
SIZES = (224, 448)

DATASETS = {
    # name: (fgvc dataset, root, options)
    "cub": ("cub", "data/CUB_200_2011", {}),
    "cars": ("cars", "data/stanford_cars", {}),
    "aircraft": ("aircraft", "data/fgvc-aircraft-2013b", {"annotation_level": "variant"}),
    "nabirds": ("nabirds", "data/nabirds", {}),
}
# The split each recipe trains on (its validation split carved from it under protocol val); all test on "test".
# FGVC-Aircraft: trainval (train + val, 6,667 images; its train split alone is 3,334), as the papers and GLSim
# (data/aircraft/train_val.csv, 6,667 rows, configs/datasets/aircraft.yaml:4 df_trainval) train; test 3,333.
TRAIN_SPLITS = {"cub": "train", "cars": "train", "aircraft": "trainval", "nabirds": "train"}

# Both official codes normalize Google's ViT-B/16 weights with the ImageNet statistics (GLSim
# glsim/data_utils/build_transform.py:90-91, MEANS / STDS['imagenet'] at :9 and :19, custom_mean_std off by
# default, glsim/other_utils/build_args.py:140; TransFG utils/data_utils.py:25, 29, 43, 53, 82, 86), not with
# the 0.5 / 0.5 of timm's config for these weights. The recipe sets them on the model (timm's
# pretrained_cfg_overlay), so training, evaluation, prediction and the figures all use them.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

GLSIM = "Rios, Hu, Lai: Global-Local Similarity for Efficient Fine-Grained Image Recognition with Vision Transformers, 2024"
DCAL = "Zhu et al.: Dual Cross-Attention Learning for Fine-Grained Visual Categorization and Object Re-Identification, CVPR 2022, Table 1"
TRANSFG = "He et al.: TransFG: A Transformer Architecture for Fine-Grained Recognition, AAAI 2022"

# (method, dataset, size) -> (expected top-1, source). Absent: null and the reason from not_reported().
EXPECTED = {
    ("glsim", "cub", 224): (90.93, f"{GLSIM}, Table 4 (224 px): 90.93 +- 0.24"),
    ("glsim", "nabirds", 224): (89.11, f"{GLSIM}, Table 4 (224 px): 89.11 +- 0.16"),
    ("glsim", "cub", 448): (
        92.1,
        f"{GLSIM}, accuracy / throughput bar chart on CUB (GLSim*, 448 px; also assets/acc_tp_cub.png in "
        "arkel23/GLSim): about 92.1, read off the bar, not from a table",
    ),
    ("dcal", "cub", 448): (91.4, f"{DCAL} (ViT-B/16: 90.8 -> 91.4)"),
    ("dcal", "cars", 448): (93.4, f"{DCAL} (ViT-B/16: 92.5 -> 93.4)"),
    ("dcal", "aircraft", 448): (91.5, f"{DCAL} (ViT-B/16: 90.0 -> 91.5)"),
    ("vit", "cub", 448): (90.8, f"{DCAL}, its ViT-B/16 baseline (trained with DCAL's settings, which this recipe uses)"),
    ("vit", "cars", 448): (92.5, f"{DCAL}, its ViT-B/16 baseline (trained with DCAL's settings, which this recipe uses)"),
    ("vit", "aircraft", 448): (90.0, f"{DCAL}, its ViT-B/16 baseline (trained with DCAL's settings, which this recipe uses)"),
    ("transfg", "cub", 448): (
        91.7,
        f"{TRANSFG} (CUB-200-2011, 448 px). Users of the official code report 90.8-91.2 (90.8 without, 91.0-91.2 "
        "with overlapping patches) in github.com/TACJu/TransFG issues #2, #14 and #30",
    ),
    ("transfg", "cars", 448): (94.8, f"{TRANSFG} (Stanford Cars, 448 px)"),
    ("transfg", "nabirds", 448): (90.8, f"{TRANSFG} (NABirds, 448 px)"),
}


def not_reported(method: str, dataset: str, size: int) -> str:
    """Why ``expected_top1`` is null for this recipe."""
    if method == "glsim":
        if dataset in ("cars", "aircraft"):
            return f"{GLSIM}: its results table (Table 4) has no Stanford Cars or FGVC-Aircraft column"
        return f"{GLSIM}: reports {dataset} at 224 px only (Table 4)"
    if method == "dcal":
        return f"{DCAL}: reports 448 px only (CUB, Cars, Aircraft)"
    if method == "transfg":
        return f"{TRANSFG}: reports 448 px only (CUB, Cars, Dogs, NABirds, iNat2017)"
    return "no paper number for this plain ViT-B/16 setting at this size / on this dataset"


def glsim_settings(dataset: str, size: int) -> tuple[dict, dict, dict, list[str]]:
    """GLSim, from arkel23/GLSim (README.md:128-133: tools/train.py --cfg configs/<ds>_ft_is224_medaugs.yaml
    --lr 0.01 --model_name vit_b16 --cfg_method configs/methods/glsim.yaml [--image_size 448])."""
    # resize: glsim/other_utils/build_args.py:60-71: int(S / 0.875) for cars, int(S * 1.34) otherwise; the
    # test resize is the same (:73-74). Square: square_resize_random_crop is the default crop (:76-79), i.e.
    # Resize((r, r), BICUBIC) then RandomCrop(S) (glsim/data_utils/build_transform.py:116-120); test:
    # Resize((r, r), BICUBIC) then CenterCrop(S) (:164-167).
    r = int(size / 0.875) if dataset == "cars" else int(size * 1.34)
    model = dict(
        drop_path_rate=0.1,  # sd: 0.1 (configs/augs/medaugs.yaml:4)
        # DropPath(sd) in every block (glsim/model_utils/transformer.py:88-91, 114-117) and in the aggregator
        # (glsim/model_utils/glsim.py:73-82), not timm's linear 0 -> sd
        drop_path_schedule="constant",
        top_k=8,  # dynamic_top: 8 (glsim/other_utils/build_args.py:266)
        # position embeddings resampled to the input's grid with scipy.ndimage.zoom(order=1)
        # (glsim/model_utils/download_load_pt_weights.py, resize_pos_embedding)
        pos_embed_interpolation="scipy_zoom",
        backbone_kwargs=dict(
            pretrained_cfg_overlay=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic")
        ),  # build_transform.py:90-91 (ImageNet statistics), :118-119 and :165-166 (bicubic)
    )
    data = dict(
        resize=[r, r],
        trivial_augment=True,  # trivial_aug: True (configs/augs/medaugs.yaml:7; build_transform.py:152-153)
        random_erasing=0.3,  # re: 0.3 (configs/augs/medaugs.yaml:5)
        # RandomErasing(p=re, scale=(0.02, re_sh), ratio=(re_r1, 3.3)) (build_transform.py:171-173), re_sh 0.4
        # and re_r1 0.3 (build_args.py:354-355): the ratio is torchvision's default, the scale is not
        random_erasing_scale=[0.02, 0.4],
    )  # horizontal flip: configs/augs/medaugs.yaml:1 (always on in fgvc)
    train = dict(
        epochs=50,  # build_args.py:125
        batch_size=8,  # build_args.py:138
        # opt 'sgd' (build_args.py:172) through timm 0.9.12's create_optimizer (tools/train.py:79;
        # requirements.txt: timm==0.9.12), which builds SGD with Nesterov momentum: fgvc's "sgd" is the same
        optimizer="sgd",
        momentum=0.9,  # build_args.py:184
        # build_args.py:176 and the README command (README.md:128). scripts/run.sh:19, 99-103 instead sweeps
        # {0.03, 0.01, 0.003, 0.001} with --train_trainval, which (store_false, build_args.py:374-376) trains on
        # train.csv and evaluates on val.csv (glsim/data_utils/datasets.py:41-54): a choice on a validation
        # split. fgvc: fgvc train --sweep train.lr=0.03,0.01,0.003,0.001
        lr=0.01,
        weight_decay=0.0,  # build_args.py:186
        warmup_steps=500,  # build_args.py:210; cosine per step (:193, glsim/train_utils/scheduler.py:23-32)
        min_lr=1e-5,  # build_args.py:205 (the warmup starts at warmup_lr 1e-6, :203: see the README deviations)
        label_smoothing=0.1,  # ls: True (configs/augs/medaugs.yaml:3), smoothing 0.1 (build_args.py:361)
        grad_clip=1.0,  # clip_grad 1.0 (build_args.py:182)
    )
    notes = [
        f"GLSim, official code (arkel23/GLSim): square resize {r} x {r} "
        + ("(int(S / 0.875), its Cars rule)" if dataset == "cars" else "(int(S * 1.34))")
        + f" then crop {size}, bicubic,",
        "ImageNet mean / std, flip, TrivialAugmentWide, RandomErasing 0.3 (area 2-40%), label smoothing 0.1,",
        "drop-path 0.1 in every block and the aggregator, SGD (Nesterov, as timm's 'sgd') momentum 0.9, lr 0.01,",
        "batch 8, 50 epochs, 500 warmup steps, cosine to 1e-5, weight decay 0, gradient clipping 1.0, top-k 8.",
        "lr 0.01 is the README's and build_args.py's; the official scripts/run.sh sweeps 0.03, 0.01, 0.003, 0.001",
        "on a validation split: fgvc train --config NAME --sweep train.lr=0.03,0.01,0.003,0.001 runs it.",
        "The official run trains on the whole training split and evaluates the final epoch: protocol paper.",
    ]
    return model, data, train, notes


def dcal_settings(size: int) -> tuple[dict, dict, dict, list[str]]:
    """DCAL has no official code: the paper's implementation details (448 px, FGVC); the rest fgvc's choice."""
    model = dict(
        drop_path_rate=0.1,  # fgvc's choice (the paper follows DeiT, whose recipe uses stochastic depth 0.1)
        # fgvc's choice: the paper is silent; DeiT's pipeline (which it follows) and both official codes of the
        # other methods normalize with the ImageNet statistics
        backbone_kwargs=dict(
            pretrained_cfg_overlay=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic")
        ),
    )
    # paper: resized to 550 x 550, randomly cropped to 448 x 448; 224 px: S / 0.875 short side (fgvc's choice)
    resize: Any = [550, 550] if size == 448 else int(size / 0.875)
    data = dict(resize=resize, trivial_augment=False, random_erasing=0.0)
    train = dict(
        epochs=100,  # paper
        batch_size=16,  # paper
        optimizer="adamw",  # paper: Adam with weight decay 0.05 (decoupled, as DeiT's AdamW)
        lr=5e-4,  # paper: lr 5e-4 / 512 x batch
        lr_base_batch_size=512,
        weight_decay=0.05,  # paper
        label_smoothing=0.0,  # fgvc's choice (the paper mentions none)
        grad_clip=None,  # fgvc's choice (the paper mentions none)
    )  # cosine decay: paper; warmup (one epoch) and the final lr (1e-6): fgvc's defaults
    notes = [
        "DCAL paper (no official code): Adam with weight decay 0.05 (AdamW), lr 5e-4 / 512 x batch (batch 16),",
        "cosine decay, 100 epochs, images resized to 550 x 550 and cropped to 448. fgvc's choice where the paper",
        "is silent: warmup one epoch, stochastic depth 0.1, ImageNet mean / std, the 224 px resize (S / 0.875).",
    ]
    return model, data, train, notes


def transfg_settings(dataset: str, size: int) -> tuple[dict, dict, dict, list[str]]:
    """TransFG, from TACJu/TransFG (README.md:51: train.py --dataset ... --split overlap --num_steps 10000 --fp16)."""
    r = 600 if size == 448 else 300  # 448 px: Resize((600, 600)) (utils/data_utils.py:21); 224 px: fgvc's choice
    model = dict(
        patch_stride=12,  # --split overlap (README.md:51), slide_step 12 (train.py:356-358, models/modeling.py:151-156)
        part_block_init="random",  # the part layer is not loaded from the npz (models/modeling.py:348-351)
        # dropout_rate 0.1 (models/configs.py:30) on the embeddings (modeling.py:160, 174) and in every Mlp
        # (modeling.py:118, 131, 133); attention_dropout_rate 0.0 (configs.py:29)
        dropout=0.1,
        # position embeddings resampled to the overlapping grid: ndimage.zoom(order=1) (models/modeling.py, load_from)
        pos_embed_interpolation="scipy_zoom",
        backbone_kwargs=dict(
            pretrained_cfg_overlay=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear")
        ),  # Normalize(ImageNet) and Image.BILINEAR (utils/data_utils.py:21-29, 38-43, 50-53, 78-86)
    )
    data = dict(
        resize=[r, r],  # square Resize((600, 600)) then RandomCrop / CenterCrop 448 (utils/data_utils.py:21-29)
        # AutoAugImageNetPolicy on Cars only (utils/data_utils.py:41; CUB :21-25 and NABirds :78-82 have none).
        # fgvc uses torchvision's AutoAugment with the ImageNet policy (the official copies DeepVoltaire's).
        auto_augment=dataset == "cars",
        trivial_augment=False,
        random_erasing=0.0,
    )
    train = dict(
        steps=10000,  # num_steps 10000 (train.py:328); fgvc rounds up to whole epochs
        batch_size=16,  # train_batch_size 16 (train.py:316; the paper: batch size 16)
        optimizer="momentum",  # torch.optim.SGD(momentum=0.9), no Nesterov (train.py:180-183): timm's "momentum"
        momentum=0.9,
        lr=0.03,  # learning_rate 3e-2 (train.py:324)
        weight_decay=0.0,  # train.py:326
        warmup_steps=500,  # train.py:332
        min_lr=0.0,  # WarmupCosineSchedule decays to 0 (train.py:185-186, utils/scheduler.py:46-63)
        label_smoothing=0.0,  # smoothing_value 0.0 (train.py:353)
        grad_clip=1.0,  # max_grad_norm 1.0 (train.py:334, 253-255)
    )
    aug = " + AutoAugment (ImageNet policy)" if dataset == "cars" else ""
    notes = [
        f"TransFG, official code (TACJu/TransFG): square resize {r} x {r} then crop {size}, bilinear, ImageNet",
        f"mean / std, flip{aug}, overlapping patches (stride 12), dropout 0.1, plain SGD (no Nesterov)",
        "momentum 0.9, lr 0.03, batch 16, 10k steps (rounded up to whole epochs), 500 warmup steps, cosine to 0,",
        "weight decay 0, gradient clipping 1.0, cross-entropy + contrastive loss (cross-entropy alone at",
        "evaluation).",
    ]
    if size == 224:
        notes.append("224 px: the paper reports 448 px only; the resize is scaled alike (300 x 300): fgvc's choice.")
    if dataset == "aircraft":
        notes.append("FGVC-Aircraft: no official setting (not in the paper or code); CUB's pipeline: fgvc's choice.")
    return model, data, train, notes


def method_settings(method: str, dataset: str, size: int) -> tuple[dict, dict, dict, list[str]]:
    """(model, data, train) settings and comment lines for one recipe."""
    if method == "glsim":
        return glsim_settings(dataset, size)
    if method == "dcal":
        return dcal_settings(size)
    if method == "vit":
        model, data, train, notes = dcal_settings(size)
        return model, data, train, ["Plain ViT baseline, trained with DCAL's settings (the baseline DCAL's table reports).", *notes]
    if method == "transfg":
        return transfg_settings(dataset, size)
    raise ValueError(f"unknown method {method!r}")


def fmt(value: object) -> str:
    """A YAML flow value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # YAML 1.1 (PyYAML) reads 1e-05 as a string: a float needs its dot, 1.0e-05
        text = repr(value)
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def section(values: dict) -> list[str]:
    """``  key: value`` lines; a mapping of mappings (backbone_kwargs) one level in block style."""
    lines = []
    for k, v in values.items():
        if isinstance(v, dict) and any(isinstance(x, dict) for x in v.values()):
            lines.append(f"  {k}:")
            lines += [f"    {k2}: {fmt(v2)}" for k2, v2 in v.items()]
        else:
            lines.append(f"  {k}: {fmt(v)}")
    return lines


def recipe_text(method: str, dataset: str, size: int) -> str:
    """The YAML text of one recipe."""
    name = f"{method}_{dataset}_{size}"
    model, data, train, notes = method_settings(method, dataset, size)
    expected, source = EXPECTED.get((method, dataset, size), (None, not_reported(method, dataset, size)))
    kind, root, options = DATASETS[dataset]
    lines = [f"# {name}: {method} on {dataset} at {size} px.", *(f"# {n}" for n in notes)]
    lines += ["# Each setting's source (file and line of the official code): scripts/make_recipes.py.", ""]
    lines += [f"name: {name}", f"expected_top1: {fmt(expected)}", f'source: "{source}"', "seeds: [0, 1, 2]"]
    lines += [
        "# val: hold out val_fraction, keep the best checkpoint on it (not comparable with the paper);",
        "# paper (--set protocol=paper): whole training split, final checkpoint, compared with expected_top1",
        "protocol: val",
        "",
    ]
    lines += ["model:", f"  method: {method}", f"  backbone: {BACKBONE}", "  pretrained: true", f"  img_size: {size}"]
    lines += section(model)
    lines += ["", "data:", f"  dataset: {kind}", f"  root: {root}"]
    split = TRAIN_SPLITS[dataset]
    note = "   # train + val: 6,667 images (train alone: 3,334), as the papers and GLSim" if split == "trainval" else ""
    lines += [f"  train_split: {split}{note}", "  test_split: test"]
    lines += ["  val_fraction: 0.1   # carved from train_split, stratified (protocol val only)"]
    lines += section(data)
    if options:
        lines.append(f"  options: {fmt(options)}")
    lines += ["", "train:", *section(train)]
    return "\n".join(lines) + "\n"


def all_recipes() -> dict[str, str]:
    """``{file name: YAML text}`` of every recipe this script writes."""
    return {
        f"{m}_{d}_{s}.yaml": recipe_text(m, d, s) for m in METHODS for d in DATASETS for s in SIZES
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in all_recipes().items():
        (OUT / name).write_text(text)
    print(f"wrote {len(list(OUT.glob('*.yaml')))} recipes to {OUT}")


if __name__ == "__main__":
    main()
