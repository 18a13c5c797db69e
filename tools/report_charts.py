"""The report's charts as Plotly figure specs: the offline HTML reports draw the same interactive charts as
the dashboard (Plotly served from the installed package, no CDN), while the Markdown keeps its PNGs.

A spec is plain JSON (``{"data": [...], "layout": {...}}``) handed to ``Plotly.newPlot``; building it needs
no Plotly Python API, only the numbers the PNG is drawn from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_LAYOUT = {"margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "height": 380, "font": {"size": 12},
           "legend": {"orientation": "h", "y": -0.25}}


@dataclass(frozen=True)
class Chart:
    """One figure of a report: its PNG (for the Markdown) and its Plotly spec (for the HTML page)."""

    path: Path
    spec: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def stem(self) -> str:
        return self.path.stem


def chart_layout(title: str, **extra: Any) -> dict[str, Any]:
    """The reports' common Plotly layout (margins, height, legend below) with ``title`` and ``extra`` on top."""
    return {**_LAYOUT, "title": {"text": title}, **extra}


def confusion_spec(cm: np.ndarray, classes: list[str], title: str) -> dict[str, Any]:
    """Row-normalised colours (share of each reference class), counts as the cell text."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    return {"data": [{"type": "heatmap", "z": norm.round(4).tolist(), "x": list(classes), "y": list(classes),
                      "text": cm.astype(int).tolist(), "texttemplate": "%{text}", "colorscale": "Blues", "reversescale": True,
                      "zmin": 0, "zmax": 1, "hovertemplate": "reference %{y}, predicted %{x}: %{text}<extra></extra>"}],
            "layout": chart_layout(title, xaxis={"title": {"text": "predicted"}},
                              yaxis={"title": {"text": "reference"}, "autorange": "reversed"}, width=460)}


def curves_spec(runs: list[dict], title: str) -> dict[str, Any]:
    """Training loss and validation macro F1 per epoch (or round), one line per seed, side by side."""
    data = []
    for run in runs:
        ep = [h["epoch"] for h in run["history"]]
        data.append({"type": "scatter", "mode": "lines", "x": ep, "y": [h["loss"] for h in run["history"]],
                     "name": f"loss, seed {run['seed']}", "xaxis": "x", "yaxis": "y"})
        data.append({"type": "scatter", "mode": "lines", "x": ep, "y": [h["val_macro_f1"] for h in run["history"]],
                     "name": f"val macro F1, seed {run['seed']} (selected: {run['best_epoch']})",
                     "xaxis": "x2", "yaxis": "y2"})
    return {"data": data, "layout": chart_layout(title, grid={"rows": 1, "columns": 2, "pattern": "independent"},
                                            xaxis={"title": {"text": "epoch / round"}},
                                            xaxis2={"title": {"text": "epoch / round"}},
                                            yaxis={"title": {"text": "training loss"}},
                                            yaxis2={"title": {"text": "validation macro F1"}})}


def rounds_spec(series: dict[str, dict[str, list[float]]], title: str) -> dict[str, Any]:
    """``series[name]`` holds per-round means: ``test_macro_f1`` and ``kb_received``."""
    data = []
    for name, s in series.items():
        rounds = list(range(1, len(s["test_macro_f1"]) + 1))
        data.append({"type": "scatter", "mode": "lines", "x": rounds, "y": s["test_macro_f1"],
                     "name": f"{name}: test macro F1", "xaxis": "x", "yaxis": "y"})
        data.append({"type": "scatter", "mode": "lines", "x": rounds, "y": s["kb_received"],
                     "name": f"{name}: kB sent by devices", "xaxis": "x2", "yaxis": "y2"})
    return {"data": data, "layout": chart_layout(title, grid={"rows": 1, "columns": 2, "pattern": "independent"},
                                            xaxis={"title": {"text": "round"}}, xaxis2={"title": {"text": "round"}},
                                            yaxis={"title": {"text": "test macro F1 (float, reported only)"}},
                                            yaxis2={"title": {"text": "kB per round"}, "rangemode": "tozero"})}


def pareto_spec(points: dict[str, dict[str, float]], front: list[str], title: str,
                reference: float | None = None, size_limit: float | None = None,
                x_title: str = "int8 weight bytes") -> dict[str, Any]:
    """Size against score, one marker per variant (its seed spread as the error bar), the Pareto front joined.

    ``points[name]`` holds ``x``, ``y`` and ``y_std``; ``reference`` draws the foundation's score,
    ``size_limit`` the size target."""
    def trace(names: list[str], label: str, symbol: str, mode: str) -> dict[str, Any]:
        return {"type": "scatter", "mode": mode, "name": label, "x": [points[n]["x"] for n in names],
                "y": [points[n]["y"] for n in names], "text": names, "textposition": "top right",
                "marker": {"symbol": symbol, "size": 9},
                "error_y": {"type": "data", "array": [points[n].get("y_std") or 0 for n in names]},
                "hovertemplate": "%{text}: %{x:,.0f} bytes, %{y:.3f}<extra></extra>"}

    on_front = sorted(front, key=lambda n: points[n]["x"])
    off_front = [n for n in points if n not in front]
    shapes = []
    if reference is not None:
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": reference, "y1": reference,
                       "line": {"dash": "dash", "color": "#c0392b", "width": 1}})
    if size_limit is not None:
        shapes.append({"type": "line", "yref": "paper", "y0": 0, "y1": 1, "x0": size_limit, "x1": size_limit,
                       "line": {"dash": "dot", "color": "#27ae60", "width": 1}})
    return {"data": [trace(on_front, "Pareto front", "circle", "lines+markers+text"),
                     trace(off_front, "dominated", "x", "markers+text")],
            "layout": chart_layout(title, shapes=shapes, xaxis={"title": {"text": x_title}, "type": "log"},
                              yaxis={"title": {"text": "DS2 int8 macro F1 (mean ± std over seeds)"}})}
