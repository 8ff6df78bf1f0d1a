"""Retrieval metrics from embeddings: Recall@K (Rank-K) and mAP by cosine k-NN over one set.

Fine-grained retrieval and re-identification report these beside classification accuracy: every image of
the set is a query against all the *other* images of the same set (leave-one-out), ranked by cosine
similarity of the model's embeddings (``ModelOutput.embedding``); a neighbour is relevant when it has the
query's label.

* ``Recall@K`` (``Rank-K`` in re-identification): the share of queries with at least one relevant image
  among their K nearest neighbours.
* ``mAP``: the mean over queries of the average precision of the whole ranking (the mean of the precision
  at the rank of each relevant image). Queries without any other image of their class are left out of both
  (they have nothing to find); ``num_queries`` says how many counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RetrievalResult", "retrieval_metrics"]


@dataclass
class RetrievalResult:
    """Recall@K (percent, by K) and mAP (percent) over ``num_queries`` queries."""

    recall: dict[int, float]
    map: float
    num_queries: int

    def summary(self) -> dict[str, float]:
        out = {f"recall@{k}": v for k, v in self.recall.items()}
        out["mAP"] = self.map
        return out


@torch.no_grad()
def retrieval_metrics(
    embeddings: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5), chunk_size: int = 1024
) -> RetrievalResult:
    """Leave-one-out cosine retrieval over ``embeddings`` (N, D) with ``labels`` (N,).

    Computed in chunks of ``chunk_size`` queries, so memory is O(chunk_size * N), not O(N^2).
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {tuple(embeddings.shape)}")
    labels = torch.as_tensor(labels).reshape(-1)
    n = embeddings.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"{n} embeddings but {labels.shape[0]} labels")
    if n < 2:
        raise ValueError("retrieval needs at least 2 embeddings")
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be >= 1, got {list(ks)}")
    feats = torch.nn.functional.normalize(embeddings.float(), dim=1)  # (N, D)
    labels = labels.to(feats.device)
    hits = {k: 0 for k in ks}
    ap_sum, counted = 0.0, 0
    ranks = torch.arange(1, n, device=feats.device, dtype=torch.float32)  # (N-1,) ranks 1..N-1
    for start in range(0, n, chunk_size):
        q = torch.arange(start, min(start + chunk_size, n), device=feats.device)  # (Q,)
        sim = feats[q] @ feats.T  # (Q, N)
        sim[torch.arange(len(q)), q] = -torch.inf  # a query never retrieves itself
        order = sim.argsort(dim=1, descending=True)[:, : n - 1]  # (Q, N-1), self dropped (ranked last)
        relevant = (labels[order] == labels[q, None]).float()  # (Q, N-1)
        num_relevant = relevant.sum(1)  # (Q,)
        valid = num_relevant > 0
        precision = relevant.cumsum(1) / ranks  # (Q, N-1) precision at each rank
        ap = (precision * relevant).sum(1) / num_relevant.clamp(min=1)  # (Q,)
        ap_sum += float(ap[valid].sum())
        counted += int(valid.sum())
        for k in ks:
            hits[k] += int((relevant[:, :k].sum(1) > 0)[valid].sum())
    if counted == 0:
        raise ValueError("no query has another image of its class: retrieval metrics are undefined")
    return RetrievalResult(
        recall={k: 100.0 * hits[k] / counted for k in ks}, map=100.0 * ap_sum / counted, num_queries=counted
    )
