"""Movement clustering: dynamic time warping between repetitions (reaches, supination curves) with
dtaidistance, hierarchical clustering with scipy, and a dendrogram plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisError
from analysis.plotting import pyplot, save


def dtw_distance_matrix(
    series: Sequence[np.ndarray], window: int | None = None, normalize: bool = False
) -> np.ndarray:
    """(R, R) symmetric DTW distances between R series of any lengths, each (T_i,) or (T_i, D).

    ``window`` limits the warping (Sakoe-Chiba band, samples); ``normalize`` z-scores each series first
    (compare shapes, not amplitudes). Missing samples (NaN) are dropped. Uses dtaidistance's C code.
    """
    from dtaidistance import dtw, dtw_ndim

    if len(series) < 2:
        raise AnalysisError(f"need at least 2 series to compare, got {len(series)}")
    arrs = []
    ndim = None
    for i, s in enumerate(series):
        a = np.asarray(s, dtype=np.float64)
        if a.ndim not in (1, 2):
            raise AnalysisError(f"series {i}: shape {a.shape}, expected (T,) or (T, D)")
        a = a[np.isfinite(a).all(axis=1)] if a.ndim == 2 else a[np.isfinite(a)]
        if len(a) < 2:
            raise AnalysisError(f"series {i}: fewer than 2 finite samples")
        if normalize:
            a = (a - a.mean(axis=0)) / np.where(a.std(axis=0) > 0, a.std(axis=0), 1.0)
        d = 1 if a.ndim == 1 else a.shape[1]
        if ndim is not None and d != ndim:
            raise AnalysisError(f"series {i} has {d} dimensions, series 0 has {ndim}")
        ndim = d
        arrs.append(np.ascontiguousarray(a))
    kw: dict[str, Any] = {"use_c": True}
    if window is not None:
        kw["window"] = int(window)
    if ndim == 1:
        m = dtw.distance_matrix([a.reshape(-1) for a in arrs], **kw)
    else:
        m = dtw_ndim.distance_matrix(arrs, ndim=ndim, **kw)
    m = np.asarray(m, dtype=np.float64)
    m = np.where(np.isfinite(m), m, m.T)  # dtaidistance fills only one triangle
    np.fill_diagonal(m, 0.0)
    return np.minimum(m, m.T)


def cluster(
    distances: np.ndarray,
    n_clusters: int | None = None,
    threshold: float | None = None,
    method: str = "average",
) -> tuple[np.ndarray, np.ndarray]:
    """Hierarchical clustering of an (R, R) distance matrix: returns (labels (R,) from 1, linkage matrix).

    Give ``n_clusters`` or a distance ``threshold``; ``method`` is a scipy linkage method for non-Euclidean
    distances (``average``, ``complete``, ``single``, ``weighted``).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise AnalysisError(f"distances must be a square matrix, got {d.shape}")
    if (n_clusters is None) == (threshold is None):
        raise AnalysisError("give exactly one of n_clusters or threshold")
    z = linkage(squareform(d, checks=False), method=method)
    if n_clusters is not None:
        labels = fcluster(z, t=n_clusters, criterion="maxclust")
    else:
        labels = fcluster(z, t=threshold, criterion="distance")
    return labels, z


def plot_dendrogram(
    linkage_matrix: np.ndarray, path: str | Path, labels: Sequence[str] | None = None, title: str = ""
) -> Path:
    """Dendrogram of a linkage matrix as a PNG."""
    plt = pyplot()
    from scipy.cluster.hierarchy import dendrogram

    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * (len(linkage_matrix) + 1)), 4))
    dendrogram(linkage_matrix, labels=list(labels) if labels is not None else None, ax=ax)
    ax.set_ylabel("DTW distance")
    ax.set_title(title or "movement clusters")
    return save(fig, path)
