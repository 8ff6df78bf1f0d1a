"""Write notebooks/02_train_cub.ipynb and notebooks/04_evaluate_cub_cars.ipynb (committed without outputs).

    .venv/bin/python notebooks/make_02_04.py

Edit the cells here, not in the notebooks, then run this script: the notebooks are regenerated with stable
cell ids, no outputs and the first code cell tagged ``parameters`` (papermill / nbmake read it).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from _build import build  # notebooks/_build.py (this script's folder is on sys.path)

HERE = Path(__file__).parent

# Shared by both notebooks: where the data is, and the fallbacks when it is not (said out loud).
FIND_DATA = """
def find_root(*candidates):
    \"\"\"The first folder that holds a dataset's annotation file, or None.\"\"\"
    for label, path, marker in candidates:
        if (Path(path) / marker).exists():
            return label, Path(path)
    return None


REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
SUBSET = REPO.parent / "shared" / "data" / "CUB_200_2011_subset100"   # real CUB images, 100 species
"""

TRAIN_CUB: list[tuple[str, str]] = [
    ("params", """
# Parameters. SMOKE=True runs a tiny version (what the test suite executes); set FGVC_SMOKE=0 or edit below.
import os

SMOKE = os.environ.get("FGVC_SMOKE", "0") == "1"  # True | False
RECIPE = "glsim_cub_224"                            # any of fgvc.list_recipes(), or a path to your own YAML
CUB_ROOT = "../data/CUB_200_2011"                   # the official download
OUT = "runs/train_cub"                              # one folder per seed inside
SEEDS = [0] if SMOKE else [0, 1]                    # the recipes list [0, 1, 2]
DEVICE = None                                       # None: CUDA when available, else CPU
"""),
    ("md", """
# Train a paper recipe on CUB-200-2011

fgvc ships the papers' training settings as **recipes** (YAML files in `fgvc/recipes/`, one per method,
dataset and resolution), each with the top-1 its paper reports. This notebook runs one recipe the way
`fgvc train --config RECIPE` does: it trains once per seed, picks each checkpoint on a validation split carved
from the training split, evaluates the test split **once** with that checkpoint, and reports mean +- std
next to the paper's number.

Data, in order of preference (the notebook says which one it uses):

1. the official CUB-200-2011 download in `CUB_ROOT` (see `data/README.md`): the recipe as published;
2. the real 100-species CUB subset in `../shared/data` (cropped 227 px birds): a short from-scratch sanity run;
3. the built-in synthetic fine-grained dataset: runs anywhere, no download.
"""),
    ("md", """
## 1. The recipe

Three sections map onto the API: `model` -> `fgvc.create_model`, `data` -> datasets, transforms and the
validation split, `train` -> `fgvc.fit`. `expected_top1` and `source` say what the paper reported.
"""),
    ("code", """
from pathlib import Path

import yaml

import fgvc

""" + FIND_DATA + """
recipe = fgvc.load_recipe(RECIPE)
print(yaml.safe_dump(recipe, sort_keys=False))
"""),
    ("md", """
## 2. The data, and what this run can claim

With the official data the recipe runs as written (pretrained ImageNet-21k weights, the paper's resolution
and schedule): that is a reproduction, meant for a GPU. Otherwise the notebook overrides a few values (a
small class subset, a small ViT trained from scratch, a few epochs) so that it finishes on a laptop CPU;
those numbers check the pipeline on real bird photos and are not comparable with the paper's.
"""),
    ("code", """
found = find_root(("the official CUB-200-2011", CUB_ROOT, "images.txt"),
                  ("the real 100-species CUB subset", SUBSET, "images.txt"))
quick = {  # a laptop-sized run: from scratch, small model, a few epochs
    "model.pretrained": False, "model.backbone": "vit_tiny_patch16_224", "model.drop_path_rate": 0.0,
    "model.backbone_kwargs": {"depth": 2 if SMOKE else 6}, "model.img_size": 64 if SMOKE else 112,
    "train.epochs": 1 if SMOKE else 30, "train.batch_size": 16 if SMOKE else 32,
    "train.optimizer": "adamw", "train.lr": 1e-3, "train.weight_decay": 0.05, "train.warmup_steps": None,
    "train.lr_base_batch_size": None, "train.steps": None, "model.top_k": 4,
}
if recipe["model"]["method"] != "glsim":
    quick.pop("model.top_k")
