"""`pulsewire scale-bench`: the scale section of `make bench`. N simulated devices held on one Mosquitto
(started here) with a status every 60 s and alerts, and rounds of the real aggregator (`pulsewire aggregate`)
with K selected devices during the hold; targets, the full report and the million-device projection ->
bench/results/scale.json + .md."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools.fleet_sim.cli import add_sim_args, run_simulation, summary_lines
from tools.fleet_sim.projection import project, projection_markdown

BENCH_SELECTION = "power-aware:k=1000"


def scale_targets(report: dict) -> list[dict]:
    """{target, mean, threshold, met}: ``mean`` is the one measured value of this run."""
    return [*held_targets(report), *round_targets(report)]


def round_targets(report: dict) -> list[dict]:
    """Aggregator rounds: all completed, and in each every selected device that did not decline delivered
    an update the aggregator accepted (no dropout in the bench: nobody walks away)."""
    agg = report.get("aggregator")
    if agg is None:
        return []
    want, rows = agg["settings"]["rounds"], agg["rounds"]
    k = max((r["selected"] for r in rows), default=0)
    fewest = min((r["accepted"] for r in rows), default=None)
    complete = all(r["accepted"] == r["selected"] - r["declined"] - r["dropped"] and r["missed"] == 0 for r in rows)
    per_process = report["resources"]["per_process"].get("aggregator", {})
    return [
        {"target": f"aggregator rounds completed (`pulsewire aggregate`, {agg['settings']['selection']}, "
                   f"{report['config']['devices']} devices connected)",
         "mean": len(rows), "threshold": f"== {want}, exit code 0", "met": len(rows) == want and agg.get("exit_code") == 0},
        {"target": f"fewest updates accepted in an aggregator round of {k} selected devices (every selected "
                   "device that did not decline)",
         "mean": fewest, "threshold": "== selected - declined in every round", "met": bool(rows) and complete},
        {"target": "aggregator round wall time, mean s (model published -> round closed; reported)",
         "mean": round(sum(r["seconds"] for r in rows) / len(rows), 2) if rows else None, "threshold": "reported",
         "met": None},
        {"target": "aggregator process: CPU % of one core from its start to the end of the run (reported)",
         "mean": per_process.get("cpu_percent_of_one_core"), "threshold": "reported", "met": None},
        {"target": "aggregator process: peak RSS MiB (reported)", "mean": per_process.get("peak_rss_mib"),
         "threshold": "reported", "met": None},
    ]


def held_targets(report: dict) -> list[dict]:
    """The fleet held on the broker: connections, alerts lost, (transport rounds), messages, CPU and memory."""
    cfg, d, a, res, rounds = (report[k] for k in ("config", "devices", "alerts", "resources", "rounds"))
    broker = res["per_process"].get("broker", {})
    delivered = min((r["updates_seen"] for r in rounds.values()), default=None)
    transport = [] if not cfg["round_devices"] or not cfg["round_every_s"] else [
        {"target": f"transport rounds: fewest updates delivered in a round of {cfg['round_devices']} selected devices",
         "mean": delivered, "threshold": f">= {cfg['round_devices']}",
         "met": None if delivered is None else delivered >= cfg["round_devices"]}]
    return [
        {"target": f"{cfg['devices']} devices connected to one Mosquitto, held for {cfg['duration_s']:.0f} s "
                   "(fewest connected after the ramp)",
         "mean": d["min_connected_while_held"], "threshold": f">= {cfg['devices']}",
         "met": d["min_connected_while_held"] is not None and d["min_connected_while_held"] >= cfg["devices"]},
        {"target": "alerts lost (acknowledged by the broker, never seen by the subscriber)", "mean": a["lost"],
         "threshold": "== 0 (with >= 1 alert sent)", "met": a["lost"] == 0 and a["acked"] > 0},
        *transport,
        {"target": "messages/s acknowledged by the broker (reported)", "mean": report["messages"]["acked_per_s"],
         "threshold": "reported", "met": None},
        {"target": "simulator workers: CPU % of one core (reported)", "mean": res["workers_cpu_percent_of_one_core"],
         "threshold": "reported", "met": None},
        {"target": "simulator workers: peak RSS MiB, summed (reported)", "mean": res["workers_peak_rss_mib"],
         "threshold": "reported", "met": None},
        {"target": "Mosquitto peak RSS MiB (reported)", "mean": broker.get("peak_rss_mib"), "threshold": "reported",
         "met": None},
        {"target": "Mosquitto CPU % of one core (reported)", "mean": broker.get("cpu_percent_of_one_core"),
         "threshold": "reported", "met": None},
    ]


def targets_markdown(targets: list[dict]) -> str:
    lines = ["| target | measured | threshold | met |", "|---|---|---|---|"]
    for t in targets:
        measured = "–" if t["mean"] is None else f"{t['mean']:g}"
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {t['target']} | {measured} | {t['threshold']} | {met} |")
    return "\n".join(lines)


def rounds_markdown(agg: dict | None) -> list[str]:
    """One row per aggregator round: what was selected and accepted, its wall time, and every process's CPU
    (% of one core, from the previous round's close to this one's) and RSS at its close."""
    if not agg or not agg["rounds"]:
        return []
    names = list(agg["rounds"][0]["resources"])
    lines = ["## Aggregator rounds", "", "| round | selected | accepted | declined | updates sent | global model B | "
             "wall s | closed by | " + " | ".join(f"{n} CPU % / RSS MiB" for n in names) + " |",
             "|" + "---|" * (8 + len(names))]
    for r in agg["rounds"]:
        use = [f"{r['resources'][n]['cpu_percent_of_one_core']} / {r['resources'][n]['rss_mib']}" for n in names]
        lines.append(f"| {r['round']} | {r['selected']} | {r['accepted']} | {r['declined']} | {r['updates_sent']} | "
                     f"{r['model_bytes']} | {r['seconds']} | {r['closed_by']} | " + " | ".join(use) + " |")
    return [*lines, ""]


def results_markdown(results: dict) -> str:
    report = results["report"]
    return "\n".join([f"# Scale bench\n\n`{results['command']}`\n", targets_markdown(results["targets"]), "",
                      *(f"- {line}" for line in summary_lines(report)), "", *rounds_markdown(report.get("aggregator")),
                      "## A million devices", "",
                      projection_markdown(results["projection"]), ""])


def cmd_scale_bench(args: argparse.Namespace) -> int:
    if args.quick:
        args.devices, args.duration = min(args.devices, 2000), min(args.duration, 120.0)
        args.rounds = min(args.rounds, 2)
        if args.selection == BENCH_SELECTION:
            args.selection = "power-aware:k=200"
    try:
        report = run_simulation(args)
    except ValueError as exc:
        print(f"pulsewire scale-bench: error: {exc}", file=sys.stderr)
        return 2
    results = {"command": " ".join(["pulsewire"] + sys.argv[1:]), "targets": scale_targets(report),
               "projection": project(report), "report": report}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    md = results_markdown(results)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"results: {out}\nreport:  {out.with_suffix('.md')}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("scale-bench", help="the scale bench: 10,000 simulated devices on one Mosquitto for 10 min",
                       description="Start a Mosquitto, hold --devices simulated devices on it (a status every "
                                   "--status-every s, alerts, a transport round of --round-devices int8 updates "
                                   "every --round-every s) and write targets, the full report and the projection "
                                   "for a million devices (docs/scale.md).")
    add_sim_args(p, devices=10000, duration=600.0)
    p.set_defaults(workers=4, alerts_per_second=20.0, rounds=3, selection=BENCH_SELECTION, deadline=120.0,
                   json="bench/results/scale.json")
    p.add_argument("--quick", action="store_true",
                   help="2,000 devices for 2 minutes, 2 rounds of 200 selected (make bench QUICK=1)")
    p.set_defaults(func=cmd_scale_bench)
