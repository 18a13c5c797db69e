"""Summary over seeds, targets, a Pareto plot and Markdown + HTML for the optimization results."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tools.report import pct, render_html, targets_table  # noqa: E402
from tools.report_charts import Chart, pareto_spec  # noqa: E402

SIZE_LIMIT = 16 * 1024  # bytes of int8 weights, and of TFLite-Micro arena
F1_MARGIN = 0.02


def stat(values: list) -> dict:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    arr = np.asarray(vals)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "min": float(arr.min()), "max": float(arr.max()), "n": int(arr.size)}


def summarise_variant(runs: list[dict]) -> dict:
    """Mean/std over seeds of one variant's metrics; sizes are the same on every seed, arena may vary."""
    def col(*path):
        out = []
        for r in runs:
            node = r
            for key in path:
                node = node[key]
            out.append(node)
        return out

    per_class = {c: {m: stat(col("int8", "per_class", c, m)) for m in ("se", "ppv", "f1")} for c in "NSVF"}
    return {
        "chain": runs[0]["chain"], "seeds": len(runs),
        "int8_macro_f1": stat(col("int8", "macro_f1")), "keras_macro_f1": stat(col("keras", "macro_f1")),
        "int8_accuracy": stat(col("int8", "accuracy")), "val_macro_f1": stat(col("val_macro_f1")),
        "per_class": per_class,
        "file_bytes": stat(col("flatbuffer", "file_bytes")), "weight_bytes": stat(col("flatbuffer", "weight_bytes")),
        "weight_sparsity": stat(col("flatbuffer", "weight_sparsity")),
        "parameters": stat(col("parameters")), "macs_per_beat": stat(col("macs_per_beat")),
        "arena_bytes": stat(col("tflm", "arena_bytes")),
        "tflm_exact_reference": all(col("tflm", "all_identical_reference")),
        "tflm_identical_builtin": stat([r["tflm"]["identical_outputs"] / r["tflm"]["beats"] for r in runs]),
        "ops_outside_firmware_set": sorted({o for r in runs for o in r["flatbuffer"]["ops_outside_firmware_set"]}),
        "train_seconds": stat(col("train_seconds")),
    }


def _foundation(path: Path) -> dict | None:
    if not path.is_file():
        return None
    s = json.loads(path.read_text())["protocols"].get("inter", {}).get("summary")
    return None if not s else {"source": str(path), "float32_macro_f1": s["float32"]["macro_f1"]["mean"],
                                "int8_macro_f1": s["int8"]["macro_f1"]["mean"]}


def _paired_gap(runs: dict, ptq: str, qat: str) -> dict:
    """Per seed, QAT's int8 macro F1 minus PTQ's (same seed, same parent model)."""
    return stat([r[qat]["int8"]["macro_f1"] - r[ptq]["int8"]["macro_f1"] for r in runs.values()
                 if ptq in r and qat in r])


def targets(results: dict) -> list[dict]:
    rows: list[dict] = []
    inter = results.get("summary", {}).get("inter")
    found = results.get("foundation")
    if not inter:
        return rows
    fits = {n: v for n, v in inter.items()
            if v["weight_bytes"]["max"] <= SIZE_LIMIT and v["arena_bytes"]["max"] <= SIZE_LIMIT}
    if fits and found:
        # the deployable variant is chosen on held-out DS1 patients (validation), then judged on DS2
        pick = max(fits, key=lambda n: fits[n]["val_macro_f1"]["mean"])
        v = fits[pick]
        gap = found["float32_macro_f1"] - v["int8_macro_f1"]["mean"]
        rows.append({"target": f"≤ 16 KB int8 weights and arena, DS2 int8 macro F1 within {F1_MARGIN} of the "
                               f"foundation float ({found['float32_macro_f1']:.3f}); variant chosen on validation: "
                               f"{pick} ({v['weight_bytes']['max']:.0f} B weights, {v['arena_bytes']['max']:.0f} B arena)"
                               f" — gap", "mean": gap, "threshold": F1_MARGIN, "met": gap <= F1_MARGIN})
    runs = results["protocols"]["inter"]["runs"]
    pairs = [(n, n + "_qat") for n in inter if n + "_qat" in inter]
    pairs += [("baseline", "qat")] if "qat" in inter and "baseline" in inter else []
    if pairs:
        ptq, qat = min(pairs, key=lambda p: inter[p[0]]["weight_bytes"]["mean"])
        g = _paired_gap(runs, ptq, qat)
        rows.append({"target": f"QAT − PTQ DS2 int8 macro F1 on the smallest model ({qat} vs {ptq}, "
                               f"{inter[ptq]['weight_bytes']['mean']:.0f} B weights; ± {g['std'] or 0:.4f})",
                     "mean": g["mean"], "threshold": "report", "met": None})
    rows.append({"target": "every int8 variant runs in TFLite-Micro, bit-exact with LiteRT reference kernels, "
                           "firmware ops only",
                 "mean": None, "threshold": "all", "met": all(v["tflm_exact_reference"] and not
                                                              v["ops_outside_firmware_set"] for v in inter.values())})
    return rows


