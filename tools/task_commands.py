"""`pulsewire tasks` (the registered tasks), `tasks bench` (every task's bench plug-in, one results file) and
the non-beat branch of `--task NAME` on `simulate`, `fleet` and `export`: load the task's splits, train
(federated in process or over MQTT, or centralized), export float32 + int8 with the task contract, and score
the test split once, after selection, with the exported models."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from tools.experiment_args import strategy_for

log = logging.getLogger("pulsewire.tasks")

DEFAULT_TASK = "beat"


def add_task_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--task NAME`` (default beat: the command's own beat behaviour, unchanged)."""
    p.add_argument("--task", default=DEFAULT_TASK,
                   help=f"task to {what} (default beat; `pulsewire tasks` lists them). For other tasks the "
                        "beat-only options (protocol, leads, offsets, attacks) do not apply")
    p.add_argument("--max-persons", type=int, help="non-beat tasks: at most N persons per split (a small slice)")


def task_or_exit(name: str, max_persons: int | None = None):
    """The registered task, or ``ValueError`` (exit 2) listing the names."""
    from training.tasks.registry import make_task

    return make_task(name, max_persons)


def cmd_tasks(args: argparse.Namespace) -> int:
    from training.tasks.registry import make_task, task_names

    rows = [make_task(n).describe() for n in task_names()]
    if args.json_out:
        print(json.dumps(rows, indent=1))
        return 0
    width = max([len(r["name"]) for r in rows] + [4])
    print(f"{'task':{width}s}  {'selects on':14s}  summary")
    for r in rows:
        print(f"{r['name']:{width}s}  {r['selection_metric']:14s}  {r['summary']}")
        print(f"{'':{width}s}  {'':14s}  classes: {', '.join(r['classes']) or '-'}; alerts: "
              f"{', '.join(r['alerts']) or '-'}; data: {r['data']}")
    return 0


def cmd_tasks_bench(args: argparse.Namespace) -> int:
    """Run ``tools.task_bench.<name>.run(seeds, quick, out_dir)`` for each task and merge the results."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.tasks.registry import task_names

    names = args.only or [n for n in task_names() if _bench_module(n, required=False) is not None]
    unknown = set(names) - set(task_names())
    if unknown:
        raise ValueError(f"--only {' '.join(sorted(unknown))}: not a registered task; known: {', '.join(task_names())}")
    out = Path(args.out)
    json_path = Path(args.json)
    merged = json.loads(json_path.read_text()) if json_path.exists() and args.only else {"tasks": {}}
    merged["command"] = " ".join(["pulsewire"] + sys.argv[1:])
    for name in names:
        module = _bench_module(name, required=True)
        started = time.time()
        log.info("task bench %s: seeds %s%s", name, args.seeds, " (quick)" if args.quick else "")
        result = module.run(list(args.seeds), bool(args.quick), out / name)
        result.setdefault("wall_seconds", time.time() - started)
        merged["tasks"][name] = result
    merged["targets"] = [{"task": n, **t} for n, r in sorted(merged["tasks"].items()) for t in r.get("targets", [])]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(merged, indent=1, default=float) + "\n")
    print(targets_text(merged["targets"]))
    print(f"\nresults: {json_path}")
    return 0


def _cmd_af_selection(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tools.task_bench.af_selection import cmd_af_selection

    return cmd_af_selection(args)


def _cmd_af_ectopy_selection(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tools.task_bench.af_ectopy_selection import cmd_af_ectopy_selection

    return cmd_af_ectopy_selection(args)


def targets_text(targets: list[dict]) -> str:
    lines = [f"{'task':10s} {'target':48s} {'mean':>8s} {'threshold':>10s}  met"]
    for t in targets:
        mean = "n/a" if t.get("mean") is None else f"{t['mean']:.4f}"
        lines.append(f"{t['task']:10s} {t['target'][:48]:48s} {mean:>8s} {t['threshold']!s:>10s}  "
                     f"{'yes' if t.get('met') else 'NO'}")
    return "\n".join(lines)


def _bench_module(name: str, required: bool):
    try:
        return importlib.import_module(f"tools.task_bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tools.task_bench.{name}":
            raise
        if required:
            raise ValueError(f"task {name!r} has no bench plug-in (tools/task_bench/{name}.py)") from exc
        return None


# ------------------------------------------------------------------------------------------ --task on commands
def run_task_command(args: argparse.Namespace, mode: str) -> int:
    """``simulate``/``fleet``/``export`` for a non-beat task: per seed, train (federated in process, over MQTT, or
    centralized), export float32 + int8, score the test split with both exported models, write one JSON."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.tasks.task_run import TaskRunSettings, run_task_seeds

    task = task_or_exit(args.task, args.max_persons)
    settings = TaskRunSettings(mode=mode, rounds=getattr(args, "rounds", 20), strategy=strategy_for(args, "fedavg"),
                               strategy_args=dict(getattr(args, "strategy_arg", []) or []),
                               partition=getattr(args, "partition", "person") or "person",
                               local_epochs=getattr(args, "local_epochs", 2), learning_rate=getattr(args, "lr", 0.3),
                               fraction=getattr(args, "fraction", 1.0), epochs=getattr(args, "epochs", 30),
                               encoding=getattr(args, "encoding", "float32"))
    broker = None
    if mode == "fleet":
        from tools.broker_args import broker_settings

        broker = broker_settings(args)
    seeds = args.seeds or [0]
    out = Path(args.out) / task.name
    results = run_task_seeds(task, settings, seeds, out, broker=broker)
    results["command"] = " ".join(["pulsewire"] + sys.argv[1:])
    json_path = Path(args.json) if args.json else out / f"{mode}_{task.name}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=float) + "\n")
    from tools.task_report import write_task_report

    report = write_task_report(results, json_path.parent, json_path.stem, task.name)
    for row in results["runs"]:
        print(f"seed {row['seed']}: best {'round' if mode != 'export' else 'epoch'} {row['best_epoch']}  "
              f"val {task.selection_metric} {row['val'].get(task.selection_metric, float('nan')):.4f}  "
              f"test float32 {row['test']['float32'].get(task.selection_metric, float('nan')):.4f}  "
              f"int8 {row['test']['int8'].get(task.selection_metric, float('nan')):.4f}  "
              f"({row['int8_bytes']} B int8)")
    print(f"results: {json_path}\nreport:  {report['html']}")
    return 0