if found is not None and found[0] == "the official CUB-200-2011" and not SMOKE:
    overrides = {"data.root": str(found[1])}
    print(f"Data: {found[0]} at {found[1]}: the recipe as published (a reproduction run).")
elif found is not None:
    overrides = dict(quick, **{"data.root": str(found[1]), "data.classes": 5 if SMOKE else 20,
                               "data.resize": 72 if SMOKE else 128})
    print(f"Data: {found[0]} at {found[1]}: a from-scratch sanity run on a class subset, not a reproduction.")
else:
    overrides = dict(quick, **{"data.dataset": "synthetic", "data.resize": None,
                               "data.options": {"num_classes": 5, "train": 200 if SMOKE else 3000,
                                                "val": 50 if SMOKE else 500, "test": 100 if SMOKE else 1000}})
    print("Data: no CUB folder found, so the built-in synthetic fine-grained dataset (see data/README.md).")
recipe = fgvc.load_recipe(RECIPE, overrides)
for key, value in overrides.items():
    print(f"  {key} = {value}")
"""),
    ("md", """
## 3. Train, once per seed

Each run writes `OUT/seed<N>/`: `best.safetensors` (chosen on validation), `last.safetensors`, the resumable
`train_state.safetensors`, `log.jsonl` (metrics per step and epoch) and `config.yaml` (the resolved recipe
with the fgvc, torch and timm versions and the git commit). If the kernel dies, run the cell again with
`resume=True`: it continues from the last checkpoint.
"""),
    ("code", """
result = fgvc.train_recipe(recipe, OUT, seeds=SEEDS, device=DEVICE, progress=not SMOKE)
print(result.to_markdown())
"""),
    ("md", """
