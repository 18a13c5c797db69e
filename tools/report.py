"""Plots, a Markdown table and an HTML page from foundation results (the files people open)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from edge_runtime.aami import AAMI_CLASSES  # noqa: E402
from tools.report_charts import Chart, confusion_spec, curves_spec, rounds_spec  # noqa: E402
from training.data.mitdb import ATTRIBUTION  # noqa: E402

_PUBLISHED = [
    ("de Chazal et al. 2004 (inter-patient, DS1→DS2)", "VEB Se 77.7 / +P 81.9, SVEB Se 75.9 / +P 38.5"),
    ("Flower-based reference system (intra-patient, 5 clients, 5 FedAvg rounds)", "accuracy 96.16 %"),
]


def pct(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def markdown_table(results: dict) -> str:
    """One row per protocol × model (and × other lead): Se/+P per class, accuracy, macro F1 and the share of
    S beats called V (mean ± std over seeds, %)."""
    head = ["protocol", "model", "seeds"] + [f"{c} Se / +P" for c in AAMI_CLASSES[:4]] + ["accuracy", "macro F1", "S called V"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for protocol, block in results["protocols"].items():
        summ = block["summary"]
        rows = [(kind, summ[kind]) for kind in ("float32", "int8")]
        rows += [(f"{kind}, {lead} lead", by_kind[kind]) for lead, by_kind in summ.get("leads", {}).items()
                 for kind in ("float32", "int8")]
        for kind, s in rows:
            cells = [protocol, kind, str(len(summ["seeds"]))]
            for c in AAMI_CLASSES[:4]:
                cells.append(f"{pct(s['per_class'][c]['se'])} / {pct(s['per_class'][c]['ppv'])}")
            cells += [pct(s["accuracy"]), pct(s["macro_f1"]), pct(s.get("s_called_v"))]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(targets: list[dict]) -> str:
    lines = ["| target | mean over seeds | threshold | met |", "|---|---|---|---|"]
    for t in targets:
        mean = "–" if t["mean"] is None else f"{t['mean']:.4f}"
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {t['target']} | {mean} | {t['threshold']} | {met} |")
    return "\n".join(lines)


def plot_confusion(cm: np.ndarray, title: str, path: Path) -> Chart:
    """Row-normalised (what share of each reference class went where), counts in the cells."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(AAMI_CLASSES)), AAMI_CLASSES)
    ax.set_yticks(range(len(AAMI_CLASSES)), AAMI_CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # long tick labels and titles are not clipped
    plt.close(fig)
    return Chart(path, confusion_spec(cm, list(AAMI_CLASSES), title))


def plot_curves(runs: list[dict], title: str, path: Path) -> Chart:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.2))
    for run in runs:
        ep = [h["epoch"] for h in run["history"]]
        ax1.plot(ep, [h["loss"] for h in run["history"]], label=f"seed {run['seed']}")
        ax2.plot(ep, [h["val_macro_f1"] for h in run["history"]], label=f"seed {run['seed']}")
        ax2.axvline(run["best_epoch"], ls=":", lw=0.8, color=ax2.lines[-1].get_color())
    _finish(fig, {ax1: "training loss (class-weighted)", ax2: "validation macro F1 (dotted: selected)"},
            "epoch (centralized) / round (federated)", title, path)
    return Chart(path, curves_spec(runs, title))


