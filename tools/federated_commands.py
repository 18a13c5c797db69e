"""`pulsewire simulate`, `fleet` and `fleet-bench`: federated training in process, over MQTT, and the
benchmark of every strategy and encoding, each over seeds with the same report as centralized training."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tools.broker_args import add_broker_args
from tools.data_args import add_data_args, cache_root, resolve_data_dir
from tools.deploy_commands import add_fleet_init_parser
from tools.experiment_args import (
    BEAT_LABEL_SHIFT,
    BEAT_STRATEGY,
    FEDERATED_LEADS,
    add_classifier_args,
    add_federated_args,
    add_round_policy_args,
    add_run_args,
    add_selection_arg,
    label_shift_for,
    strategy_for,
)
from tools.task_commands import DEFAULT_TASK, add_task_arg, run_task_command
from tools.training_commands import (
    add_features_arg,
    base_config,
    protocol_beats,
    write_results,
)


def _federated_runs(args: argparse.Namespace, train_fn, label: str) -> tuple[Path, str, list]:
    """Load the protocol's beats and run ``train_fn`` per seed (shared by ``simulate`` and ``fleet``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.experiment import run_trainer_seeds

    data_dir = resolve_data_dir(args)
    cfg = base_config(args, 0)
    data = protocol_beats(data_dir, args.protocol, cfg)
    return data_dir, label, run_trainer_seeds(data, args.protocol, args.seeds, Path(args.out) / "models", label,
                                              train_fn, leads=cfg.leads, train_tags=cfg.training_lead_tags())


def federated_config(args: argparse.Namespace, seed: int):
    """The run's ``FederatedConfig`` from the federated flags (``add_federated_args``); one device per patient
    unless ``--partition`` says otherwise."""
    from training.federated.local_training import LocalConfig
    from training.federated.simulation import FederatedConfig

    return FederatedConfig(rounds=args.rounds, strategy=args.strategy, strategy_args=dict(args.strategy_arg),
                           partition=getattr(args, "partition", "patient"), seed=seed,
                           dp_noise=getattr(args, "dp_noise", None) or "seeded",
                           fraction=getattr(args, "fraction", 1.0), attack=getattr(args, "attack", None),
                           selection=getattr(args, "selection", None),
                           attackers=getattr(args, "attackers", 0.0),
                           local=LocalConfig(epochs=args.local_epochs, learning_rate=args.lr,
                                             lr_decay=args.lr_decay,
                                             label_shift=label_shift_for(args, BEAT_LABEL_SHIFT),
                                             label_shift_floor=args.label_shift_floor))


def _federated_results(args: argparse.Namespace, data_dir: Path, runs: list, settings: dict, started: float) -> dict:
    from tools.seed_summary import summarise

    return {"command": " ".join(["pulsewire"] + sys.argv[1:]), "data_dir": str(data_dir),
            "federated": {"strategy": args.strategy, "strategy_args": dict(args.strategy_arg),
                          "partition": args.partition, "rounds": args.rounds,
                          "local_epochs": args.local_epochs, "lr": args.lr, "lr_decay": args.lr_decay,
                          "label_shift": label_shift_for(args, BEAT_LABEL_SHIFT),
                          "label_shift_floor": args.label_shift_floor, "leads": list(args.leads),
                          "augment": args.augment, "offsets": args.offsets, **settings},
            "protocols": {args.protocol: {"summary": summarise(runs), "runs": [r.to_dict() for r in runs]}},
            "targets": [], "wall_seconds": time.time() - started}


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.task != DEFAULT_TASK:
        return run_task_command(args, "simulate")
    args.strategy = strategy_for(args, BEAT_STRATEGY)
    from training.federated.aggregator_config import RoundPolicy
    from training.federated.simulation import run_simulation

    if args.selection != "all" and args.fraction != 1.0:
        raise ValueError("give --selection or --fraction, not both")
    RoundPolicy(selection=args.selection)  # a wrong spec fails before the data loads
    started = time.time()
    data_dir, _, runs = _federated_runs(
        args, lambda train, val, test, seed: run_simulation(train, val, federated_config(args, seed),
                                                            base_config(args, seed)), args.strategy)
    results = _federated_results(args, data_dir, runs, {"fraction": args.fraction, "selection": args.selection,
                                                        "transport": "in-process"}, started)
    write_results(results, Path(args.json) if args.json else Path(args.out) / f"federated_{args.strategy}.json")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    if args.task != DEFAULT_TASK:
        return run_task_command(args, "fleet")
    args.strategy = strategy_for(args, BEAT_STRATEGY)
    from tools.broker_args import broker_settings
    from training.federated.aggregator_config import RoundPolicy
    from training.federated.fleet import FleetConfig, run_fleet

    policy = RoundPolicy(selection=args.selection, quorum=args.quorum, deadline_s=args.deadline, late=args.late)
    broker = broker_settings(args)
    started, transport = time.time(), {}

    def train_fn(train, val, test, seed):
        cfg = FleetConfig(federated=federated_config(args, seed), policy=policy, encoding=args.encoding,
                          chunk_size=args.chunk_size, broker_url=broker, max_devices=args.devices,
                          signed=not args.unsigned, dp_noise=args.dp_noise or "secure")
        result = run_fleet(train, val, test, cfg, base_config(args, seed), Path(args.out) / f"run_seed{seed}")
        transport.setdefault("runs", []).append({"seed": seed, "broker": result.broker, "devices": result.devices,
                                                 "rejected": result.rejected, "wall_seconds": result.wall_seconds})
        return result.trained

    label = f"{args.strategy}_{args.encoding.replace(':', '')}"
    data_dir, _, runs = _federated_runs(args, train_fn, label)
    settings = {"transport": "mqtt", "encoding": args.encoding, "chunk_size": args.chunk_size,
                "policy": policy.__dict__, "protocol": args.protocol, **transport}
    results = _federated_results(args, data_dir, runs, settings, started)
    results["title"] = f"pulsewire: federated training over MQTT ({args.strategy}, {args.encoding} deltas)"
    write_results(results, Path(args.json) if args.json else Path(args.out) / f"fleet_{label}.json")
    return 0


