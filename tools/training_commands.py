"""`pulsewire data` and `pulsewire foundation`: a protocol's split, and centralized training with export,
evaluation and the report; the beat loading and result writing that the federated commands share."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from tools.data_args import add_data_args, cache_root, resolve_data_dir
from tools.experiment_args import CENTRAL_LEADS, add_classifier_args, add_run_args

log = logging.getLogger("pulsewire")


def cmd_data(args: argparse.Namespace) -> int:
    from edge_runtime.signal_config import SignalConfig
    from training.data.beat_dataset import load_beats
    from training.data.protocols import make_split, protocol_records

    data_dir = resolve_data_dir(args)
    data = load_beats(data_dir, protocol_records(args.protocol), SignalConfig(), cache_root())
    split = make_split(args.protocol, data, args.seed)
    print(f"data: {data_dir}\n{split.description}")
    for name, idx in (("train", split.train), ("val", split.val), ("test", split.test)):
        part = data.subset(idx)
        counts = "  ".join(f"{c} {n:6d}" for c, n in part.class_counts().items())
        print(f"{name:5s} {len(part):6d} beats, {len(set(part.record)):2d} records   {counts}")
    return 0


def cmd_foundation(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edge_runtime.signal_config import SignalConfig
    from tools.seed_summary import check_targets, summarise
    from training.config import TrainConfig
    from training.experiment import run_seeds

    data_dir = resolve_data_dir(args)
    out = Path(args.out)
    cfg = TrainConfig(signal=SignalConfig(), epochs=args.epochs, min_epochs=min(5, args.epochs),
                      leads=tuple(args.leads), augment=args.augment, logit_offsets=args.offsets,
                      features=args.features)
    started = time.time()
    results: dict = {"command": " ".join(["pulsewire"] + sys.argv[1:]), "data_dir": str(data_dir),
                     "train_config": cfg.to_dict(), "protocols": {}}
    for i, protocol in enumerate(args.protocols, 1):
        log.info("[%d/%d] %s-patient protocol, seeds %s", i, len(args.protocols), protocol, args.seeds)
        data = protocol_beats(data_dir, protocol, cfg)
        runs = run_seeds(data, protocol, cfg, args.seeds, out / "models")
        for r in runs:
            m = r.metrics["int8"]
            log.info("%s seed %d int8: acc %.4f macro F1 %.4f (S Se %.3f +P %.3f, V Se %.3f +P %.3f)",
                     protocol, r.seed, m["accuracy"], m["macro_f1"], m["per_class"]["S"]["se"] or 0,
                     m["per_class"]["S"]["ppv"] or 0, m["per_class"]["V"]["se"] or 0, m["per_class"]["V"]["ppv"] or 0)
        results["protocols"][protocol] = {"summary": summarise(runs), "runs": [r.to_dict() for r in runs]}
    results["targets"] = check_targets(results["protocols"].get("inter", {}).get("summary"),
                                       results["protocols"].get("intra", {}).get("summary"))
    results["wall_seconds"] = time.time() - started
    write_results(results, Path(args.json) if args.json else out / "foundation.json")
    return 0


def protocol_beats(data_dir: Path, protocol: str, cfg):
    """The protocol's beats on MLII, the second channel (test patients are always also scored on it) and
    the training leads; with ``cfg.augment`` and the inter-patient protocol, perturbed copies of the DS1
    leads (intra-patient splits beats, not patients: a perturbed copy of a test beat would leak)."""
    from training.data.augment import load_augmented
    from training.data.beat_dataset import BeatDataset, load_beats
    from training.data.feature_sets import with_feature_set
    from training.data.protocols import protocol_records
    from training.data.splits import DS1

    leads = tuple(dict.fromkeys(("MLII", *cfg.leads, "other")))
    data = load_beats(data_dir, protocol_records(protocol), cfg.signal, cache_root(), leads=leads)
    if cfg.augment and protocol == "inter":
        data = BeatDataset.concat([data, load_augmented(data_dir, DS1, cfg.signal, cfg.leads, 0, cache_root())])
    elif cfg.augment:
        log.warning("%s-patient protocol: no augmentation (a perturbed copy of a test beat would train)", protocol)
    return with_feature_set(data, cfg.features, cfg.signal)


def write_results(results: dict, json_path: Path) -> None:
    from tools.report import markdown_table, targets_table, write_report

    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    paths = write_report(results, json_path.parent, json_path.stem)
    print("\n" + markdown_table(results) + "\n\n" + targets_table(results["targets"]))
    print(f"\nresults: {json_path}\nreport:  {paths['html']}")


def base_config(args: argparse.Namespace, seed: int):
    from training.config import TrainConfig

    return TrainConfig(seed=seed, leads=tuple(args.leads), augment=args.augment, logit_offsets=args.offsets,
                       features=args.features)


def add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="load MIT-BIH beats and show a protocol's split")
    add_data_args(p)
    p.add_argument("--protocol", choices=("inter", "intra"), default="inter")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data)


def add_foundation_parser(sub) -> None:
    p = sub.add_parser("foundation", help="train centrally, export float32 + int8, evaluate, report",
                       description="Train the beat classifier per protocol and seed, export float32 and int8 "
                                   "TFLite with metadata, evaluate both through the edge classifier and write "
                                   "JSON, Markdown, PNG and HTML results.")
    add_data_args(p)
    p.add_argument("--protocols", nargs="+", choices=("inter", "intra"), default=["inter", "intra"])
    p.add_argument("--epochs", type=int, default=60, help="maximum epochs (early stopping on validation)")
    add_classifier_args(p, CENTRAL_LEADS)
    add_features_arg(p)
    add_run_args(p, "out/foundation", "OUT/foundation.json")
    p.set_defaults(func=cmd_foundation)


def add_features_arg(p: argparse.ArgumentParser) -> None:
    from edge_runtime.template_features import FEATURE_SETS
    from training.config import TrainConfig

    default = TrainConfig.features  # the one place the default lives
    p.add_argument("--features", choices=sorted(FEATURE_SETS), default=default,
                   help=f"model input features (default {default}); rr is the 7 RR features, rr+template adds "
                        "beat-versus-template morphology (defined in integers) and two RR ratios. The edge runtime "
                        "and the C firmware (`firmware generate --frontend`) compute both sets")
