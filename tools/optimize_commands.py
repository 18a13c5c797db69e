"""`pulsewire export`: distill, prune and quantize-aware-train the beat classifier, export every variant to
int8, check it in TFLite-Micro, and report size against accuracy (`--bench`: all variants, 3 seeds, both
protocols, resumable -> bench/results/optimize.json)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

log = logging.getLogger("pulsewire.optimize")


def chain_from_flags(args: argparse.Namespace) -> tuple[str, ...]:
    """``--distill --prune 0.5 --structured --qat`` -> ("distill", "structured", "qat")."""
    chain = ["distill" if args.distill else "baseline"]
    if args.prune is not None or args.structured:
        chain.append("structured" if args.structured else "prune")
    if args.qat:
        chain.append("qat")
    return tuple(chain)


def cli_variants(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    """The baseline (the reference every stage is measured against) and each prefix of the chain."""
    chain = chain_from_flags(args)
    variants = {"baseline": ("baseline",)}
    for n in range(1, len(chain) + 1):
        variants["_".join(chain[:n])] = chain[:n]
    return variants


def optimize_config(args: argparse.Namespace, protocol: str, seed: int):
    """Intra-patient runs train on 1.7x more beats: they get ``--intra-epochs`` and half the fine-tuning."""
    from training.config import TrainConfig
    from training.optimize.pipeline import OptimizeConfig

    fraction = args.prune if args.prune is not None else 0.5
    epochs, finetune, qat = args.epochs, args.finetune_epochs, args.qat_epochs
    if protocol == "intra":
        epochs, finetune, qat = min(epochs, args.intra_epochs), max(1, finetune // 2), max(1, qat // 2)
    train = TrainConfig(epochs=epochs, min_epochs=min(5, epochs), seed=seed)
    return OptimizeConfig(train=train, sparsity=fraction, structured_fraction=fraction, finetune_epochs=finetune,
                          qat_epochs=qat, tflm_beats=args.tflm_beats)


def _settings(args: argparse.Namespace, variants: dict) -> dict:
    return {"variants": {k: list(v) for k, v in variants.items()}, "protocols": args.protocols,
            "seeds": args.seeds, "quick": args.quick,
            "config": {p: asdict(optimize_config(args, p, 0)) for p in args.protocols}}


def run(args: argparse.Namespace, data_dir: Path, cache_root: Path, json_path: Path) -> dict:
    """Every (protocol, seed) unit in turn; after each, the results so far go to ``<json>.partial.json`` and a
    rerun with the same settings resumes after the last finished unit."""
    from training.data.feature_sets import load_feature_beats
    from training.data.protocols import make_split, protocol_records
    from training.optimize.pipeline import run_variants

    variants = _variants(args)
    settings = _settings(args, variants)
    partial = json_path.with_suffix(".partial.json")
    results = {"command": " ".join(["pulsewire"] + sys.argv[1:]), "data_dir": str(data_dir),
               "settings": settings, "protocols": {}, "elapsed_seconds": 0.0}
    if partial.is_file():
        previous = json.loads(partial.read_text())
        if previous.get("settings") == json.loads(json.dumps(settings)):
            results = previous
            log.info("resuming from %s", partial)
        else:
            log.warning("%s has other settings: starting over", partial)
    for protocol in args.protocols:
        data = load_feature_beats(data_dir, protocol_records(protocol), cache_root, progress=True)
        block = results["protocols"].setdefault(protocol, {"runs": {}, "splits": {}})
        for seed in args.seeds:
            if str(seed) in block["runs"]:
                continue
            started = time.time()
            split = make_split(protocol, data, seed)
            log.info("%s seed %d: %s", protocol, seed, split.description)
            block["runs"][str(seed)] = run_variants(
                data.subset(split.train), data.subset(split.val), data.subset(split.test), variants,
                optimize_config(args, protocol, seed), Path(args.out) / "models", f"{protocol}_seed{seed}")
            block["splits"][str(seed)] = split.description
            results["elapsed_seconds"] += time.time() - started
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(results, indent=1) + "\n")
    return results


def merge_results(parts: list[dict]) -> dict:
    """One results file from runs of separate protocols (or seeds) made in parallel processes."""
    merged = json.loads(json.dumps(parts[0]))
    merged["command"] = " + ".join(p["command"] for p in parts)
    for part in parts[1:]:
        if part["settings"]["variants"] != merged["settings"]["variants"]:
            raise ValueError("--merge needs results with the same variants")
        for protocol, block in part["protocols"].items():
            mine = merged["protocols"].setdefault(protocol, {"runs": {}, "splits": {}})
            mine["runs"].update(block["runs"])
            mine["splits"].update(block["splits"])
        merged["settings"]["config"].update(part["settings"]["config"])
        merged["settings"]["protocols"] = list(dict.fromkeys(merged["settings"]["protocols"] + part["settings"]["protocols"]))
        merged["settings"]["seeds"] = sorted(set(merged["settings"]["seeds"]) | set(part["settings"]["seeds"]))
        merged["elapsed_seconds"] = merged.get("elapsed_seconds", 0) + part.get("elapsed_seconds", 0)
    # a protocol only counts as far as its runs go (a partial file may hold fewer seeds)
    merged["settings"]["protocols"] = [p for p in merged["settings"]["protocols"] if merged["protocols"].get(p, {}).get("runs")]
    return merged


def _variants(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    from training.optimize.pipeline import BENCH_VARIANTS

    return dict(BENCH_VARIANTS) if args.bench else cli_variants(args)


def cmd_export(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.task != "beat":  # other tasks: centralized training and the task exporter (no distill/prune/QAT)
        from tools.task_commands import run_task_command

        return run_task_command(args, "export")
    from tools.data_args import cache_root, resolve_data_dir
    from tools.optimize_report import finish_results, write_optimize_report

    if args.bench:
        args.protocols = args.protocols or ["inter", "intra"]
        args.seeds = args.seeds or [0, 1, 2]
    args.protocols = args.protocols or ["inter"]
    args.seeds = args.seeds or [0]
    if args.quick:
        args.epochs, args.intra_epochs = min(args.epochs, 6), min(args.intra_epochs, 4)
        args.finetune_epochs, args.qat_epochs, args.tflm_beats = 2, 2, min(args.tflm_beats, 500)
    suffix = "-quick" if args.quick else ""
    json_path = Path(args.json) if args.json else Path(args.out) / f"optimize{suffix}.json"
    if args.merge:
        results = merge_results([json.loads(Path(p).read_text()) for p in args.merge])
    elif args.report_only:
        results = json.loads(Path(args.report_only).read_text())
    else:
        results = run(args, resolve_data_dir(args), cache_root(), json_path)
    results = finish_results(results, Path(args.foundation))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    paths = write_optimize_report(results, json_path.parent, json_path.stem)
    print(paths["markdown"].read_text().split("## Per-class")[0])
    print(f"results: {json_path}\nreport:  {paths['html']}")
    return 0


def add_optimize_parser(sub) -> None:
    from tools.data_args import add_data_args

    p = sub.add_parser("export", help="distill / prune / QAT the classifier, export int8 variants, check them in "
                                      "TFLite-Micro, report size vs accuracy",
                       description="Train the baseline and the chain the flags ask for (e.g. --distill --prune 0.5 "
                                   "--structured --qat), export every step to int8 (dense head as 1x1 conv), measure "
                                   "weight bytes, MACs, TFLite-Micro arena, bit-exactness with LiteRT and test metrics. "
                                   "--bench runs the fixed set of variants on 3 seeds and both protocols.")
    add_data_args(p)
    from tools.task_commands import add_task_arg

    add_task_arg(p, "train centrally and export (non-beat tasks: float32 + int8 with the task contract; the "
                    "distill/prune/QAT flags are beat-only)")
    p.add_argument("--distill", action="store_true", help="start from a student taught by a wider teacher")
    p.add_argument("--prune", type=float, metavar="S", help="magnitude pruning to sparsity S (with --structured: "
                                                            "remove a share S of filters and units)")
    p.add_argument("--structured", action="store_true", help="structured pruning (whole filters; default S 0.5)")
    p.add_argument("--qat", action="store_true", help="finish with quantization-aware training")
    p.add_argument("--bench", action="store_true", help="all variants, seeds 0 1 2, protocols inter intra")
    p.add_argument("--quick", action="store_true", help="a few epochs per stage (smoke run; files get -quick)")
    p.add_argument("--protocols", nargs="+", choices=("inter", "intra"), help="default: inter (bench: both)")
    p.add_argument("--seeds", nargs="+", type=int, help="default: 0 (bench: 0 1 2)")
    p.add_argument("--epochs", type=int, default=60, help="max epochs of baseline, teacher and student")
    p.add_argument("--intra-epochs", type=int, default=20, help="max root epochs on the intra protocol")
    p.add_argument("--finetune-epochs", type=int, default=15, help="pruning fine-tuning epochs")
    p.add_argument("--qat-epochs", type=int, default=5)
    p.add_argument("--tflm-beats", type=int, default=2000, help="test beats compared byte for byte")
    p.add_argument("--foundation", default="bench/results/foundation.json", help="foundation results (targets)")
    p.add_argument("--report-only", metavar="JSON", help="rewrite the report of a results file (no training)")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="one report from results (or .partial.json) files of "
                                                              "parallel runs, e.g. one per protocol (no training)")
    p.add_argument("--out", default="out/optimize", help="models, and the report unless --json says otherwise")
    p.add_argument("--json", help="results JSON (default OUT/optimize.json, OUT/optimize-quick.json with --quick)")
    p.set_defaults(func=cmd_export)