def cmd_fleet_bench(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tools.federated_bench import load_centralized, run_bench
    from tools.federated_report import write_federated_report
    from tools.report import targets_table

    json_path = Path(args.json) if args.json else Path(args.out) / "federated.json"
    centralized = load_centralized(Path(args.centralized))
    if args.merge:
        from tools.federated_bench import merge_results

        results = merge_results([json.loads(Path(p).read_text()) for p in args.merge], centralized)
        results["command"] = " ".join(["pulsewire"] + sys.argv[1:])
    else:
        results = {"command": " ".join(["pulsewire"] + sys.argv[1:])}
        results.update(run_bench(resolve_data_dir(args), cache_root(), args.seeds, args.rounds, Path(args.out),
                                 centralized, args.cases, checkpoint=json_path.with_suffix(".partial.json")))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    paths = write_federated_report(results, json_path.parent, json_path.stem)
    print("\n" + paths["markdown"].read_text().split("## Targets")[0].split("\n\n", 2)[-1])
    print(targets_table(results["targets"]) + f"\n\nresults: {json_path}\nreport:  {paths['html']}")
    return 0


def add_simulate_parser(sub, strategies: list[str]) -> None:
    p = sub.add_parser("simulate", help="in-process federated training on the patient split, then int8 export",
                       description="Federated rounds in one process (devices take turns) with the same "
                                   "strategies as the MQTT aggregator; the round is selected on held-out DS1 "
                                   "patients and the exported model is tested on DS2.")
    add_data_args(p)
    add_task_arg(p, "train")
    add_federated_args(p, strategies)
    p.add_argument("--protocol", choices=("inter", "intra"), default="inter")
    p.add_argument("--partition", default="patient", help="patient | iid:N | dirichlet:ALPHA:N (other tasks: their "
                                                          "own specs, e.g. tabular's hospitals | hospitals-skewed)")
    p.add_argument("--fraction", type=float, default=1.0, help="share of devices per round")
    add_selection_arg(p)
    add_classifier_args(p, FEDERATED_LEADS)
    add_features_arg(p)
    p.add_argument("--attack", help="malicious devices: sign_flip | scale:K | gaussian:S | label_flip | replacement:K")
    p.add_argument("--attackers", type=float, default=0.0, help="share of devices that attack (e.g. 0.2)")
    add_run_args(p, "out/federated", "OUT/federated_STRATEGY.json")
    p.set_defaults(func=cmd_simulate)


def add_fleet_parser(sub, strategies: list[str]) -> None:
    p = sub.add_parser("fleet", help="federated training over MQTT: a broker, the aggregator and N devices",
                       description="Start the aggregator and one virtual device per DS1 training patient (each "
                                   "with its own MQTT connection) against --broker, or against a broker started "
                                   "here (Mosquitto when installed, else an embedded one). The round is selected "
                                   "on held-out DS1 patients; the int8 export is tested on DS2.")
    add_data_args(p)
    add_task_arg(p, "train")
    add_federated_args(p, strategies)
    p.add_argument("--protocol", choices=("inter", "intra"), default="inter",
                   help="inter: DS1 devices, DS2 test; intra: beats of 44 records split at random")
    p.add_argument("--partition", default="patient", help="patient | iid:N | dirichlet:ALPHA:N")
    p.add_argument("--devices", type=int, help="use only the first N devices of the partition (default: all)")
    add_broker_args(p, help_extra="a running broker (default: start one). The virtual devices share this one "
                                  "identity and a random fleet name: a transport test, not a deployed fleet",
                    fleet_config=False)
    add_classifier_args(p, FEDERATED_LEADS)
    add_features_arg(p)
    p.add_argument("--unsigned", action="store_true", help="do not sign updates and global models (Ed25519 "
                                                           "keys are otherwise made for the run)")
    add_round_policy_args(p)
    add_run_args(p, "out/fleet", "OUT/fleet_STRATEGY_ENCODING.json")
    p.set_defaults(func=cmd_fleet)
    add_fleet_init_parser(p)


def add_fleet_bench_parser(sub) -> None:
    p = sub.add_parser("fleet-bench", help="every strategy, encoding and the reference setting over MQTT, "
                                           "on the same seeds -> federated.json + report")
    add_data_args(p)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--cases", nargs="+", help="run only these cases (default: all; see tools/federated_bench.py)")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine results files of separate runs (no training)")
    p.add_argument("--centralized", default="bench/results/foundation.json",
                   help="foundation results to compare with (written by make bench before this runs)")
    add_run_args(p, "out/bench-federated", "OUT/federated.json")
    p.set_defaults(func=cmd_fleet_bench)
