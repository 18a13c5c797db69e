"""A static copy of the dashboard: every page rendered from the database into a folder, with its assets.

The same templates, views and JavaScript as the live server (charts included; no live updates, no
buttons), so ``make demo`` ends with pages one can open from disk or attach to a report.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from broker.topics import NAME_PATTERN
from server import views
from server.render import PAGES, Links, plotly_js, render
from server.repository import Store
from server.web import STATIC

SNAPSHOT = Links(snapshot=True)


def write_snapshot(store: Store, out: Path) -> list[Path]:
    out = Path(out)
    (out / "assets").mkdir(parents=True, exist_ok=True)
    (out / "static").mkdir(exist_ok=True)
    shutil.copyfile(plotly_js(), out / "assets" / "plotly.min.js")
    shutil.copyfile(STATIC / "app.js", out / "assets" / "app.js")
    shutil.copyfile(STATIC / "style.css", out / "static" / "style.css")
    written = []
    with store.session() as repo:
        for name, spec in PAGES.items():
            path = out / f"{name}.html"
            path.write_text(render(f"{name}.html", SNAPSHOT, None, None, spec.title, spec.view(repo)))
            written.append(path)
        for device in repo.devices():
            data = views.device_view(repo, device.name)
            path = out / f"device-{device.name}.html"
            if data is not None and _safe_file_name(device.name):
                path.write_text(render("device.html", SNAPSHOT, None, None, f"Device {device.name}", data))
                written.append(path)
    index = out / "index.html"
    shutil.copyfile(out / "alerts.html", index)
    written.append(index)
    return written


def _safe_file_name(name: str) -> bool:
    """Device names come from the bus; only the topic alphabet may become a file name."""
    return bool(NAME_PATTERN.match(name))