def add_tasks_parser(sub) -> None:
    p = sub.add_parser("tasks", help="the learning tasks (beat, tabular, ...) and their bench",
                       description="List the registered tasks (name, selection metric, classes, alerts, data). "
                                   "`tasks bench` runs each task's bench plug-in (tools/task_bench/NAME.py).")
    p.add_argument("--json", dest="json_out", action="store_true", help="print the table as JSON")
    p.set_defaults(func=cmd_tasks)
    tsub = p.add_subparsers(dest="tasks_command")
    b = tsub.add_parser("bench", help="run the tasks' benches (3 seeds) -> one JSON with a flat targets list",
                        description="Imports tools.task_bench.NAME for every task that has one (or --only), runs "
                                    "run(seeds, quick, out_dir) and merges the results (with --only, into an "
                                    "existing --json file).")
    b.add_argument("--only", nargs="+", metavar="NAME", help="these tasks only (default: every task with a bench)")
    b.add_argument("--quick", action="store_true", help="small slices and few rounds (smoke run)")
    b.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    b.add_argument("--out", default="out/tasks", help="folder for models and per-task files")
    b.add_argument("--json", default="bench/results/tasks.json", help="merged results (default %(default)s)")
    b.set_defaults(func=cmd_tasks_bench)
    s = tsub.add_parser("af-selection", help="DS1 leave-records-out + aftdb AF-retention study behind the AF P-wave gate",
                        description="Trains the AF network on DS1 folds (aftdb always trains) and scores the held-out "
                                    "DS1 records for each P-wave gate and episode rule, scores the share of "
                                    "aftdb AF windows each gate keeps, and applies the selection rule written "
                                    "into the JSON first (tools/task_bench/af_selection.py). DS2 is not used.")
    s.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    s.add_argument("--json", default="bench/results/af-ds1-selection.json", help="results (default %(default)s)")
    s.set_defaults(func=_cmd_af_selection)
    e = tsub.add_parser("af-ectopy-selection", help="DS1 leave-records-out + aftdb study behind the AF ectopy gate "
                        "and probability threshold",
                        description="Same DS1 folds and seeds as af-selection; scores every ectopy gate x threshold "
                                    "candidate on the held-out DS1 records and the gates' aftdb AF retention, and "
                                    "applies the selection rule written into the JSON (with written_at) first "
                                    "(tools/task_bench/af_ectopy_selection.py). DS2 is not used.")
    e.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    e.add_argument("--json", default="bench/results/af-ds1-ectopy-selection.json",
                   help="results (default %(default)s)")
    e.set_defaults(func=_cmd_af_ectopy_selection)
