"""Offline reports share the dashboard's look and render their Markdown with a library."""
from __future__ import annotations

from pathlib import Path

from tools.report import render_html


def test_report_renders_lists_code_tables_and_escapes_markup():
    md = ("# pulsewire federated benchmark\n\nCommand: `pulsewire fleet --seeds 0 1`  \nData: x\n\n"
          "## Published references\n\n- one: 1\n- two: 2\n\n| a | b |\n|---|---|\n| 1 | <b>2</b> |\n\n"
          "![rounds](run_rounds.png)")
    page = render_html(md, [Path("run_rounds.png"), Path("run_confusion.png")])
    assert "<ul>" in page and page.count("<li>") == 2  # a list, not one paragraph
    assert "<code>pulsewire fleet --seeds 0 1</code>" in page  # no raw backticks
    assert "<table>" in page and "&lt;b&gt;2&lt;/b&gt;" in page  # markup in results is escaped
    assert '<img src="run_rounds.png"' in page and '<img src="run_confusion.png"' in page  # unreferenced appended
    assert page.count("run_rounds.png") == 1
    assert "<title>pulsewire federated benchmark · pulsewire</title>" in page
    assert "header" in page and "http" not in page.split("<main>")[0]  # the dashboard's style, inlined
