"""`pulsewire report RESULTS.json [--task NAME]`: the Markdown + HTML page of a results file, for any task.

Why one command: the beat commands write their report as they finish, but a task's runs (`simulate`, `fleet`,
`export --task NAME`) and the task benches write JSON; this renders any of them again, later, without training.
What it reads, by the file's shape (``--task`` must agree with the file's own ``task`` when it names one):

- a beat run (``foundation``/``simulate``/``fleet``: "protocols") or the federated bench ("cases"): the beat
  reports of ``tools.report`` / ``tools.federated_report``, unchanged;
- a task run (``simulate``/``fleet``/``export --task NAME``: "runs" with float32 and int8 test scores): the
  settings, one row per seed, mean ± std over seeds, and the selection curve per seed;
- a task bench result (``tasks bench``: "results" and "targets"; or the merged ``tasks.json``, one task picked
  by ``--task``): the bench plug-in's own ``report_markdown`` when it has one, and the targets table.
"""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_TASK = "beat"


def resolve_task(results: dict, task: str | None) -> tuple[str, dict]:
    """(task name, that task's results): from ``--task`` and the file, or ``ValueError`` saying what disagrees."""
    if "tasks" in results and "task" not in results:  # the merged `tasks bench` file: pick one task
        names = sorted(results["tasks"])
        task = names[0] if task is None and len(names) == 1 else task
        if task not in results["tasks"]:
            raise ValueError(f"this file holds the bench results of {', '.join(names)}: pick one of them with --task")
        return task, results["tasks"][task]
    own = results.get("task") or (DEFAULT_TASK if ("protocols" in results or "cases" in results) else None)
    if own is None and task is None:
        raise ValueError("the file names no task and has no beat results: give --task NAME")
    if task is not None and own is not None and task != own:
        raise ValueError(f"--task {task}, but the file holds results of task {own!r}")
    return task or own, results


def kind_of(results: dict) -> str:
    """"beat-run", "beat-federated-bench", "task-run" or "task-bench" (``ValueError`` for anything else)."""
    if "protocols" in results:
        return "beat-run"
    if "cases" in results:
        return "beat-federated-bench"
    if isinstance(results.get("runs"), list) and results["runs"] and "test" in results["runs"][0]:
        return "task-run"
    if "targets" in results and "results" in results:
        return "task-bench"
    raise ValueError("not a results file this command knows: expected a run of `simulate`/`fleet`/`export` "
                     "(with or without --task), `foundation`, `fleet-bench` or `tasks bench`")


def _stat(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if values else "–"


def scalar_metrics(rows: list[dict]) -> list[str]:
    """Metric names that are a number in every row (nested or text values are left out)."""
    return [k for k in rows[0] if all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                                      for r in rows)] if rows else []


def task_run_markdown(task: str, results: dict, selection_metric: str) -> str:
    """A task run's page: settings, per-seed rows, the test metrics of float32 and int8 as mean ± std."""
    runs = results["runs"]
    settings = results.get("settings", {})
    mode = settings.get("mode", "?")
    unit = "epoch" if mode == "export" else "round"
    lines = [f"# pulsewire: task {task}, {mode} run", "",
             f"Command: `{results.get('command', '?')}`  ", f"Seeds: {results.get('seeds', [r['seed'] for r in runs])}"
             f"; the {unit} is selected on the validation persons by `{selection_metric}`; the test split is "
             "scored once, after selection, by the exported float32 and int8 models through the edge interpreter.",
             "", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in settings.items()]
    metrics = scalar_metrics([r["test"]["int8"] for r in runs])
    lines += ["", "## Test metrics (mean ± std over seeds)", "", "| metric | float32 | int8 |", "|---|---|---|"]
    for m in metrics:
        lines.append(f"| {m} | {_stat([r['test']['float32'].get(m) for r in runs if m in r['test']['float32']])} | "
                     f"{_stat([r['test']['int8'][m] for r in runs])} |")
    m = selection_metric
    lines += ["", "## Per seed", "",
              f"| seed | best {unit} | val {m} | test {m} float32 | test {m} int8 | int8 bytes | float32 bytes | "
              "training s |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        test = r["test"]
        lines.append(f"| {r['seed']} | {r['best_epoch']} | {_num(r['val'].get(m))} | {_num(test['float32'].get(m))} "
                     f"| {_num(test['int8'].get(m))} | {r.get('int8_bytes', 0):,} | {r.get('float32_bytes', 0):,} | "
                     f"{r.get('train_seconds', 0):.0f} |")
    paths = [p for r in runs for p in r.get("model_paths", {}).values()]
    if paths:
        lines += ["", "Models: " + ", ".join(f"`{p}`" for p in paths)]
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}"


