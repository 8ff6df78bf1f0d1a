"""Write notebooks/03_attention_visualization.ipynb (committed without outputs).

    .venv/bin/python notebooks/make_03_attention_visualization.py

Edit the cells here, not in the notebook, then run this script: the notebook is regenerated with stable cell
ids, no outputs and the first code cell tagged ``parameters`` (papermill / nbmake read it).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from _build import build  # notebooks/_build.py (this script's folder is on sys.path)

OUT = Path(__file__).with_name("03_attention_visualization.ipynb")

CELLS: list[tuple[str, str]] = [
    ("md", """
# Attention visualization: what each method looks at

Fine-grained classes differ in small parts: a beak, a headlight, a wing tip. A model that is right for the right
reason looks at those parts. This notebook shows, for the four methods of fgvc (plain **ViT**, **GLSim**,
**DCAL**, **TransFG**), every map that tells where a model looks, and checks them against the true location of
the detail.

1. Data and models: the synthetic fine-grained dataset (the class is a small detail with a known box), four
   tiny models trained briefly (or loaded from checkpoints).
2. Localization: crop IoU and the pointing game, from `fgvc.evaluate`.
3. CLS attention per layer and head.
4. Every map of every method, on the same images: attention, rollout, GLSim's similarity and crop, DCAL's GLCA
   queries and attention, TransFG's parts.
5. Glance, then look closely: GLSim's cheaper variant, its coarse look and its close look on the same images.
6. Grad-CAM and FinerCAM (optional package).
7. The interactive explorer and the error analysis.

**Time:** minutes in full mode on a CPU (measured in `docs/results.md`, "The notebooks' full-mode run times");
seconds in small mode (`FGVC_SMOKE=1`).
"""),
    ("params", """
# Parameters. SMOKE=True runs a tiny version (what the test suite executes); set FGVC_SMOKE=0 or edit below.
import os

SMOKE = os.environ.get("FGVC_SMOKE", "0") == "1"  # True | False
EPOCHS = 1 if SMOKE else 2                          # fine-tuning epochs per model
TRAIN, VAL, TEST = (64, 32, 32) if SMOKE else (2000, 300, 300)  # synthetic images per split
IMG_SIZE = (96, 128)                                # (height, width): non-square on purpose
DETAIL_PX = 24                                      # side of the detail (pixels)
LR = 1e-3                                           # AdamW learning rate of the layers each method adds
BACKBONE_LR_SCALE = 1e-4                            # the pretrained backbone at LR x this (as fgvc demo)
CHECKPOINTS = "runs/attention"                      # <dir>/<method>/best.safetensors is loaded when present
DEVICE = None                                       # None: CUDA when available, else CPU
"""),
    ("md", """
## 1. Data and models

Each image hides one small **white-framed glyph** among look-alikes; its interior is the class. Because the
generator knows where the glyph is, every map below can be checked against a true box (green).
"""),
    ("code", """
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import fgvc
from fgvc import viz
from fgvc.data import synthetic_splits
from fgvc.studies.report import results_table, smoke_banner

smoke_banner(SMOKE)
detail_fraction = (DETAIL_PX**2 + 0.5) / (IMG_SIZE[0] * IMG_SIZE[1])  # a DETAIL_PX-wide detail
data = synthetic_splits(num_classes=10, image_size=IMG_SIZE, train=TRAIN, val=VAL, test=TEST, seed=0,
                        detail_fraction=detail_fraction)
test = data["test"]
print(test)
"""),
    ("md", """
All four methods are fine-tuned from the same backbone, `fgvc_synth_vit_tiny`: a small ViT (8-pixel patches,
so a 96 x 128 image is a 12 x 16 grid of tokens) that ships inside fgvc, pretrained by fgvc on synthetic
classes this data never uses; its position embeddings are resampled to the non-square input. One method per
cell (so no cell runs for long); DCAL and GLSim cost 2-3 times the ViT per step. Checkpoints are saved in
`CHECKPOINTS` and later runs load them instead of training again. Check the accuracy table below (chance is
10%) before reading the maps as learned behaviour; in SMOKE mode the models see 64 images once, so their
maps mostly show what pretraining taught the backbone.
"""),
    ("code", """
models, histories = {}, {}


