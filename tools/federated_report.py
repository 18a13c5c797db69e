"""The federated benchmark's page: one table for every strategy and encoding, targets, plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tools.federated_bench import STRATEGY_CASES
from tools.report import pct, plot_confusion, plot_rounds, render_html, targets_table
from training.data.mitdb import ATTRIBUTION


def cases_table(results: dict) -> str:
    head = ["case", "protocol", "strategy", "encoding", "devices", "rounds", "seeds", "int8 macro F1", "accuracy",
            "S Se / +P", "V Se / +P", "kB up / round", "best round", "wall s / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, case in results["cases"].items():
        st, s = case["settings"], case["summary"]["int8"]
        fleet = case["fleet"]
        cells = [name, st["protocol"], st["strategy"], st["encoding"], str(fleet[0]["devices"]), str(st["rounds"]),
                 str(len(case["runs"])), pct(s["macro_f1"]), pct(s["accuracy"]),
                 f"{pct(s['per_class']['S']['se'])} / {pct(s['per_class']['S']['ppv'])}",
                 f"{pct(s['per_class']['V']['se'])} / {pct(s['per_class']['V']['ppv'])}",
                 f"{np.mean([f['bytes_up_per_round'] for f in fleet]) / 1024:.1f}",
                 ", ".join(str(r["best_epoch"]) for r in case["runs"]),
                 f"{np.mean([f['wall_seconds'] for f in fleet]):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_federated_report(results: dict, out_dir: Path, stem: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = results["cases"]
    images = []
    groups = {"strategies": [c for c in STRATEGY_CASES if c in cases],
              "encodings": [c for c in ("fedavg", "fedavg_int8", "fedavg_topk0.1") if c in cases]}
    for group, names in groups.items():
        if names:
            p = out_dir / f"{stem}_{group}.png"
            images.append(plot_rounds({n: cases[n]["runs"] for n in names},
                                      f"patient split over MQTT: {group} (mean over seeds)", p))
    if "fedavg" in cases:
        cm = np.sum([r["metrics"]["int8"]["confusion"] for r in cases["fedavg"]["runs"]], axis=0)
        p = out_dir / f"{stem}_fedavg_confusion_int8.png"
        images.append(plot_confusion(cm, f"FedAvg over MQTT, DS2, int8, summed over {len(cases['fedavg']['runs'])} seeds",
                                     p))
    central = results.get("centralized")
    central_text = (f"Centralized reference ({central['source']}): DS2 int8 macro F1 {central['int8_macro_f1']:.4f}"
                    if central else "No centralized results found: run `make bench` (it writes them first).")
    within = cases.get("fedavg", {}).get("round_within_0.03")
    md = "\n\n".join([
        f"# pulsewire federated benchmark\n\nCommand: `{results['command']}`  \nData: {results['data_dir']}"
        + "".join(f"  \nPart: `{c}`" for c in results.get("part_commands", [])),
        "## Every case (DS2 or intra-patient test, %, mean ± std over seeds; round chosen on held-out DS1 "
        "patients)\n\n" + cases_table(results),
        "## Targets\n\n" + targets_table(results["targets"]),
        central_text + (f". FedAvg's first round within 0.03 of it, per seed: {within}" if within else ""),
        "\n".join(f"![{p.stem}]({p.name})" for p in images),
        f"Data: {ATTRIBUTION}",
    ])
    (out_dir / f"{stem}.md").write_text(md + "\n")
    (out_dir / f"{stem}.html").write_text(render_html(md, images, out_dir))
    return {"markdown": out_dir / f"{stem}.md", "html": out_dir / f"{stem}.html"}
