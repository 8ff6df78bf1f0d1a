"""Grad-CAM and FinerCAM through pytorch-grad-cam (optional: ``pip install grad-cam``, extra ``fgvc[gradcam]``).

pytorch-grad-cam's ViT example reshapes tokens to a 14 x 14 grid; here the reshape uses the backbone's real
grid (any resolution, non-square, prefix tokens dropped), and the model's ``ModelOutput`` is reduced to its
logits for the library. The target layer is the model's ``grad_cam_layer()``: the first norm of the last block
that sees every patch (the last block, or for a method with a part block, the one before it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..methods.base import FGVCModel

__all__ = ["grad_cam"]


class _Logits(nn.Module):
    """The model with its output reduced to the (B, C) logits, as pytorch-grad-cam expects."""

    def __init__(self, model: FGVCModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).logits


def _import_grad_cam():  # noqa: ANN202 - module objects
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils import model_targets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fgvc.viz.grad_cam needs pytorch-grad-cam: pip install grad-cam (or pip install 'fgvc[gradcam]')"
        ) from err
    return pytorch_grad_cam, model_targets


def grad_cam(
    model: FGVCModel,
    images: Tensor,
    targets: Sequence[int] | Tensor | None = None,
    *,
    method: str = "gradcam",
    comparisons: int = 3,
    alpha: float = 1.0,
) -> Tensor:
    """Class activation maps of (B, 3, H, W) images: (B, rows, cols) float32 in [0, 1] over the patch grid.

    targets: the class to explain per image (default: the predicted class).
    method: ``"gradcam"`` or ``"finercam"`` (FinerCAM: the target's score against its ``comparisons`` most
        similar classes, weighted by their probabilities, ``alpha`` the comparison strength), which brings out
        what separates the class from its look-alikes.
    The maps are on the patch grid; draw them with ``overlay_map``. Raises ImportError naming the package
    when pytorch-grad-cam is missing.
    """
    gc, model_targets = _import_grad_cam()
    if method not in ("gradcam", "finercam"):
        raise ValueError(f"method must be 'gradcam' or 'finercam', got {method!r}")
    bb = model.backbone
    grid = bb.patch_grid
    layer = model.grad_cam_layer()

    def reshape(tokens: Tensor) -> Tensor:  # (B, T, D) -> (B, D, rows, cols): the real grid, not 14 x 14
        _, patches = grid.split(tokens)  # (B, rows * cols, D)
        return patches.reshape(tokens.shape[0], grid.rows, grid.cols, -1).permute(0, 3, 1, 2)

    was_training = model.training
    device = next(model.parameters()).device
    images = images.to(device)
    wrapped = _Logits(model)
    try:
        with torch.enable_grad():
            if targets is None:
                with torch.no_grad():
                    targets = wrapped.eval()(images).argmax(1)
            targets = [int(t) for t in targets]
            if method == "gradcam":
                cam = gc.GradCAM(model=wrapped, target_layers=[layer], reshape_transform=reshape)
                goals = [model_targets.ClassifierOutputTarget(t) for t in targets]
            else:
                cam = gc.FinerCAM(model=wrapped, target_layers=[layer], reshape_transform=reshape)
                with torch.no_grad():
                    logits = wrapped.eval()(images)  # (B, C)
                goals = []
                for row, t in zip(logits, targets, strict=True):
                    near = (row - row[t]).abs().argsort().tolist()  # most similar classes first
                    near = [c for c in near if c != t][:comparisons]
                    goals.append(model_targets.FinerWeightedTarget(t, near, alpha))
            with cam:
                maps = cam(images, targets=goals)  # (B, H, W) numpy, upsampled to the input
    finally:
        model.train(was_training)
    # pytorch-grad-cam resizes its grid map to the input; average it back over the patch cells
    maps_t = torch.as_tensor(maps, dtype=torch.float32)[:, None]  # (B, 1, H, W)
    return nn.functional.adaptive_avg_pool2d(maps_t, grid.grid_size)[:, 0]  # (B, rows, cols)
