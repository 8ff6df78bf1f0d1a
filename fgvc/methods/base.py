"""What every fgvc method shares: the output object, the loss interface, the explanation contract, the registry.

A method is an ``FGVCModel``: it owns a ``ViTBackbone``, its forward returns a ``ModelOutput`` (always the
same kind of object, in training and in evaluation), and ``model.loss(output, targets)`` computes its own
training loss. The training loop only ever calls these two, so it has no per-method branches.

The rest of fgvc reads a method through the explanation contract (``fgvc.methods.explain``), so visualization,
Grad-CAM, ``fgvc benchmark`` and ``fgvc demo`` have no per-method branches either:

* ``own_maps`` / ``map_info()``: the maps it can explain (the plain ViT's ``attention`` and ``rollout``, then
  its own), and ``explain(x)``, which returns them with the evaluation output;
* ``grad_cam_layer()``: the layer Grad-CAM reads;
* ``selection_steps(tokens, attentions)``: its selection step, timed and counted by ``fgvc benchmark``;
* ``variants`` (named option sets ``fgvc benchmark`` accepts) and ``small_input_options`` (options for inputs
  of a few dozen patches, used by the notebooks' laptop-sized runs).

The plain ViT's answers are the defaults here; a method overrides what it adds (see docs/adding_a_method.md).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones.vit import ViTBackbone, run_checkpointed, to_2tuple
from ..settings import check_model_settings
from .explain import COMMON_MAPS, Explanation, MapInfo, SelectionStep, backbone_attention, explaining
from .output import ModelOutput  # noqa: F401  (re-exported: ``fgvc.methods.base.ModelOutput``)

__all__ = [
    "BASELINE", "FGVCModel", "ModelOutput", "UnknownMethodError", "create_model", "declared", "list_models",
    "method_module", "model_class", "model_options", "register_model", "shipped_methods", "unregister_model",
]

DEFAULT_BACKBONE = "vit_base_patch16_224.augreg_in21k"
#: The plain baseline every method is compared with (``fgvc benchmark``'s ratios, a probe model's transforms).
BASELINE = "vit"


class FGVCModel(nn.Module):
    """Base class of the methods: a ``ViTBackbone`` plus method-specific layers and loss.

    Subclasses call ``super().__init__`` with their own keyword options (recorded for checkpoints), then build
    their layers on ``self.backbone``.
    """

    method: ClassVar[str] = ""
    #: The method's name in titles and captions (its paper's spelling); empty: the registered name.
    display_name: ClassVar[str] = ""
    #: False for methods that only need a pooled feature (the plain baseline): any timm classifier then works.
    needs_vit: ClassVar[bool] = True
    #: The maps this method explains beyond every ViT's ``attention`` and ``rollout``: name -> ``MapInfo``.
    own_maps: ClassVar[dict[str, MapInfo]] = {}
    #: Whether ``selection_steps`` reads the encoder's attention probabilities (``fgvc benchmark`` records them).
    selection_reads_attention: ClassVar[bool] = False
    #: Named option sets ``fgvc benchmark`` accepts as ``<method>_<name>`` (e.g. an ablation or a cheaper mode).
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Options for inputs of a few dozen patches (the notebooks' laptop-sized runs), e.g. a smaller top-k.
    small_input_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        *,
        backbone: str = DEFAULT_BACKBONE,
        num_classes: int,
        img_size: int | tuple[int, int] = 224,
        pretrained: bool = False,
        checkpoint_path: str | os.PathLike | None = None,
        drop_path_rate: float = 0.0,
        patch_stride: int | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        norm_eps: float | None = None,
        pos_embed_interpolation: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        check_model_settings(dict(img_size=img_size, pretrained=pretrained, drop_path_rate=drop_path_rate,
                                  norm_eps=norm_eps, patch_stride=patch_stride, backbone_kwargs=backbone_kwargs))
        self.num_classes = num_classes
        self.class_names: list[str] | None = None  # set by training / loading when known
        #: activation checkpointing in training (``set_grad_checkpointing``; ``fit(grad_checkpointing=True)``)
        self.grad_checkpointing = False
        #: LayerNorm epsilon of every norm (backbone and the method's own layers); None: timm's / the method's
        #: defaults. Converted official checkpoints set it (GLSim's official ViT uses 1e-12).
        self.norm_eps = norm_eps
        timm_kwargs = dict(backbone_kwargs or {})
        if norm_eps is not None:
            timm_kwargs["norm_layer"] = functools.partial(nn.LayerNorm, eps=norm_eps)
        if pos_embed_interpolation is not None:  # how position embeddings are resampled (``ViTBackbone``)
            timm_kwargs["pos_embed_interpolation"] = pos_embed_interpolation
        self.backbone = self._backbone_class(backbone)(
            backbone,
            img_size=img_size,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            drop_path_rate=drop_path_rate,
            patch_stride=patch_stride,
            **timm_kwargs,
        )
        # Everything needed to rebuild this model (weights aside): saved with checkpoints.
        self.config: dict[str, Any] = dict(
            method=self.method,
            backbone=backbone,
            num_classes=num_classes,
            img_size=list(to_2tuple(img_size)),
            drop_path_rate=drop_path_rate,
            patch_stride=patch_stride,
            backbone_kwargs=dict(backbone_kwargs or {}),
            options=dict(options or {}),
        )
        if pos_embed_interpolation is not None:  # saved: a reloaded model resamples (GLSim's crop_size) the same way
            self.config["pos_embed_interpolation"] = pos_embed_interpolation
        if norm_eps is not None:
            self.config["norm_eps"] = norm_eps

    def _backbone_class(self, name: str) -> type[nn.Module]:
        """``ViTBackbone`` for ViT-family names; ``TimmBackbone`` for other timm models where the method allows."""
        from ..backbones.classifier import TimmBackbone, is_vit_family, timm_module

        if is_vit_family(name):
            return ViTBackbone
        if not self.needs_vit:
            return TimmBackbone
        raise ValueError(
            f"method {self.method!r} needs a ViT backbone (patch tokens and attention: timm's ViT, DeiT, EVA "
            f"families); {name} is a timm.models.{timm_module(name)} model: use method 'vit', the plain baseline, "
            f"which works on any timm classifier"
        )

    @property
    def img_size(self) -> tuple[int, int]:
        return self.backbone.img_size

    @property
    def data_config(self) -> dict[str, Any]:
        """Normalization and input size the model expects (from the backbone's pretrained config)."""
        return self.backbone.data_config

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm-style pretrained config of the whole model: what ``timm.data.resolve_data_config(model=m)`` reads.

        The backbone's timm config with this model's input size, normalization, class count and fgvc's test crop
        (``crop_pct`` = ``fgvc.data.CROP_RATIO``; ``crop_mode`` "center" for square inputs, "squash" for non-square
        ones, whose resize fgvc stretches to the input's aspect ratio), so timm's and fgvc's test transforms agree:
        ``timm.data.create_transform(**resolve_data_config(model=m))`` equals ``build_transforms(m, train=False)``.
        """
        from ..data.transforms import CROP_RATIO

        cfg = dict(getattr(self.backbone.vit, "pretrained_cfg", None) or {})
        data = self.data_config
        cfg.update(
            input_size=(3, *self.img_size),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            interpolation=data.get("interpolation", "bicubic"),
            crop_pct=CROP_RATIO,
            crop_mode="center" if self.img_size[0] == self.img_size[1] else "squash",
            num_classes=self.num_classes,
            fgvc_method=self.method,
            backbone=self.config["backbone"],
        )
        for key in ("test_input_size", "test_crop_pct", "file", "hf_hub_id", "url", "state_dict"):
            cfg.pop(key, None)  # the backbone's pretraining, not this model
        return cfg

    @property
    def default_cfg(self) -> dict[str, Any]:
        """Alias of ``pretrained_cfg`` (the name older timm code reads)."""
        return self.pretrained_cfg

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters weight decay leaves alone besides the 1-D ones (biases, norms, layer scales).

        timm's rule, which ``create_optimizer_v2`` (and so ``fgvc.fit``) reads: the backbone's own set (timm's
        ViT / DeiT / EVA: position embedding, class, register and distillation tokens), under its name here
        (``backbone.vit.``), and the tokens and embeddings a method adds (it extends this set).
        """
        own = getattr(self.backbone.vit, "no_weight_decay", None)
        return {f"backbone.vit.{name}" for name in own()} if callable(own) else set()

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """The parameters that start from the pretrained backbone: what ``fit(backbone_lr_scale=...)`` trains
        gently. Default: the backbone's; a method that re-initialises part of it (TransFG's part block) or adds
        layers of its own (heads, aggregator) leaves those out, and they train at the full rate."""
        return list(self.backbone.parameters())

    def forward(self, x: Tensor) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in training: the backbone's blocks (every pass through the encoder, GLSim's
        crop pass included) and the blocks a method runs through ``run_block`` (GLSim's aggregator, DCAL's
        GLCA / PWCA, TransFG's part block) keep only their inputs and recompute the rest in backward. Less
        activation memory for about one more forward of time; the gradients are unchanged (bitwise on the
        CPU). Evaluation never checkpoints. The backbone's own switch: ``ViTBackbone.set_grad_checkpointing``
        (timm's ``set_grad_checkpointing`` for other timm classifiers).
        """
        setter = getattr(self.backbone, "set_grad_checkpointing", None)
        if not callable(setter):
            setter = getattr(getattr(self.backbone, "vit", None), "set_grad_checkpointing", None)
        if not callable(setter):
            raise ValueError(f"{type(self.backbone).__name__} has no set_grad_checkpointing: activation "
                             f"checkpointing is not supported for backbone {self.config['backbone']}")
        setter(bool(enable))
        self.grad_checkpointing = bool(enable)

    def run_block(self, block: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``block(*args, **kwargs)`` for a method's own block (or a function of one, e.g. ``block_forward``):
        checkpointed when ``grad_checkpointing`` is on, in training mode with gradients."""
        return run_checkpointed(block, *args, enabled=self.grad_checkpointing and self.training, **kwargs)

    def loss(self, output: ModelOutput, targets: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
        """The training loss of this method; by default cross-entropy on ``output.logits``."""
        return F.cross_entropy(output.logits, targets, label_smoothing=label_smoothing)

    # --------------------------------------------------------------------------- explanation contract
    @classmethod
    def map_info(cls) -> dict[str, MapInfo]:
        """Every map ``explain`` returns, in display order: the plain ViT's, then the method's ``own_maps``."""
        return {**COMMON_MAPS, **cls.own_maps}

    @property
    def title(self) -> str:
        """``display_name``, else the registered name."""
        return self.display_name or self.method

    def explain(self, x: Tensor) -> Explanation:
        """The evaluation output of (B, 3, H, W) ``x`` and every map of ``map_info()`` (eval mode, no gradient;
        the training mode is restored).

        The plain ViT's: the model's forward, then one pass of the backbone recording each block's CLS
        attention and the rollout (``backbone_attention``). A method overrides this to add its ``own_maps``
        (computed from its own forward, never by a caller flipping its flags).
        """
        with explaining(self):
            output = self(x)
            attention, rollout = backbone_attention(self.backbone, x)
        return Explanation(output=output, attention=attention, maps={"rollout": rollout})

    def grad_cam_layer(self) -> nn.Module:
        """The layer Grad-CAM reads (``fgvc.viz.grad_cam``): the first norm of the last block that sees every
        patch token."""
        return self.backbone.blocks[-1].norm1

    def selection_steps(self, tokens: Tensor, attentions: Sequence[Tensor] | None) -> list[SelectionStep]:
        """This method's selection step(s), as ``fgvc benchmark`` times and counts them against the encoder.

        tokens: (B, T, D) final-norm tokens of one encoder pass of this model's backbone configuration;
        attentions: its per-block (B, heads, T, T) probabilities when ``selection_reads_attention``, else None.
        Each step's ``run()`` computes the selection from them. The plain ViT selects nothing.
        """
        return []


# ------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[FGVCModel]] = {}


def register_model(name: str) -> Callable[[type[FGVCModel]], type[FGVCModel]]:
    """Class decorator: make a method available to ``create_model(name, ...)``."""

    def wrap(cls: type[FGVCModel]) -> type[FGVCModel]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        cls.method = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def unregister_model(name: str) -> None:
    """Remove a method from the registry (a test's or a notebook's own method, before it is defined again)."""
    if name not in _REGISTRY:
        raise ValueError(f"model {name!r} is not registered")
    del _REGISTRY[name]


def list_models() -> list[str]:
    """Names accepted by ``create_model``."""
    return sorted(_REGISTRY)


class UnknownMethodError(ValueError):
    """A method name no imported module registers (a method of one's own registers when its module is imported)."""

    def __init__(self, message: str, method: str) -> None:
        super().__init__(message)
        self.method = method


def shipped_methods() -> list[str]:
    """The methods fgvc ships: those its own modules register (one import line each in ``fgvc/methods/__init__``),
    in that order, the order its tables and figures list them."""
    return [name for name, cls in _REGISTRY.items() if cls.__module__.startswith(f"{__package__}.")]


def method_module(method: str) -> ModuleType:
    """The module that registers ``method``: where its declarations (``fgvc.methods.declare``) live."""
    return sys.modules[_check_method(method).__module__]


def declared(attr: str) -> list[Any]:
    """The module-level ``attr`` (``OFFICIAL_FORMAT``, ``RECIPES``, ...) of each module that registers a method and
    declares it, once per module, in registration order: how the generic code reads a method's declarations."""
    modules = dict.fromkeys(cls.__module__ for cls in _REGISTRY.values())
    return [getattr(sys.modules[m], attr) for m in modules if hasattr(sys.modules.get(m), attr)]


def method_variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every registered method's named option sets (``FGVCModel.variants``): ``"<method>_<name>"`` ->
    (method, options), e.g. an ablation or a cheaper mode measured beside the method itself."""
    return {f"{method}_{name}": (method, dict(options))
            for method in list_models() for name, options in _REGISTRY[method].variants.items()}


def resolve_method(name: str) -> tuple[str, dict[str, Any]]:
    """A method or variant name -> (registered method, its options); unknown names raise with the choices."""
    if name in _REGISTRY:
        return name, {}
    variants = method_variants()
    if name in variants:
        return variants[name]
    raise UnknownMethodError(
        f"unknown method {name!r}; available: {', '.join(list_models())}, variants: {', '.join(variants)}", name
    )


def model_class(method: str) -> type[FGVCModel]:
    """The class registered as ``method`` (its ``own_maps``, ``variants``, ... without building a model)."""
    return _check_method(method)


def _check_method(method: str) -> type[FGVCModel]:
    if method not in _REGISTRY:
        from ..hints import did_you_mean

        raise UnknownMethodError(
            f"unknown model {method!r}{did_you_mean(method, _REGISTRY)}; available: {', '.join(list_models())}", method
        )
    return _REGISTRY[method]


def model_options(method: str) -> list[str]:
    """The keyword arguments ``create_model(method, ...)`` accepts: the common ones and the method's own."""
    cls = _check_method(method)
    names: set[str] = set()
    for fn in (FGVCModel.__init__, cls.__init__):
        for p in inspect.signature(fn).parameters.values():
            if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"):
                names.add(p.name)
    return sorted(names - {"options"})


def check_model_options(method: str, options: Any, origin: str = "create_model") -> None:
    """Unknown keyword arguments of a method are named with the near misses and the allowed list."""
    allowed = model_options(method)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hint = did_you_mean_any(unknown, allowed)
        raise ValueError(
            f"{origin}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for method "
            f"{method!r}{hint}; allowed: {', '.join(allowed)}"
        )


def did_you_mean_any(words: list[str], choices: list[str]) -> str:
    """The first near miss among several unknown words (``""`` when none is close)."""
    from ..hints import did_you_mean

    return next((h for h in (did_you_mean(w, choices) for w in words) if h), "")


def create_model(
    method: str,
    *,
    backbone: str = DEFAULT_BACKBONE,
    num_classes: int,
    img_size: int | tuple[int, int] = 224,
    pretrained: bool = False,
    **options: Any,
) -> FGVCModel:
    """Build a method over a timm ViT backbone.

    Args:
        method: one of ``list_models()``, e.g. ``"vit"`` or ``"glsim"``, or a variant name of
            ``method_variants()`` (e.g. ``"glsim_glance"``: the method with the variant's options, which
            ``options`` given here override).
        backbone: timm model name (``vit_base_patch16_224.augreg_in21k``, ``deit_small_patch16_224``, ...).
        num_classes: number of classes of the new head.
        img_size: input resolution, int or (height, width).
        pretrained: load the backbone's timm pretrained weights.
        **options: ``checkpoint_path`` (local backbone weights), ``drop_path_rate``, ``norm_eps`` (LayerNorm
            epsilon of every norm; default timm's), ``patch_stride``
            (overlapping patches, e.g. 12 for TransFG's official 16 px patches with stride 12; not for GLSim),
            ``pos_embed_interpolation`` (how position embeddings are resampled to another grid: ``"bicubic"``,
            ``"bilinear"`` or ``"scipy_zoom"``, the official GLSim / TransFG rule; None: timm's, see
            ``fgvc.backbones.vit.resample_pos_embed``),
            ``backbone_kwargs`` (passed to timm), and the method's own options (e.g. GLSim's ``top_k``).
    """
    if method not in _REGISTRY:
        variants = method_variants()
        if method in variants:
            method, preset = variants[method]
            options = {**preset, **options}
    cls = _check_method(method)
    check_model_options(method, options)
    return cls(
        backbone=backbone, num_classes=num_classes, img_size=img_size, pretrained=pretrained, **options
    )
