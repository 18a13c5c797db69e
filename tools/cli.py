"""`pulsewire`: the one command line. Subcommands import TensorFlow only when they need it."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("pulsewire")


def _cache_root() -> Path:
    return Path(os.environ.get("PULSEWIRE_CACHE", Path.home() / ".cache" / "pulsewire"))


def _data_dir(args: argparse.Namespace) -> Path:
    from training.data.mitdb import locate_mitdb

    return locate_mitdb(args.data_dir or os.environ.get("MITDB_DIR"), _cache_root(),
                        allow_download=not args.offline)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder with the MIT-BIH WFDB files (default: $MITDB_DIR, else a "
                                      "cached download in $PULSEWIRE_CACHE or ~/.cache/pulsewire)")
    p.add_argument("--offline", action="store_true", help="never download; fail if no local copy is found")


def cmd_data(args: argparse.Namespace) -> int:
    from edge_runtime.signal_config import SignalConfig
    from training.data.beat_dataset import load_beats
    from training.data.protocols import make_split, protocol_records

    data_dir = _data_dir(args)
    data = load_beats(data_dir, protocol_records(args.protocol), SignalConfig(), _cache_root())
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
    from training.data.beat_dataset import load_beats
    from training.data.protocols import protocol_records
    from training.experiment import run_seeds

    data_dir = _data_dir(args)
    out = Path(args.out)
    cfg = TrainConfig(signal=SignalConfig(), epochs=args.epochs, min_epochs=min(5, args.epochs))
    started = time.time()
    results: dict = {"command": " ".join(["pulsewire"] + sys.argv[1:]), "data_dir": str(data_dir),
                     "train_config": cfg.to_dict(), "protocols": {}}
    for i, protocol in enumerate(args.protocols, 1):
        log.info("[%d/%d] %s-patient protocol, seeds %s", i, len(args.protocols), protocol, args.seeds)
        data = load_beats(data_dir, protocol_records(protocol), cfg.signal, _cache_root())
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
    _write_results(results, Path(args.json) if args.json else out / "foundation.json")
    return 0


def _write_results(results: dict, json_path: Path) -> None:
    from tools.report import markdown_table, targets_table, write_report

    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    paths = write_report(results, json_path.parent, json_path.stem)
    print("\n" + markdown_table(results) + "\n\n" + targets_table(results["targets"]))
    print(f"\nresults: {json_path}\nreport:  {paths['html']}")


def cmd_simulate(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edge_runtime.signal_config import SignalConfig
    from tools.seed_summary import summarise
    from training.config import TrainConfig
    from training.data.beat_dataset import load_beats
    from training.data.protocols import inter_patient_split, protocol_records
    from training.experiment import export_and_evaluate
    from training.federated.local_training import LocalConfig
    from training.federated.simulation import FederatedConfig, run_simulation

    data_dir = _data_dir(args)
    out = Path(args.out)
    signal = SignalConfig()
    data = load_beats(data_dir, protocol_records("inter"), signal, _cache_root())
    started, runs = time.time(), []
    for seed in args.seeds:
        fed = FederatedConfig(rounds=args.rounds, strategy=args.strategy, partition=args.partition, seed=seed,
                              fraction=args.fraction,
                              local=LocalConfig(epochs=args.local_epochs, learning_rate=args.lr))
        split = inter_patient_split(data, seed)
        train, val, test = data.subset(split.train), data.subset(split.val), data.subset(split.test)
        log.info("seed %d: %s, %s partition, %d rounds", seed, args.strategy, args.partition, args.rounds)
        t0 = time.perf_counter()
        trained = run_simulation(train, val, fed, TrainConfig(signal=signal, seed=seed))
        runs.append(export_and_evaluate(trained, train, test, "inter", seed, split.description,
                                        out / "models" / f"{args.strategy}_seed{seed}", time.perf_counter() - t0))
    results = {"command": " ".join(["pulsewire"] + sys.argv[1:]), "data_dir": str(data_dir),
               "federated": {"strategy": args.strategy, "partition": args.partition, "rounds": args.rounds,
                             "local_epochs": args.local_epochs, "lr": args.lr, "fraction": args.fraction},
               "protocols": {"inter": {"summary": summarise(runs), "runs": [r.to_dict() for r in runs]}},
               "targets": [], "wall_seconds": time.time() - started}
    _write_results(results, Path(args.json) if args.json else out / f"federated_{args.strategy}.json")
    return 0


def _add_run_args(p: argparse.ArgumentParser, out: str, json_default: str) -> None:
    """Seeds and output locations: the same for every experiment command."""
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="report mean/std over these")
    p.add_argument("--out", default=out, help="folder for models and the report")
    p.add_argument("--json", help=f"results JSON path (default: {json_default})")


def build_parser() -> argparse.ArgumentParser:
    from training.federated.strategies import STRATEGIES  # numpy only: keeps --help fast

    parser = argparse.ArgumentParser(prog="pulsewire", description="pulsewire: federated TinyML for wearable ECG, from MIT-BIH to int8 TFLite.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="load MIT-BIH beats and show a protocol's split")
    _add_data_args(p)
    p.add_argument("--protocol", choices=("inter", "intra"), default="inter")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("foundation", help="train centrally, export float32 + int8, evaluate, report",
                       description="Train the beat classifier per protocol and seed, export float32 and int8 "
                                   "TFLite with metadata, evaluate both through the edge classifier and write "
                                   "JSON, Markdown, PNG and HTML results.")
    _add_data_args(p)
    p.add_argument("--protocols", nargs="+", choices=("inter", "intra"), default=["inter", "intra"])
    p.add_argument("--epochs", type=int, default=60, help="maximum epochs (early stopping on validation)")
    _add_run_args(p, "out/foundation", "OUT/foundation.json")
    p.set_defaults(func=cmd_foundation)

    p = sub.add_parser("simulate", help="in-process federated training on the patient split, then int8 export",
                       description="Federated rounds in one process (devices take turns) with the same "
                                   "strategies as the MQTT aggregator; the round is selected on held-out DS1 "
                                   "patients and the exported model is tested on DS2.")
    _add_data_args(p)
    p.add_argument("--strategy", default="fedavg", choices=sorted(STRATEGIES))
    p.add_argument("--partition", default="patient", help="patient | iid:N | dirichlet:ALPHA:N")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--fraction", type=float, default=1.0, help="share of devices per round")
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.3,
                   help="local SGD learning rate (0.3 beat 0.01 and 0.05 on held-out DS1 patients, seed 0)")
    _add_run_args(p, "out/federated", "OUT/federated_STRATEGY.json")
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from training.data.mitdb import DataUnavailable, RecordError

    try:
        return args.func(args)
    except (DataUnavailable, RecordError) as exc:
        print(f"pulsewire: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pulsewire: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
