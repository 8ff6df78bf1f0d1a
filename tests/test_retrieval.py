"""Retrieval metrics: Recall@K and mAP by leave-one-out cosine k-NN, and their place in ``fgvc.evaluate``."""

import numpy as np
import pytest
import torch
from conftest import TINY
from sklearn.metrics import average_precision_score
from torch.utils.data import TensorDataset

import fgvc
from fgvc.engine.retrieval import retrieval_metrics


def reference(embeddings: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[float, float]:
    """Recall@k and mAP query by query, with scikit-learn's average precision."""
    x = torch.nn.functional.normalize(embeddings, dim=1).numpy()
    y = labels.numpy()
    recalls, aps = [], []
    for i in range(len(y)):
        others = np.arange(len(y)) != i
        sim, rel = x[others] @ x[i], y[others] == y[i]
        if not rel.any():
            continue
        aps.append(average_precision_score(rel, sim))
        recalls.append(rel[np.argsort(-sim)[:k]].any())
    return 100 * float(np.mean(recalls)), 100 * float(np.mean(aps))


def test_recall_and_map_match_a_query_by_query_reference():
    torch.manual_seed(0)
    labels = torch.randint(0, 6, (90,))
    embeddings = torch.randn(90, 16) + 1.5 * torch.nn.functional.one_hot(labels, 16).float()
    result = retrieval_metrics(embeddings, labels, ks=(1, 5), chunk_size=32)  # several chunks
    for k in (1, 5):
        recall, mean_ap = reference(embeddings, labels, k)
        assert result.recall[k] == pytest.approx(recall)
    assert result.map == pytest.approx(mean_ap, abs=1e-4)
    assert result.num_queries == 90


def test_perfectly_clustered_embeddings_score_100_and_a_query_never_finds_itself():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    embeddings = torch.nn.functional.one_hot(labels, 3).float()
    result = retrieval_metrics(embeddings, labels)
    assert result.recall[1] == 100.0 and result.map == 100.0
    # Each image alone in its class: if the query itself were counted, Recall@1 would be 100.
    alone = retrieval_metrics(torch.eye(4), torch.tensor([0, 1, 2, 2]))
    assert alone.num_queries == 2  # the singletons of classes 0 and 1 have nothing to find


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="3 embeddings but 2 labels"):
        retrieval_metrics(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="no query has another image"):
        retrieval_metrics(torch.randn(3, 4), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("method", ["vit", "glsim", "dcal", "transfg"])
def test_evaluate_reports_retrieval_from_every_methods_embedding(method):
    model = fgvc.create_model(method, num_classes=3, img_size=64, **TINY)
    data = TensorDataset(torch.randn(12, 3, 64, 64), torch.arange(12) % 3)
    result = fgvc.evaluate(model, data, batch_size=5, retrieval=True)
    assert set(result.retrieval.recall) == {1, 5}
    assert 0.0 <= result.retrieval.map <= 100.0
    assert {"recall@1", "recall@5", "mAP"} <= set(result.summary())
    assert fgvc.evaluate(model, data).retrieval is None  # off by default: classification only