def selection_chart(runs: list[dict], metric: str, title: str, path: Path):
    """The validation selection metric per epoch or round, one line per seed (dotted: the kept one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tools.report_charts import Chart, chart_layout

    key = f"val_{metric}"
    fig, ax = plt.subplots(figsize=(6, 3.2))
    data = []
    for run in runs:
        rows = [h for h in run.get("history", []) if key in h]
        x = [h.get("epoch", h.get("round", i + 1)) for i, h in enumerate(rows)]
        y = [h[key] for h in rows]
        line = ax.plot(x, y, label=f"seed {run['seed']}")[0]
        ax.axvline(run["best_epoch"], ls=":", lw=0.8, color=line.get_color())
        data.append({"type": "scatter", "mode": "lines", "x": x, "y": y,
                     "name": f"seed {run['seed']} (selected: {run['best_epoch']})"})
    ax.set_xlabel("epoch / round")
    ax.set_ylabel(key)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Chart(path, {"data": data, "layout": chart_layout(title, xaxis={"title": {"text": "epoch / round"}},
                                                              yaxis={"title": {"text": key}})})


def task_bench_markdown(task: str, results: dict) -> str:
    """The bench plug-in's ``report_markdown(result)`` when it has one; the targets table in any case."""
    from tools.report import targets_table

    try:
        plugin = importlib.import_module(f"tools.task_bench.{task}")
    except ModuleNotFoundError:
        plugin = None
    render = getattr(plugin, "report_markdown", None)
    body = render(results) if render else f"# pulsewire: task {task}, bench\n\nSeeds: {results.get('seeds')}"
    if "## Targets" in body:
        return body
    return body + "\n\n## Targets\n\n" + targets_table(results["targets"])


def write_task_report(results: dict, out_dir: Path, stem: str, task: str | None = None) -> dict[str, Path]:
    """``{stem}.md`` and ``{stem}.html`` (and a PNG for task runs) in ``out_dir``; returns the paths."""
    from tools.report import render_html

    name, picked = resolve_task(results, task)
    kind = kind_of(picked)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "beat-run":
        from tools.report import write_report

        return write_report(picked, out_dir, stem)
    if kind == "beat-federated-bench":
        from tools.federated_report import write_federated_report

        return write_federated_report(picked, out_dir, stem)
    images = []
    if kind == "task-run":
        metric = picked.get("selection_metric") or _selection_metric(name)
        md = task_run_markdown(name, picked, metric)
        if any(r.get("history") for r in picked["runs"]):
            chart = selection_chart(picked["runs"], metric, f"task {name}: validation {metric}",
                                    out_dir / f"{stem}_selection.png")
            images.append(chart)
            md += f"\n\n## Selection\n\n![{chart.stem}]({chart.name})"
    else:
        md = task_bench_markdown(name, picked)
    (out_dir / f"{stem}.md").write_text(md + "\n")
    (out_dir / f"{stem}.html").write_text(render_html(md, images, out_dir))
    return {"markdown": out_dir / f"{stem}.md", "html": out_dir / f"{stem}.html",
            **{c.stem: c.path for c in images}}


def _selection_metric(task: str) -> str:
    """For files written before runs recorded it: ask the task (imports its model code)."""
    from training.tasks.registry import make_task

    return make_task(task).selection_metric


def cmd_report(args: argparse.Namespace) -> int:
    path = Path(args.results)
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if args.task is not None:
        from training.tasks.registry import task_names

        if args.task not in task_names():
            raise ValueError(f"unknown task {args.task!r}; known tasks: {', '.join(task_names())}")
    out = Path(args.out) if args.out else path.parent
    stem = args.stem or (path.stem if args.task is None or "tasks" not in results else f"{path.stem}_{args.task}")
    paths = write_task_report(results, out, stem, args.task)
    print(f"report:  {paths['html']}\nmarkdown: {paths['markdown']}")
    return 0


def add_report_parser(sub) -> None:
    p = sub.add_parser("report", help="render a results file (any task's run or bench) as Markdown + HTML",
                       description="Render the report page of a results JSON without training: a beat run or the "
                                   "federated bench, a task's simulate/fleet/export run (`--task NAME` writes "
                                   "these), or a task bench result (the merged tasks.json needs --task).")
    p.add_argument("results", help="the results JSON")
    p.add_argument("--task", help="the task the file holds (checked against the file; picks one task of tasks.json)")
    p.add_argument("--out", help="folder for the page (default: beside the JSON)")
    p.add_argument("--stem", help="file name stem (default: the JSON's, plus _TASK for tasks.json)")
    p.set_defaults(func=cmd_report)
