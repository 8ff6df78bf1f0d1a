"""The development targets of the cost benchmarks, checked on a ``fgvc.benchmark`` run's ratios.

Development yardsticks for ``method_cost.py`` and ``glsim_cost.py``, printed under their tables; not part of the
package (``fgvc benchmark`` reports figures, never verdicts). Each check is ``value op limit`` on a ratio to the
plain ViT (or, for ``timm``, fgvc's ViT against timm's own model) of the same run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fgvc.studies.benchmark import MethodCost

GLSIM_THROUGHPUT = 0.45  # GLSim's inference throughput over the ViT's, at least
GLSIM_SELECTION_PCT = 0.1  # GLSim's selection step, % of one encoder forward (time and MACs), below
DCAL_MACS = 1.15  # DCAL's inference MACs over the ViT's, at most
CHEAP_CROP_THROUGHPUT = 0.75  # GLSim with a cheaper crop pass (glsim_half, glsim_tokens, ...): throughput, at least
TIMM_THROUGHPUT = 0.98  # fgvc's vit over timm's own model: throughput, at least (the wrapper adds nothing)


@dataclass
class TargetCheck:
    """One target checked on a run's ratios: ``value op limit``."""

    name: str
    img_size: str
    value: float
    op: str  # ">=", "<=" or "<"
    limit: float

    @property
    def met(self) -> bool:
        return {">=": self.value >= self.limit, "<=": self.value <= self.limit, "<": self.value < self.limit}[self.op]

    def __str__(self) -> str:
        verdict = "met" if self.met else "NOT met"
        return f"{self.name} at {self.img_size}: {self.value:.4g} {self.op} {self.limit:g}: {verdict}"


def check_targets(rows: Sequence[MethodCost]) -> list[TargetCheck]:
    """The targets on ``rows`` (only those whose methods and figures were measured)."""
    checks = []
    for r in rows:
        size = r.img_size
        vit = next(v for v in rows if v.method == "vit" and v.img_size == size)
        if r.method == "glsim":
            checks += [
                TargetCheck("glsim inference throughput x ViT", size, r.throughput_ratio, ">=", GLSIM_THROUGHPUT),
                TargetCheck("glsim selection % of encoder MACs", size, r.select_macs_pct, "<", GLSIM_SELECTION_PCT),
                TargetCheck("glsim selection % of encoder time", size, r.select_time_pct, "<", GLSIM_SELECTION_PCT),
            ]
        elif r.method == "dcal":
            checks.append(TargetCheck("dcal inference MACs x ViT", size, r.macs_ratio, "<=", DCAL_MACS))
        elif r.method.startswith("glsim_") and r.method != "glsim_nocrop":  # a cheaper crop pass
            checks.append(TargetCheck(f"{r.method} inference throughput x ViT", size, r.throughput_ratio, ">=",
                                      CHEAP_CROP_THROUGHPUT))
        elif r.method == "timm":
            checks.append(TargetCheck("fgvc vit throughput x timm's model", size, vit.throughput / r.throughput,
                                      ">=", TIMM_THROUGHPUT))
    return [c for c in checks if not math.isnan(c.value)]  # figures not measured in this run are left out


def targets_markdown(rows: Sequence[MethodCost]) -> str:
    """The checked targets as a markdown list to print under ``BenchmarkResult.to_markdown()`` ("" when none)."""
    checks = check_targets(rows)
    return "\n\nTargets (ratios of this run):\n\n" + "\n".join(f"- {t}" for t in checks) if checks else ""
