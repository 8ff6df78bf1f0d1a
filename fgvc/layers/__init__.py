"""Building blocks shared by the methods and the visualizations."""

from .blocks import ProbsRequest, attend, block_forward, check_timm_block, gather_tokens
from .rollout import attention_rollout, rollout_map

__all__ = ["ProbsRequest", "attend", "attention_rollout", "block_forward", "check_timm_block", "gather_tokens", "rollout_map"]