def finish_results(results: dict, foundation_path: Path) -> dict:
    """Add the seed summaries, the foundation reference and the targets to raw results."""
    results["summary"] = {p: {name: summarise_variant([run[name] for run in block["runs"].values()])
                              for name in next(iter(block["runs"].values()))}
                          for p, block in results["protocols"].items() if block["runs"]}
    results["foundation"] = _foundation(foundation_path)
    results["targets"] = targets(results)
    return results


def _num(stat_: dict, fmt: str = "{:,.0f}") -> str:
    return "–" if stat_["mean"] is None else fmt.format(stat_["mean"])


def variants_table(results: dict) -> str:
    inter, intra = results["summary"].get("inter", {}), results["summary"].get("intra", {})
    head = ["variant", "chain", "int8 file B", "int8 weights B", "zero weights", "parameters", "MACs/beat",
            "TFLM arena B", "TFLM = LiteRT ref", "TFLM = LiteRT builtin", "DS2 int8 macro F1", "DS2 Keras macro F1",
            "val macro F1", "intra int8 accuracy", "intra macro F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in (inter or intra).items():
        w = intra.get(name)
        lines.append("| " + " | ".join([
            name, " → ".join(v["chain"]), _num(v["file_bytes"]), _num(v["weight_bytes"]),
            _num(v["weight_sparsity"], "{:.0%}"), _num(v["parameters"]), _num(v["macs_per_beat"]),
            _num(v["arena_bytes"]), "all" if v["tflm_exact_reference"] else "**no**",
            _num(v["tflm_identical_builtin"], "{:.2%}"), pct(v["int8_macro_f1"]), pct(v["keras_macro_f1"]),
            pct(v["val_macro_f1"]), pct(w["int8_accuracy"]) if w else "–", pct(w["int8_macro_f1"]) if w else "–",
        ]) + " |")
    return "\n".join(lines)


def per_class_table(summary: dict) -> str:
    head = ["variant"] + [f"{c} Se / +P" for c in "NSVF"] + ["accuracy", "macro F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in summary.items():
        cells = [name] + [f"{pct(v['per_class'][c]['se'])} / {pct(v['per_class'][c]['ppv'])}" for c in "NSVF"]
        lines.append("| " + " | ".join(cells + [pct(v["int8_accuracy"]), pct(v["int8_macro_f1"])]) + " |")
    return "\n".join(lines)


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names not dominated by another point that is no larger and no worse (and better in one)."""
    return [n for n, (x, y) in points.items()
            if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for m, (x2, y2) in points.items() if m != n)]


def plot_pareto(summary: dict, foundation: dict | None, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "weight_bytes", "int8 weight bytes"), (axes[1], "file_bytes", "int8 .tflite bytes")):
        pts = {n: (v[key]["mean"], v["int8_macro_f1"]["mean"]) for n, v in summary.items()}
        front = pareto_front(pts)
        for n, (x, y) in pts.items():
            ax.errorbar(x, y, yerr=summary[n]["int8_macro_f1"]["std"] or 0, fmt="o" if n in front else "x",
                        color="C0" if n in front else "C7", capsize=3)
            ax.annotate(n, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        fx = sorted(front, key=lambda n: pts[n][0])
        ax.plot([pts[n][0] for n in fx], [pts[n][1] for n in fx], "-", color="C0", lw=0.8)
        if foundation:
            ax.axhline(foundation["float32_macro_f1"], ls="--", color="C3", lw=0.8, label="foundation float32")
            ax.axhline(foundation["float32_macro_f1"] - F1_MARGIN, ls=":", color="C3", lw=0.8, label="− 0.02")
        ax.axvline(SIZE_LIMIT, ls=":", color="C2", lw=0.8, label="16 KB")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("DS2 int8 macro F1 (mean ± std over seeds)")
        ax.legend(fontsize=7)
    fig.suptitle("Size against inter-patient macro F1 (circles and line: Pareto front)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_chart(summary: dict, foundation: dict | None) -> dict:
    """The HTML report's interactive twin of the PNG's left panel (int8 weight bytes against macro F1)."""
    points = {n: {"x": v["weight_bytes"]["mean"], "y": v["int8_macro_f1"]["mean"], "y_std": v["int8_macro_f1"]["std"]}
              for n, v in summary.items()}
    front = pareto_front({n: (p["x"], p["y"]) for n, p in points.items()})
    return pareto_spec(points, front, "Size against inter-patient macro F1",
                       reference=foundation["float32_macro_f1"] if foundation else None, size_limit=SIZE_LIMIT)


def write_optimize_report(results: dict, out_dir: Path, stem: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = []
    if "inter" in results["summary"]:
        p = out_dir / f"{stem}_pareto.png"
        summary, foundation = results["summary"]["inter"], results.get("foundation")
        plot_pareto(summary, foundation, p)
        images.append(Chart(p, pareto_chart(summary, foundation)))
    s = results["settings"]
    cfg = next(iter(s["config"].values()))
    notes = (f"Seeds {s['seeds']}, protocols {s['protocols']}{' — QUICK RUN (few epochs), not a result' if s['quick'] else ''}. "
             f"Wall time of the training units: {results.get('elapsed_seconds', 0):.0f} s. Distillation alpha "
             f"{cfg['distill']['alpha']}, T {cfg['distill']['temperature']}, teacher filters "
             f"{cfg['distill']['teacher']['conv_filters']} dense {cfg['distill']['teacher']['dense_units']}; magnitude "
             f"sparsity {cfg['sparsity']}, structured fraction {cfg['structured_fraction']}; epochs per protocol: "
             + "; ".join(f"{p}: roots ≤ {c['train']['epochs']}, pruning fine-tune {c['finetune_epochs']}, QAT "
                         f"{c['qat_epochs']} (lr {c['qat_learning_rate']})" for p, c in s["config"].items())
             + ". Every epoch selected on validation (held-out DS1 patients for inter). The int8 head is exported "
               "as 1x1 CONV_2D; TFLite-Micro is compared with LiteRT's reference kernels (BUILTIN_REF) and with "
               "LiteRT's builtin kernels without delegates on test beats, byte for byte.")
    parts = [f"# pulsewire: model optimization (distillation, pruning, QAT)\n\nCommand: `{results['command']}`  \n"
             f"Data: {results['data_dir']}", notes,
             "## Variants (inter-patient DS2 unless marked intra; %, mean ± std over seeds)\n\n" + variants_table(results),
             "## Targets\n\n" + targets_table(results["targets"]) if results["targets"] else ""]
    for protocol, summary in results["summary"].items():
        parts.append(f"## Per-class test metrics, {protocol}-patient, int8 (%, mean ± std)\n\n" + per_class_table(summary))
    if images:
        parts.append("\n".join(f"![{p.stem}]({p.name})" for p in images))
    md = "\n\n".join(p for p in parts if p)
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(md + "\n")
    html_path = out_dir / f"{stem}.html"
    html_path.write_text(render_html(md, images, out_dir))
    return {"markdown": md_path, "html": html_path, **{p.stem: p.path for p in images}}
