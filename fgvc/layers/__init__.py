"""Building blocks shared by the methods and the visualizations."""

from .blocks import ProbsRequest, attend, block_forward, check_timm_block, gather_tokens
from .geometry import PatchGrid, box_iou_pairs, crop_and_resize
from .rollout import attention_rollout, rollout_map

__all__ = [
    "PatchGrid",
    "ProbsRequest",
    "attend",
    "attention_rollout",
    "block_forward",
    "box_iou_pairs",
    "check_timm_block",
    "crop_and_resize",
    "gather_tokens",
    "rollout_map",
]