def train(name):
    \"\"\"Load NAME's checkpoint from CHECKPOINTS, or train it (and save it there). NAME: a method or one of
    its variants (fgvc list methods), e.g. "glsim_glance" = "glsim" with glance_size=0.5, ...\"\"\"
    checkpoint = Path(CHECKPOINTS) / name / "best.safetensors"
    if checkpoint.is_file() and not SMOKE:
        print(f"{name}: loaded {checkpoint}")
        return fgvc.load_model(checkpoint)
    model = fgvc.create_model(name, backbone="fgvc_synth_vit_tiny", pretrained=True, num_classes=10,
                              img_size=IMG_SIZE)
    histories[name] = fgvc.fit(model, data["train"], data["val"], epochs=EPOCHS, batch_size=32,
                                 lr=LR, backbone_lr_scale=BACKBONE_LR_SCALE, out_dir=None if SMOKE else checkpoint.parent,
                                 overwrite=True,  # no checkpoint to load: an unfinished run there is replaced
                                 device=DEVICE,
                                 progress=not SMOKE)
    return fgvc.load_model(checkpoint) if not SMOKE else model.eval()


models["vit"] = train("vit")
"""),
    ("code", """
models["glsim"] = train("glsim")
"""),
    ("code", """
models["dcal"] = train("dcal")
"""),
    ("code", """
models["transfg"] = train("transfg")
"""),
    ("md", """
The training curves of the models trained here, in one figure (dashed: validation; dotted: chance).
"""),
    ("code", """
if histories:
    fig = viz.plot_histories(histories, chance=100 / test.num_classes)
    plt.show()
"""),
    ("md", """
## 2. Localization: does the model look at the detail?

`fgvc.evaluate` measures it wherever the data has boxes (here the synthetic boxes; on CUB the
`bounding_boxes.txt`, on Stanford Cars the annotation boxes, through `fgvc.data.EvalBoxes`):

