"""Offline reports share the dashboard's look and render their Markdown with a library."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tools.report import plot_confusion, render_html
from tools.report_charts import Chart


def test_report_renders_lists_code_tables_and_escapes_markup():
    md = ("# pulsewire federated benchmark\n\nCommand: `pulsewire fleet --seeds 0 1`  \nData: x\n\n"
          "## Published references\n\n- one: 1\n- two: 2\n\n| a | b |\n|---|---|\n| 1 | <b>2</b> |\n\n"
          "![rounds](run_rounds.png)")
    page = render_html(md, [Chart(Path("run_rounds.png")), Chart(Path("run_confusion.png"))])
    assert "<ul>" in page and page.count("<li>") == 2  # a list, not one paragraph
    assert "<code>pulsewire fleet --seeds 0 1</code>" in page  # no raw backticks
    assert "<table>" in page and "&lt;b&gt;2&lt;/b&gt;" in page  # markup in results is escaped
    assert '<img src="run_rounds.png"' in page and '<img src="run_confusion.png"' in page  # unreferenced appended
    assert page.count("run_rounds.png") == 1
    assert "<title>pulsewire federated benchmark · pulsewire</title>" in page
    assert "header" in page and "http" not in page.split("<main>")[0]  # the dashboard's style, inlined


def test_report_draws_the_dashboards_plotly_charts_from_the_local_bundle(tmp_path):
    cm = np.array([[50, 2, 1, 0, 0], [3, 9, 4, 0, 0], [1, 0, 20, 1, 0], [0, 0, 2, 1, 0], [0, 0, 0, 0, 0]])
    chart = plot_confusion(cm, "test, int8", tmp_path / "run_confusion.png")
    md = "# report\n\n![run_confusion](run_confusion.png)"
    page = render_html(md, [chart], tmp_path)
    assert chart.path.is_file()  # the Markdown keeps its PNG
    assert '<img src="run_confusion.png"' not in page  # the HTML draws the interactive chart instead
    assert '<script src="plotly.min.js"></script>' in page and (tmp_path / "plotly.min.js").stat().st_size > 1e6
    assert '"type": "heatmap"' in page and '"text": [[50, 2, 1, 0, 0]' in page  # the counts, not re-derived
    assert "cdn" not in page.lower()
