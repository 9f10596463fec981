"""DTW distances and hierarchical clustering of movement repetitions."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.clustering import cluster, dtw_distance_matrix, plot_dendrogram
from analysis.errors import AnalysisError


def _bell(n: int, center: float) -> np.ndarray:
    u = np.linspace(0, 1, n)
    return np.exp(-(((u - center) / 0.12) ** 2))


def _double(n: int) -> np.ndarray:
    u = np.linspace(0, 1, n)
    return np.exp(-(((u - 0.3) / 0.08) ** 2)) + np.exp(-(((u - 0.7) / 0.08) ** 2))


def test_dtw_groups_time_warped_repetitions():
    rng = np.random.default_rng(0)
    singles = [
        _bell(int(n), c) + rng.normal(0, 0.01, int(n))
        for n, c in zip(rng.integers(60, 100, 6), rng.uniform(0.3, 0.7, 6), strict=True)
    ]
    doubles = [_double(int(n)) + rng.normal(0, 0.01, int(n)) for n in rng.integers(60, 100, 5)]
    series = singles + doubles
    d = dtw_distance_matrix(series)
    assert d.shape == (11, 11) and np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    # a shifted bell is close under DTW even though the samples do not line up
    a, b = _bell(80, 0.3), _bell(80, 0.7)
    assert dtw_distance_matrix([a, b])[0, 1] < 0.3 * np.linalg.norm(a - b)
    labels, z = cluster(d, n_clusters=2)
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1 and labels[0] != labels[6]
    labels_t, _ = cluster(d, threshold=float(np.max(d[:6, :6])) + 1e-9)
    assert len(set(labels_t[:6])) == 1
    assert z.shape == (10, 4)


def test_dtw_multidimensional_and_errors(tmp_path):
    t = np.linspace(0, 1, 50)
    paths = [np.stack([np.sin(3 * t + k * 0.01), np.cos(3 * t), t], axis=1) for k in range(3)]
    paths.append(np.stack([t, t, t], axis=1))
    d = dtw_distance_matrix(paths, window=10)
    assert d[0, 1] < d[0, 3] and d[1, 2] < d[2, 3]
    _, z = cluster(d, n_clusters=2)
    assert plot_dendrogram(z, tmp_path / "d.png", labels=["a", "b", "c", "line"]).stat().st_size > 3000
    with pytest.raises(AnalysisError, match="series 1 has 2 dimensions, series 0 has 3"):
        dtw_distance_matrix([paths[0], paths[1][:, :2]])
    with pytest.raises(AnalysisError, match="exactly one of"):
        cluster(d)