* **crop IoU**: overlap of the region a method crops (GLSim's box) with the true box;
* **pointing game**: the share of images whose map peak (GLSim's similarity, DCAL's rollout) falls inside the
  true box. A high top-1 with a low pointing game means the model found a shortcut.

The chance row is what guessing (or a random point) scores on these classes and boxes.
"""),
    ("code", """
results = {method: fgvc.evaluate(model, test) for method, model in models.items()}
print(results_table({("synthetic", method): r for method, r in results.items()}, {"synthetic": test}))
"""),
    ("md", """
## 3. CLS attention per layer and head

Each panel is the attention of the CLS token to every patch in one layer and one head (last column: the mean
over heads). Early layers usually attend broadly; in later layers heads specialise. For TransFG the last
row is its *part block*, which only sees the parts the earlier layers selected: its attention lands on those
few patches.
"""),
    ("code", """
images = torch.stack([test[i][0] for i in range(4)])  # (4, 3, H, W)
targets = [test[i][1] for i in range(4)]
h, w = IMG_SIZE
gt_boxes = test.input_boxes[:4] * torch.tensor([w, h, w, h])  # true boxes in input pixels

for model in models.values():
    fig = viz.plot_layer_heads(model, images[0], mean=test.mean, std=test.std)
    plt.show()
"""),
    ("md", """
## 4. Every map of every method

One row per image, titled with the prediction, the truth and whether it is right: the image with the true box
(green) and the crop (blue), then each map the method has over the desaturated image (normalised per panel,
the true box on every panel; selections such as DCAL's queries and TransFG's parts outlined), then the crop. The crop is GLSim's own (the region it re-encodes); for the other methods it is the box around
the top cells of the last map, i.e. what that map points at.

* **CLS attention** (last layer, head mean) and **rollout** (attention multiplied through the layers, with
  the residual path): available for every method.
* **GLSim similarity**: cosine similarity between the CLS token and each patch; its top patches make the crop.
* **DCAL GLCA queries**: the patches with the highest rollout, used as queries of the global-local
  cross-attention; **GLCA attention**: where those queries look.
* **TransFG parts**: the patch each head selects (the count of heads per patch).
"""),
    ("code", """
for model in models.values():
    fig = viz.plot_maps(model, images, targets=targets, gt_boxes=gt_boxes, class_names=test.classes,
                        mean=test.mean, std=test.std, indices=list(range(len(images))))
    plt.show()
"""),
    ("md", """
Any map can be drawn on its own, over an image at any resolution (here the image at twice the input size),
and saved: every function returns the matplotlib Figure.
"""),
    ("code", """
maps = viz.attention_maps(models["glsim"], images)
big = viz.denormalize(images, test.mean, test.std)[0].repeat(2, axis=0).repeat(2, axis=1)  # (2H, 2W, 3)
fig = viz.overlay_map(big, maps.get("similarity")[0], input_size=IMG_SIZE, patch_size=(8, 8), smooth=True,
                      title="GLSim similarity over a 2x image")
Path(CHECKPOINTS).mkdir(parents=True, exist_ok=True)
fig.savefig(Path(CHECKPOINTS) / "glsim_similarity.png")
plt.show()
"""),
    ("md", """
## 5. Glance, then look closely

GLSim's global pass only has to find *where* the detail is, and a coarser image often tells that too. The
`glsim_glance` variant runs the global pass on the input downscaled to half its side (here 48 x 64 pixels, a
6 x 8 grid), maps the top-k box of that similarity onto the full image, and cuts the crop from the
**full-resolution** input (encoded at 48 x 64 with its own position embedding): the whole image coarsely, the
detail sharply, for about a third of a 448 px ViT's MACs (`docs/results.md`, "GLSim glance: cost").
"""),
    ("code", """
models["glsim_glance"] = train("glsim_glance")
results["glsim_glance"] = fgvc.evaluate(models["glsim_glance"], test)
print(results_table({("synthetic", m): results[m] for m in ("glsim", "glsim_glance")}, {"synthetic": test}))
"""),
    ("md", """
Each row, on the same images as above: (a) the glance, the downscaled image the global pass saw, drawn at its
own pixels, with its similarity and the box on its grid; (b) that box mapped onto the full image (blue; the
true box green); (c) the crop the second pass encodes, cut at full resolution, with the prediction.
"""),
    ("code", """
fig = viz.plot_glance(models["glsim_glance"], images, mean=test.mean, std=test.std, gt_boxes=gt_boxes,
                      targets=targets, class_names=test.classes, indices=list(range(len(images))))
plt.show()
"""),
    ("md", """
## 6. Grad-CAM and FinerCAM (optional)

Gradient-based maps explain one class: **Grad-CAM** weighs the last block's patch features by the gradient
of the class score; **FinerCAM** uses the gradient of the class score *minus* those of its most similar
classes, so it highlights what tells the class apart from its look-alikes, the question fine-grained
recognition is about. They need `pip install grad-cam` (the `fgvc[gradcam]` extra); fgvc reshapes the
tokens to the real patch grid (pytorch-grad-cam's ViT example assumes 14 x 14).
"""),
    ("code", """
try:
    cams = {kind: viz.grad_cam(models["vit"], images, targets, method=kind) for kind in ("gradcam", "finercam")}
except ImportError as err:
    print(err)
else:
    shown = viz.denormalize(images, test.mean, test.std)
    fig, axes = plt.subplots(2, len(images), figsize=(2.4 * len(images), 2 * (2.4 * h / w + 0.4)))
    for row, (kind, cam) in enumerate(cams.items()):
        for i in range(len(images)):
            viz.overlay_map(shown[i], cam[i], ax=axes[row, i], input_size=IMG_SIZE, title=f"vit {kind}")
    fig.tight_layout()
    plt.show()
"""),
    ("md", """
## 7. The explorer

Choose an image (by index, by class, or upload a file), the method, the map, the layer and the head: the
figure, the crop and the top-5 predictions with the true label follow. The **Errors** tab evaluates the chosen
method and lists its most confused class pairs (true -> predicted) with example images of both classes.
For `glsim_glance` the map choices end with **glance, then look closely**: section 5's three panels for the
chosen image.
"""),
    ("code", """
explorer = viz.explore(models, test, results=results)
explorer
"""),
    ("md", """
The same error analysis without widgets: the most frequent mistakes of GLSim, and examples of the first one.
"""),
    ("code", """
pairs = viz.confused_pairs(results["glsim"].confusion_matrix, k=5)
for p in pairs:
    print(f"{test.classes[p.true]:>16s} -> {test.classes[p.predicted]:<16s} {p.count} images ({100 * p.rate:.0f}%)")
if pairs:
    fig = viz.plot_confused_pair(test, pairs[0], results["glsim"].predictions, model=models["glsim"])
    plt.show()
"""),
    ("md", """
**Next:** the same calls work on real data: build the models with `pretrained=True`, wrap the test set in
`fgvc.data.EvalBoxes` to get crop IoU and the pointing game on CUB or Stanford Cars (see `data/README.md`).
"""),
]



if __name__ == "__main__":
    nbformat.write(build(CELLS, "03"), OUT)
    print(f"wrote {OUT}")
