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

TRAIN_CUB: list[tuple[str, str]] = [
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
3. the built-in synthetic fine-grained dataset: runs anywhere, no download; fine-tuned from fgvc's shipped
   backbone with `fgvc demo`'s settings.

**Time**: minutes in full mode on a CPU, on synthetic data or the CUB subset (measured in
`docs/results.md`, "The notebooks' full-mode run times"); the published recipe on the official data is a GPU
job (the paper's schedule). Small mode: seconds.
"""),
    ("params", """
# Parameters. SMOKE=True runs a tiny version (what the test suite executes); set FGVC_SMOKE=0 or edit below.
import os

SMOKE = os.environ.get("FGVC_SMOKE", "0") == "1"  # True | False
RECIPE = "glsim_cub_224"                            # any of fgvc.list_recipes(), or a path to your own YAML
CUB_ROOT = os.environ.get("FGVC_CUB_ROOT", "../data/CUB_200_2011")  # the official download
OUT = "runs/train_cub"                              # one folder per seed inside
SEEDS = [0] if SMOKE else [0, 1]                    # the recipes list [0, 1, 2]
OVERWRITE = SMOKE                                   # True: replace the runs in OUT (else a used OUT is refused)
DEVICE = None                                       # None: CUDA when available, else CPU
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
from fgvc.studies.notebook import recipe_for_here
from fgvc.studies.report import smoke_banner

smoke_banner(SMOKE)
print(yaml.safe_dump(fgvc.load_recipe(RECIPE), sort_keys=False))
"""),
    ("md", """
## 2. The data, and what this run can claim

With the official data the recipe runs as written (pretrained ImageNet-21k weights, the paper's resolution
and schedule): that is a reproduction, meant for a GPU. On the CUB subset the notebook overrides a few values
(a small class subset, a small ViT trained from scratch, a few epochs) so that it finishes on a laptop CPU;
those numbers check the pipeline on real bird photos and are not comparable with the paper's. The small
settings are `fgvc.studies.notebook.LAPTOP`; the data is looked for by `fgvc.data.find_dataset` and
`fgvc.data.cub_subset`. On synthetic data the recipe's method is fine-tuned from the shipped backbone with
`fgvc demo`'s settings (`fgvc.studies.demo.FULL`), so its numbers and maps show learned behaviour.
"""),
    ("code", """
recipe, note = recipe_for_here(RECIPE, CUB_ROOT, smoke=SMOKE)  # fgvc.studies.notebook.LAPTOP holds the small settings
print(note)
"""),
    ("md", """
## 3. Train, once per seed

Each run writes `OUT/seed<N>/`: `best.safetensors` (chosen on validation), `last.safetensors`, the resumable
`train_state.safetensors`, `log.jsonl` (metrics per step and epoch) and `config.yaml` (the resolved recipe
with the fgvc, torch and timm versions and the git commit). If the kernel dies, run the cell again with
`resume=True`: it continues from the last checkpoint. A new run into an `OUT` that holds runs is refused
(nothing is lost by running the cell twice); `OVERWRITE = True` replaces them.
"""),
    ("code", """
result = fgvc.train_recipe(recipe, OUT, seeds=SEEDS, device=DEVICE, progress=not SMOKE, overwrite=OVERWRITE)
print(result.to_markdown())
"""),
    ("md", """
The chance row is what guessing scores on these classes; the last line compares with the paper. Only a run
of the unmodified recipe on the official data (on GPUs, over the recipe's seeds) is a reproduction; fgvc's
docs/results.md keeps a table of those, left empty until someone runs them. The test split was looked at once per seed, after the checkpoint was chosen on validation.

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
from fgvc.studies.recipe import build_recipe_data

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
    ("md", """
# Evaluate checkpoints on CUB-200-2011 and Stanford Cars

A fine-grained model is judged by more than its top-1. For each checkpoint this notebook reports, on the test
split of its dataset: accuracy (top-1, top-5) beside chance, retrieval with its embeddings (Recall@1, mAP),
where it looks (crop IoU and pointing game against the annotated boxes), which classes it gets wrong and which
pairs it confuses, and what each method costs (parameters, GMACs, throughput).

1. Find the data folders and the checkpoints.
2. Evaluate each checkpoint on its dataset's test split, with the checkpoint's own test transform and classes.
3. The accuracy table, with chance.
4. Per-class accuracy: the hardest classes.
5. The most confused pairs, with examples.
6. Where the models look.
7. Which parts each method looks at (CUB's 15 parts, or the synthetic data's one).
8. What each method costs.

**Time**: minutes in full mode on a CPU when it trains stand-ins (measured in `docs/results.md`, "The
notebooks' full-mode run times"); evaluating checkpoints takes what their test split takes. Small mode: seconds.
"""),
    ("params", """
# Parameters. SMOKE=True runs a tiny version (what the test suite executes); set FGVC_SMOKE=0 or edit below.
# Each of CUB_ROOT, CARS_ROOT, CHECKPOINTS is read from the environment when set there (FGVC_<NAME>).
import os

SMOKE = os.environ.get("FGVC_SMOKE", "0") == "1"  # True | False
CUB_ROOT = os.environ.get("FGVC_CUB_ROOT", "../data/CUB_200_2011")    # the official CUB-200-2011 folder
CARS_ROOT = os.environ.get("FGVC_CARS_ROOT", "../data/stanford_cars")  # the Stanford Cars devkit folder
METHODS = ["vit", "glsim", "dcal", "transfg"]
# "dataset:method=path,...": by default what `fgvc train --config <method>_<dataset>_448` writes
CHECKPOINTS = os.environ.get("FGVC_CHECKPOINTS") or ",".join(
    f"{d}:{m}=runs/{m}_{d}_448/seed0/best.safetensors" for d in ("cub", "cars") for m in METHODS)
DEVICE = None                                         # None: CUDA when available, else CPU
"""),
    ("md", """
## 1. Which data and checkpoints are here

`fgvc.data.find_dataset` checks that a folder holds a dataset in its official layout (see `data/README.md`).
"""),
    ("code", """
import matplotlib.pyplot as plt

import fgvc
from fgvc import viz
from fgvc.data import find_dataset
from fgvc.studies import notebook
from fgvc.studies.report import results_table, smoke_banner

smoke_banner(SMOKE)
roots = {"cub": find_dataset("cub", CUB_ROOT), "cars": find_dataset("cars", CARS_ROOT)}
for name, root in roots.items():
    print(f"{name}: {root if root is not None else 'not found (see data/README.md)'}")
"""),
    ("md", """
## 2. Evaluate each checkpoint on its test split

`fgvc.studies.notebook.evaluate_checkpoints` does for each checkpoint what `fgvc eval` does: it rebuilds the model,
reads the run's `config.yaml` for the test resize and the class subset, checks the dataset's classes against
the checkpoint's, and evaluates. The test split it builds (the checkpoint's transform and classes) is kept for
the figures below. When no checkpoint can be evaluated, small stand-ins are trained instead, clearly labelled:
on the real CUB subset in `../shared/data`, from scratch (their numbers show the tools, not the methods), or
without it on synthetic data, fine-tuned from the shipped backbone with `fgvc demo`'s settings.
"""),
    ("code", """
runs = notebook.evaluate_checkpoints(CHECKPOINTS, roots, device=DEVICE)
stand_ins = None
if not runs.results:
    print("Nothing to evaluate: stand-ins instead, one method per cell below.")
    stand_ins = notebook.StandIns(smoke=SMOKE, device=DEVICE)
    runs = stand_ins.runs
"""),
    ("md", """
Without checkpoints, the next cells train one stand-in each (the notebook's longest cells in full mode);
with checkpoints they do nothing.
"""),
    ("code", """
if stand_ins is not None and "vit" in METHODS:
    stand_ins.train("vit")
"""),
    ("code", """
if stand_ins is not None and "glsim" in METHODS:
    stand_ins.train("glsim")
"""),
    ("code", """
if stand_ins is not None and "dcal" in METHODS:
    stand_ins.train("dcal")
"""),
    ("code", """
if stand_ins is not None and "transfg" in METHODS:
    stand_ins.train("transfg")
"""),
    ("code", """
for method in METHODS:  # any other method listed in METHODS
    if stand_ins is not None and (stand_ins.label, method) not in runs.results:
        stand_ins.train(method)
"""),
    ("md", """
## 3. The accuracy table

Top-1 / top-5 are classification; Recall@1 and mAP rank every test image against all the others by the cosine
similarity of the model's embedding (what fine-grained retrieval and re-identification report); crop IoU and the
pointing game measure localization where the data has boxes (`-` where it has none). The **chance** row of
each dataset is what guessing (or a random ranking, or a random point) scores; top-5 is left out with 5
classes or fewer, where it is 100% by construction.
"""),
    ("code", """
print(results_table(runs.results, runs.tests))
"""),
    ("md", """
### Are the confidences honest?

A reliability diagram bins the test images by the model's top-1 confidence and plots each bin's accuracy
against it: a calibrated model's line follows the diagonal (of the images it is 80% sure of, 80% are right);
below it, the model is over-confident. The strip below counts the images per bin, and each line's label gives
its expected calibration error (ECE, 15 bins). `fgvc.calibrate(model, val_data)` fits one temperature on the
validation split (`fgvc eval --calibrate val` in a terminal); `fgvc.evaluate` then reports ECE, NLL and Brier
before and after (`result.ece_calibrated`, ...), and top-1 does not move.
"""),
    ("code", """
for name in runs.tests:
    by_method = {method: r for (data, method), r in runs.results.items() if data == name}
    fig = viz.plot_reliability(by_method, title=f"{name}: reliability, one line per method")
    plt.show()
"""),
    ("md", """
## 4. Per-class accuracy

The mean hides the classes a model cannot tell apart: the hardest classes of each dataset, every method side
by side, chance as a dotted line.
"""),
    ("code", """
for name, test in runs.tests.items():
    by_method = {method: r for (data, method), r in runs.results.items() if data == name}
    fig = viz.plot_per_class(by_method, test.classes, title=f"{name}: the hardest classes")
    plt.show()
"""),
    ("md", """
## 5. The most confused pairs

From the confusion matrix: which true class is most often predicted as which other, with examples of both
(first row: the mistakes; second row: the class they were taken for). In fine-grained data these are usually
the pairs that differ in one part, which is where the attention maps of notebook 03 are most telling.
"""),
    ("code", """
(name, method), r = next(iter(runs.results.items()))
test, names = runs.tests[name], [viz.pretty_name(c) for c in runs.tests[name].classes]
pairs = viz.confused_pairs(r.confusion_matrix, k=5)
print(f"{name}, {method}:")
for p in pairs:
    print(f"  {names[p.true]} -> {names[p.predicted]}: {p.count} images ({100 * p.rate:.0f}% of its class)")
if pairs:
    fig = viz.plot_confused_pair(test, pairs[0], r.predictions, model=runs.models[(name, method)])
    plt.show()
"""),
    ("md", """
## 6. Where the models look

For each dataset, every map of one model (GLSim where there is one) on a few test images: each row says the
prediction, the truth and whether it is right; maps are drawn over the desaturated image, normalised per panel,
with the true box (green) where the data has boxes. Notebook 03 explains every map and has the explorer.
"""),
    ("code", """
for name, test in runs.tests.items():
    keys = [key for key in runs.models if key[0] == name]
    key = next((k for k in keys if k[1] == "glsim"), keys[0])
    batch = notebook.examples(test, 3)
    fig = viz.plot_maps(runs.models[key], batch["images"], targets=batch["targets"], gt_boxes=batch["gt_boxes"],
                        class_names=test.classes, indices=batch["indices"])
    plt.show()
"""),
    ("md", """
## 7. Which parts each method looks at

CUB-200-2011 annotates 15 parts per bird (beak, crown, left eye, ...) in `parts/part_locs.txt`;
`fgvc.evaluate(model, test, parts=True)` scores every map of a model against them: per part, over the images
where it is visible, how often the map peaks within one grid cell of it (and the share of its mass there).
The official download has the parts (`fgvc eval --parts` does the same from a terminal); **the CUB subset in
`../shared/data` has none**, and neither has Stanford Cars. Where no test split here has parts, the synthetic
data's class-deciding detail stands in as a one-part dataset (its centre, known to the pixel), with each
method on fgvc's shipped backbone before fine-tuning: where its selection looks, not what it learned. The
grey tick is what a map that looks nowhere in particular scores.
"""),
    ("code", """
from fgvc.data.parts import input_parts_of
from fgvc.studies.demo import FULL

part_results = {f"{name}: {method}": fgvc.evaluate(model, runs.tests[name], parts=True)
                for (name, method), model in runs.models.items() if input_parts_of(runs.tests[name]) is not None}
if not part_results:
    print("No test split here has part locations: the synthetic data's detail stands in (one part).")
    synthetic = fgvc.data.synthetic_splits(**dict(FULL.data_options(), train=0, val=0, test=32 if SMOKE else 300))
    for method in METHODS:
        model = fgvc.create_model(method, num_classes=FULL.num_classes, **FULL.model_options())
        part_results[method] = fgvc.evaluate(model, synthetic["test"], parts=True)
print(next(iter(part_results.values())).parts_table())
fig = viz.plot_parts(part_results, "peak")
plt.show()
"""),
    ("md", """
## 8. What each method costs

`fgvc.benchmark` (also `fgvc benchmark` in a terminal) measures every method beside the plain ViT in the same
run: parameters, GMACs per image, inference throughput and the selection step's share of the encoder. Accuracy
is worth its cost only in this light: GLSim's second pass roughly halves the throughput, DCAL's extra cost is
mostly in training.
"""),
    ("code", """
cost = fgvc.benchmark(METHODS, backbone="vit_tiny_patch16_224", img_sizes=[64 if SMOKE else 224], batch_size=2,
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