The last line compares with the paper. Only a run of the unmodified recipe on the official data (on GPUs, over
the recipe's seeds) is a reproduction; fgvc's README keeps a table of those, left empty until someone runs
them. The test split was looked at once per seed, after the checkpoint was chosen on validation.

## 4. Training curves

`fgvc.plot_log` reads `log.jsonl` (it also works while a run is still going, e.g. from another notebook).
"""),
    ("code", """
import matplotlib.pyplot as plt

fig = fgvc.plot_log(Path(OUT) / f"seed{SEEDS[0]}" / "log.jsonl")
plt.show()
"""),
    ("md", """
## 5. Predictions with class names

`fgvc.predict` runs the test transform (resize, center crop, the backbone's normalization) on image files or
PIL images and returns the top-k classes with their names; `fgvc predict --checkpoint ... IMAGE...` does the
same from a terminal.
"""),
    ("code", """
from fgvc.recipe import build_recipe_data

model = fgvc.load_model(result.runs[0]["checkpoint"])
test = build_recipe_data(recipe, model)["test"]
if getattr(test, "samples", None):
    images = [path for path, _ in test.samples[:3]]
else:  # synthetic images have no files: render them
    images = [test.render(i) for i in range(3)]
for prediction, i in zip(fgvc.predict(model, images, topk=3), range(3), strict=True):
    print(prediction, f"\\n  true: {test.classes[test.targets[i]]}")
"""),
    ("md", """
## 6. From this notebook to several GPUs

Notebooks train in one process. The same recipe scales out with PyTorch's `torchrun` (DistributedDataParallel,
one process per GPU; checkpoints and logs from rank 0; evaluation sharded without duplicates, so the metrics
equal a single-process run):

```bash
torchrun --nproc_per_node=4 -m fgvc train --config glsim_cub_224 --set data.root=/data/CUB_200_2011
```

Every override made above works there as `--set key=value`; `scripts/` has a Slurm example for several nodes.
"""),
]

EVALUATE: list[tuple[str, str]] = [
    ("params", """
# Parameters. SMOKE=True runs a tiny version (what the test suite executes); set FGVC_SMOKE=0 or edit below.
import os

SMOKE = os.environ.get("FGVC_SMOKE", "0") == "1"  # True | False
CUB_ROOT = "../data/CUB_200_2011"
CARS_ROOT = "../data/stanford_cars"
METHODS = ["vit", "glsim", "dcal", "transfg"]
# checkpoint per dataset and method; absent files fall back to a quick model (and the notebook says so)
CHECKPOINTS = {
    "cub": {m: f"runs/{m}_cub_448/seed0/best.safetensors" for m in METHODS},
    "cars": {m: f"runs/{m}_cars_448/seed0/best.safetensors" for m in METHODS},
}
FALLBACK_EPOCHS = 1 if SMOKE else 15                  # quick models when checkpoints are missing
DEVICE = None                                         # None: CUDA when available, else CPU
"""),
    ("md", """
# Evaluate checkpoints on CUB-200-2011 and Stanford Cars

A fine-grained model is judged by more than its top-1. For each method this notebook reports, on the test
split: accuracy (top-1, top-5), retrieval with its embeddings (Recall@1, mAP), where it looks (crop IoU and
pointing game against the annotated boxes), which classes it gets wrong and which pairs it confuses, and what
it costs (parameters, GMACs, throughput).

Checkpoints come from `fgvc train` (`runs/<recipe>/seed0/best.safetensors`). When a dataset or a checkpoint is
missing, the notebook says so and falls back: it trains small models briefly on the real CUB subset in
`../shared/data` (or on synthetic data), so every cell runs anywhere.
"""),
    ("md", """
## 1. Which data and checkpoints are here
"""),
    ("code", """
from pathlib import Path

import fgvc

""" + FIND_DATA + """
datasets = {}
for name, root, marker, layout in (("cub", CUB_ROOT, "images.txt", "cub"),
                                   ("cars", CARS_ROOT, "devkit", "cars")):
    found = find_root((f"official {name}", root, marker))
    if found is None:
        print(f"{name}: no dataset at {root} (see data/README.md): skipped")
        continue
    datasets[name] = (layout, found[1])
    have = [m for m in METHODS if Path(CHECKPOINTS[name][m]).is_file()]
    print(f"{name}: {found[1]}; checkpoints for {have or 'no method'}")
"""),
    ("md", """
## 2. Evaluate (or build quick stand-ins)

`fgvc.recipe.evaluate_checkpoint` (what `fgvc eval` runs) rebuilds each model from its checkpoint, reads the
run's `config.yaml` for the test resize and class subset, and checks the dataset's classes against the
checkpoint's before evaluating. Missing checkpoints are replaced by small from-scratch models trained for a few
epochs on what is available, clearly labelled: their numbers show the tools, not the methods' accuracy.
"""),
    ("code", """
from fgvc.data import build_dataset, build_transforms, subset_classes, synthetic_splits, train_val_split
from fgvc.recipe import evaluate_checkpoint

results, tests, models = {}, {}, {}
for name, (layout, root) in datasets.items():
    for method in METHODS:
        checkpoint = Path(CHECKPOINTS[name][method])
        if checkpoint.is_file():
            results[(name, method)] = evaluate_checkpoint(checkpoint, root, dataset=layout, device=DEVICE)
            models[(name, method)] = fgvc.load_model(checkpoint)

missing = [m for m in METHODS if not any(key[1] == m for key in results)]
if missing:
    size, classes = (64, 5) if SMOKE else (112, 20)
    if (SUBSET / "images.txt").is_file():
        label = f"cub-subset ({classes} classes, from scratch)"
        probe = fgvc.create_model("vit", num_classes=classes, img_size=size, backbone="vit_tiny_patch16_224")
        train_tf = build_transforms(probe, train=True, img_size=size, resize=round(size * 1.15))
        test_tf = build_transforms(probe, train=False, img_size=size, resize=round(size * 1.15))
        train = subset_classes(build_dataset("cub", SUBSET, "train"), classes)
        train, val = train_val_split(train, 0.1, train_transform=train_tf, val_transform=test_tf)
        test = subset_classes(build_dataset("cub", SUBSET, "test", test_tf), classes)
    else:
        label = "synthetic (from scratch)"
        splits = synthetic_splits(num_classes=classes, image_size=size, train=200 if SMOKE else 3000,
                                  val=50 if SMOKE else 500, test=100 if SMOKE else 1000)
        train, val, test = splits["train"], splits["val"], splits["test"]
    print(f"No checkpoint for {missing}: quick stand-ins on {label}.")
    for method in missing:
        model = fgvc.create_model(method, backbone="vit_tiny_patch16_224", num_classes=classes, img_size=size,
                                  backbone_kwargs=dict(depth=2 if SMOKE else 6), **({"top_k": 4} if method == "glsim" else {}))
        fgvc.fit(model, train, val, epochs=FALLBACK_EPOCHS, batch_size=32, lr=1e-3, device=DEVICE, progress=not SMOKE)
        results[(label, method)] = fgvc.evaluate(model, test, retrieval=True)
        models[(label, method)] = model
        tests[label] = test
for name, (layout, root) in datasets.items():
    tests[name] = build_dataset(layout, root, "test")
"""),
    ("md", """
## 3. The accuracy table

Top-1 / top-5 are classification; Recall@1 and mAP rank every test image against all the others by the cosine
similarity of the model's embedding (what fine-grained retrieval and re-identification report); crop IoU and the
pointing game measure localization where the data has boxes (the CUB subset has none: `-`).
"""),
    ("code", """
def cell(value, fmt="{:.1f}"):
    return "-" if value is None else fmt.format(value)


print(f"{'data':34s} {'method':8s} {'top-1':>6s} {'top-5':>6s} {'R@1':>6s} {'mAP':>6s} {'IoU':>5s} {'point':>6s}")
for (name, method), r in results.items():
    ret = r.retrieval
    print(f"{name:34s} {method:8s} {r.top1:6.1f} {r.top5:6.1f} {cell(ret and ret.recall[1]):>6s} "
          f"{cell(ret and ret.map):>6s} {cell(r.mean_iou, '{:.2f}'):>5s} {cell(r.pointing_game):>6s}")
"""),
    ("md", """
## 4. Per-class accuracy

The mean hides the classes a model cannot tell apart. The worst classes of each method, next to each other:
"""),
    ("code", """
import matplotlib.pyplot as plt
import numpy as np

fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3), squeeze=False)
for ax, ((name, method), r) in zip(axes[0], results.items(), strict=True):
    order = np.argsort(np.nan_to_num(r.per_class_accuracy, nan=101.0))[:8]
    classes = tests[name].classes
    ax.barh([classes[c][:18] for c in order], r.per_class_accuracy[order])
    ax.set(title=f"{method}", xlabel="top-1 (%)", xlim=(0, 100))
    ax.invert_yaxis()
