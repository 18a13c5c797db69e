"""The anomaly task's three charts as Plotly specs (``tools.report_charts`` style): the score distribution of
normal against abnormal beats, the scores over the beat index, and a 2-D map of the autoencoder's latent codes
(t-SNE where scikit-learn is installed, else PCA: the chart title says which).

Points are subsampled per class and rounded so that the page stays small; the threshold is drawn on the first two.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tools.report_charts import chart_layout

_COLOURS = {"N": "#4c78a8", "S": "#f58518", "V": "#e45756", "F": "#72b7b2"}


def _sample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Row indices: at most ``per_class`` of each class, in their original order."""
    rng = np.random.default_rng(seed)
    keep = [rng.choice(idx, size=min(per_class, idx.size), replace=False)
            for idx in (np.flatnonzero(labels == k) for k in np.unique(labels))]
    return np.sort(np.concatenate(keep)) if keep else np.array([], int)


def distribution_spec(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str], threshold: float,
                      title: str, bin_width: float = 0.05) -> dict[str, Any]:
    """Histograms of log10(score) per class, each normalised to its own count (N outnumbers the rest 30:1);
    binned here, so the page carries bar heights rather than every beat's score."""
    log_scores = np.log10(np.maximum(scores, 1e-6))
    edges = np.arange(np.floor(log_scores.min() / bin_width) * bin_width, log_scores.max() + 2 * bin_width, bin_width)
    centres = np.round((edges[:-1] + edges[1:]) / 2, 3).tolist()
    data = []
    for k, c in enumerate(classes):
        mine = log_scores[labels == k]
        if mine.size:
            share = np.histogram(mine, edges)[0] / mine.size
            data.append({"type": "bar", "x": centres, "y": np.round(share, 4).tolist(), "name": f"{c} ({mine.size})",
                         "opacity": 0.55, "width": bin_width, "marker": {"color": _COLOURS.get(c)}})
    t = float(np.log10(threshold))
    return {"data": data, "layout": chart_layout(title, barmode="overlay",
                                            xaxis={"title": {"text": "log10 reconstruction error"}},
                                            yaxis={"title": {"text": "share of the class's beats"}},
                                            shapes=[_vline(t)], annotations=[_label(t, "threshold")])}


def scatter_spec(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str], threshold: float, title: str,
                 per_class: int = 1500, seed: int = 0) -> dict[str, Any]:
    """Score of each beat against its index in the test stream (records one after another), log scale."""
    keep = _sample(labels, per_class, seed)
    data = [{"type": "scattergl", "mode": "markers", "name": c, "x": keep[labels[keep] == k].tolist(),
             "y": np.round(scores[keep][labels[keep] == k], 5).tolist(),
             "marker": {"size": 3, "color": _COLOURS.get(c)}}
            for k, c in enumerate(classes) if np.any(labels[keep] == k)]
    return {"data": data, "layout": chart_layout(title, xaxis={"title": {"text": "beat index (test records in order)"}},
                                            yaxis={"title": {"text": "reconstruction error"}, "type": "log"},
                                            shapes=[{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": threshold,
                                                     "y1": threshold, "line": {"dash": "dash", "color": "#333"}}])}


def embedding(latent: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """(n, 2) map of latent codes and the method's name: t-SNE (scikit-learn) or, without it, PCA."""
    x = np.asarray(latent, np.float64)
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, "PCA (scikit-learn not installed)"
    perplexity = float(min(30, max(5, (len(x) - 1) // 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x), "t-SNE"


def latent_spec(points: np.ndarray, labels: np.ndarray, classes: Sequence[str], method: str,
                title: str) -> dict[str, Any]:
    data = [{"type": "scattergl", "mode": "markers", "name": c, "x": np.round(points[labels == k, 0], 3).tolist(),
             "y": np.round(points[labels == k, 1], 3).tolist(), "marker": {"size": 4, "color": _COLOURS.get(c)}}
            for k, c in enumerate(classes) if np.any(labels == k)]
    return {"data": data, "layout": chart_layout(f"{title} ({method})", xaxis={"title": {"text": f"{method} 1"}},
                                            yaxis={"title": {"text": f"{method} 2"}})}


def latent_sample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """The rows the latent map is drawn from (t-SNE is quadratic: a few hundred per class)."""
    return _sample(labels, per_class, seed)


def _vline(x: float) -> dict[str, Any]:
    return {"type": "line", "yref": "paper", "y0": 0, "y1": 1, "x0": x, "x1": x,
            "line": {"dash": "dash", "color": "#333"}}


def _label(x: float, text: str) -> dict[str, Any]:
    return {"x": x, "yref": "paper", "y": 1.02, "text": text, "showarrow": False}