def _finish(fig, titles: dict, xlabel: str, title: str, path: Path) -> None:
    for ax, text in titles.items():
        ax.set_title(text, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # long tick labels and titles are not clipped
    plt.close(fig)


def plot_rounds(cases: dict[str, list[dict]], title: str, path: Path) -> Chart:
    """Per round, mean over seeds: the test macro F1 of each round's global model (reported only, never
    used for selection) and the bytes devices sent."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    series: dict[str, dict[str, list[float]]] = {}
    for name, runs in cases.items():
        n = min(len(r["history"]) for r in runs)
        rounds = np.arange(1, n + 1)
        for ax, key, scale, label in ((ax1, "test_macro_f1", 1.0, "test_macro_f1"),
                                      (ax2, "bytes_received", 1 / 1024, "kb_received")):
            values = [[h.get(key) for h in r["history"][:n]] for r in runs]
            if any(v is None for row in values for v in row):
                continue
            mean = np.mean(values, axis=0) * scale
            ax.plot(rounds, mean, label=name)
            series.setdefault(name, {"test_macro_f1": [], "kb_received": []})[label] = mean.round(4).tolist()
    ax2.set_ylim(bottom=0)
    _finish(fig, {ax1: "test macro F1 of each round's global model (float)", ax2: "kB sent by devices per round"},
            "round", title, path)
    return Chart(path, rounds_spec(series, title))


def write_report(results: dict, out_dir: Path, stem: str) -> dict[str, Path]:
    """``{stem}.md``, ``{stem}.html`` and PNGs in ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for protocol, block in results["protocols"].items():
        cm = np.sum([r["metrics"]["int8"]["confusion"] for r in block["runs"]], axis=0)
        p = out_dir / f"{stem}_{protocol}_confusion_int8.png"
        images.append(plot_confusion(cm, f"{protocol}-patient test, int8, summed over {len(block['runs'])} seeds", p))
        p = out_dir / f"{stem}_{protocol}_training.png"
        images.append(plot_curves(block["runs"], f"{protocol}-patient training", p))
        if "bytes_received" in block["runs"][0]["history"][0]:
            p = out_dir / f"{stem}_{protocol}_rounds.png"
            images.append(plot_rounds({"this run": block["runs"]}, f"{protocol}-patient federated rounds over MQTT", p))
    first = next(iter(results["protocols"].values()))["runs"][0]
    facts = (f"int8 model: {first['int8_bytes']:,} bytes; parameters: {first['stats']['parameters']:,}; "
             f"MACs per beat: {first['stats']['macs_per_beat']:,}; float32 model: {first['float32_bytes']:,} bytes")
    md = "\n\n".join(part for part in [
        f"# {results.get('title', 'pulsewire foundation results')}\n\nCommand: `{results['command']}`  \nData: {results['data_dir']}",
        "## Test metrics (%, mean ± std over seeds; macro F1 over N, S, V, F)\n\n" + markdown_table(results),
        "## Targets\n\n" + targets_table(results["targets"]) if results["targets"] else "",
        "## Model\n\n" + facts,
        _federation_facts(results),
        privacy_ledger(results),
        "## Published references (other protocols and data handling; for orientation only)\n\n"
        + "\n".join(f"- {name}: {val}" for name, val in _PUBLISHED),
        "\n".join(f"![{p.stem}]({p.name})" for p in images),
        f"Data: {ATTRIBUTION}",
    ] if part)
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(md + "\n")
    html_path = out_dir / f"{stem}.html"
    html_path.write_text(render_html(md, images, out_dir))
    return {"markdown": md_path, "html": html_path, **{p.stem: p.path for p in images}}


def _federation_facts(results: dict) -> str:
    """Transport facts of a federated run: broker, devices, rounds, bytes per round, wall time."""
    fed = results.get("federated")
    if not fed:
        return ""
    lines = [f"Strategy {fed['strategy']}, {fed['rounds']} rounds, partition {fed['partition']}, "
             f"transport {fed.get('transport', 'in-process')}, update encoding {fed.get('encoding', 'float32')}.", ""]
    for run in fed.get("runs", []):
        lines.append(f"- seed {run['seed']}: {run['devices']} devices over {run['broker']}, "
                     f"{run['wall_seconds']:.0f} s, rejected messages: {run['rejected'] or 'none'}")
    hist = [h for block in results["protocols"].values() for r in block["runs"] for h in r["history"]]
    if hist and "bytes_received" in hist[0]:
        lines.append("")  # a paragraph of its own, not the list's last item
        lines.append(f"Mean bytes sent by devices per round: {np.mean([h['bytes_received'] for h in hist]):,.0f}; "
                     f"global model message: {hist[0]['model_bytes']:,} bytes.")
    finals = [r["history"][-1]["fairness"] for block in results["protocols"].values() for r in block["runs"]
              if r["history"] and "fairness" in r["history"][-1]]
    if finals:  # how evenly the selection policy asked devices over each run (per-device counts: selection.json)
        lines += ["", f"Device selection over the run (per seed): Jain's index "
                      f"{', '.join(format(f['jain_index'], '.3f') for f in finals)}; devices never chosen "
                      f"{', '.join(str(f['never_chosen']) for f in finals)}; most chosen device "
                      f"{', '.join(str(f['max_count']) for f in finals)} times."]
    return "## Federation\n\n" + "\n".join(lines)


def privacy_ledger(results: dict) -> str:
    """Every round's privacy accounting (DP-FedAvg's or distributed DP's): what a run spent, and on what.

    The columns are whatever the strategy's ledger records (ε by the RDP and PLD accountants, δ, noise
    multiplier, clip norm, participants...), so a new mechanism shows up without touching the report."""
    sections = []
    for protocol, block in results.get("protocols", {}).items():
        for run in block["runs"]:
            rows = [h["privacy"] for h in run.get("history", []) if h.get("privacy")]
            if not rows:
                continue
            keys = list(dict.fromkeys(k for r in rows for k in r))
            lines = ["| " + " | ".join(k.replace("_", " ") for k in keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_ledger_cell(r.get(k)) for k in keys) + " |" for r in rows]
            sections.append(f"### {protocol}, seed {run.get('seed', '?')}\n\n" + "\n".join(lines))
    return "## Privacy ledger (per round)\n\n" + "\n\n".join(sections) if sections else ""


def _ledger_cell(value) -> str:
    if value is None:
        return "∞"  # the JSON has no infinity: an unbounded ε is stored as null
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_html(markdown: str, images: list[Chart], out_dir: Path | None = None) -> str:
    """The report page: Markdown rendered by a library in the dashboard's look (``server.render``). Charts
    with a Plotly spec are drawn interactively, as on the dashboard, in place of their PNG (``plotly.min.js``
    from the installed package is copied beside the page, into ``out_dir``); other images are shown as
    PNGs, appended when the Markdown does not reference them itself."""
    from server.render import plotly_js, render_report

    charts = [c for c in images if c.spec] if out_dir is not None else []
    drawn = {c.name for c in charts}
    lines = [line for line in markdown.splitlines() if not any(line.strip() == f"![{Path(n).stem}]({n})"
                                                               for n in drawn)]
    missing = [p for p in images if p.name not in drawn and f"]({p.name})" not in markdown]
    extra = "\n\n".join(f"![{p.stem}]({p.name})" for p in missing)
    title = next((line.lstrip("# ").strip() for line in markdown.splitlines() if line.startswith("# ")),
                 "pulsewire report")
    if charts:
        (Path(out_dir) / "plotly.min.js").write_bytes(plotly_js().read_bytes())
    body = "\n".join(lines) + ("\n\n" + extra if extra else "")
    return render_report(body, title, [c.spec for c in charts])