fig.tight_layout()
plt.show()
"""),
    ("md", """
## 5. The most confused pairs

From the confusion matrix: which true class is most often predicted as which other, with examples of both. In
fine-grained data these are usually the pairs that differ in one part, which is where the attention maps of
notebook 03 are most telling.
"""),
    ("code", """
from fgvc import viz

(name, method), r = next(iter(results.items()))
pairs = viz.confused_pairs(r.confusion_matrix, k=5)
classes = tests[name].classes
for p in pairs:
    print(f"{classes[p.true][:30]:>30s} -> {classes[p.predicted][:30]:<30s} {p.count} images ({100 * p.rate:.0f}%)")
if pairs:
    fig = viz.plot_confused_pair(tests[name], pairs[0], r.predictions)
    plt.show()
"""),
    ("md", """
## 6. Where the models look

GLSim's crop and similarity map and the attention maps of every method on the same test images (notebook 03
shows every map type and the interactive explorer).
"""),
    ("code", """
import torch

(name, method), model = next((k, m) for k, m in models.items() if k[1] == "glsim")
images = torch.stack([tests[name][i][0] for i in range(3)])  # (3, 3, H, W)
fig = viz.plot_maps(model, images)
plt.show()
"""),
    ("md", """
## 7. What each method costs

`fgvc.profile` (also `fgvc benchmark` in a terminal) measures every method beside the plain ViT in the same
run: parameters, GMACs per image, inference throughput and the selection step's share of the encoder. Accuracy
is worth its cost only in this light: GLSim's second pass roughly halves the throughput, DCAL's extra cost is
mostly in training.
"""),
    ("code", """
cost = fgvc.profile(METHODS, backbone="vit_tiny_patch16_224", img_sizes=[64 if SMOKE else 224], batch_size=2,
                    repeats=1 if SMOKE else 3, train=False, memory=False, timm_reference=False,
                    backbone_kwargs=dict(depth=2) if SMOKE else None)
print(cost.to_markdown())
"""),
]



if __name__ == "__main__":
    for name, cells in (("02_train_cub", TRAIN_CUB), ("04_evaluate_cub_cars", EVALUATE)):
        path = HERE / f"{name}.ipynb"
        nbformat.write(build(cells, name[:2]), path)
        print(f"wrote {path}")
