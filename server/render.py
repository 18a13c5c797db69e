"""Pages as HTML: one Jinja2 environment (autoescape on: device-supplied strings are hostile) shared by the
live dashboard and the static snapshot. Page data also goes into the page as JSON (``tojson`` escapes
``<``, ``>``, ``&`` and quotes) for the charts and the live updates of ``static/app.js``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from server import views
from server.repository import Repository

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class PageSpec:
    title: str
    role: str
    view: Callable[[Repository], dict[str, Any]]


PAGES: dict[str, PageSpec] = {
    "alerts": PageSpec("Live alerts", "clinician", views.alerts_view),
    "patients": PageSpec("Patients and consent", "clinician", views.patients_view),
    "fleet": PageSpec("Fleet", "engineer", views.fleet_view),
    "rounds": PageSpec("Rounds", "engineer", views.rounds_view),
    "privacy": PageSpec("Privacy", "engineer", views.privacy_view),
    "security": PageSpec("Security", "engineer", views.security_view),
    "models": PageSpec("Models", "engineer", views.models_view),
    "audit": PageSpec("Audit log", "engineer", views.audit_view),
}

_env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class Links:
    """Where links and assets point: the live server (``/fleet``, ``/assets/...``) or a snapshot folder."""

    snapshot: bool = False

    def page(self, name: str) -> str:
        return f"{name}.html" if self.snapshot else f"/{name}"

    def device(self, name: str) -> str:
        return f"device-{name}.html" if self.snapshot else f"/devices/{name}"

    def asset(self, name: str) -> str:
        return f"assets/{name}" if self.snapshot else f"/assets/{name}"


def markdown_to_html(markdown: str) -> str:
    """CommonMark with tables; raw HTML in the Markdown is escaped, not passed through (results files carry
    command lines and record names, never markup)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)


def plotly_js() -> Path:
    """Plotly's browser bundle from the installed Python package: the dashboard and the reports never load
    anything from a CDN."""
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def render_report(markdown: str, title: str, charts: list[dict[str, Any]] | None = None) -> str:
    """An offline report (``make demo``, ``make bench``) in the dashboard's look, the stylesheet inlined.
    ``charts``: Plotly figure specs drawn as on the dashboard (the page then loads ``plotly.min.js`` from
    its own folder)."""
    style = (Path(__file__).resolve().parent / "static" / "style.css").read_text()
    return _env.get_template("report.html").render(title=title, style=style, body=markdown_to_html(markdown),
                                                   charts=charts or [])


def render(template: str, links: Links, user: str | None, role: str | None, title: str,
           data: dict[str, Any] | None = None, **extra: Any) -> str:
    nav = [(name, spec.title) for name, spec in PAGES.items() if links.snapshot or spec.role == role]
    return _env.get_template(template).render(links=links, user=user, role=role, title=title, nav=nav,
                                              data=data or {}, live=not links.snapshot, **extra)
