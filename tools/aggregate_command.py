"""`pulsewire aggregate`: the long-running aggregator service of a deployed fleet.

Started from an exported int8 model (``--model``, the ``.tflite`` + ``.json`` that ``foundation`` or
``export`` write) it federates the model's head with the fleet's devices (``training.federated.head_model``);
``--init w.npz`` keeps the older whole-weights mode for TensorFlow devices. Global models are signed with
the fleet's key, updates are accepted only when signed by their device, a held-out set is scored every
round when given, and a restart resumes from the checkpoint in ``--run-dir``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

from tools.experiment_args import label_shift_for, strategy_for

log = logging.getLogger("pulsewire.aggregate")


def _registry(args: argparse.Namespace, fleet) -> dict[str, int]:
    if args.devices:
        try:
            pairs = [item.split(":") for item in args.devices.split(",") if item]
            return {name: int(dev_id) for name, dev_id in pairs}
        except ValueError:
            raise ValueError(f"--devices {args.devices!r}: use NAME:ID,NAME:ID,... (e.g. p101:101,p106:106)") from None
    if fleet is None or not fleet.devices:
        raise ValueError("no devices: enroll some (`pulsewire device enroll NAME --fleet-dir DIR`) or pass --devices")
    return dict(fleet.devices)


def _device_keys(fleet, registry: dict[str, int]) -> dict | None:
    from broker.model_release import load_public_key

    if fleet is None:
        return None
    return {name: load_public_key(fleet.device_pub(name)) for name in registry}


def _held_out(args: argparse.Namespace, features):
    import os

    from edge_runtime.template_features import feature_set_of
    from tools.data_args import cache_root
    from training.data.feature_sets import load_feature_beats
    from training.data.mitdb import locate_mitdb

    cache = cache_root()
    data_dir = locate_mitdb(args.data_dir or os.environ.get("MITDB_DIR"), cache, allow_download=False)
    meta = features.classifier.metadata
    beats = load_feature_beats(data_dir, args.eval_records, cache, feature_set_of(meta.rr_feature_names), meta.signal)
    if args.eval_max_beats and len(beats) > args.eval_max_beats:
        beats = beats.subset(slice(0, args.eval_max_beats))
    log.info("held-out set: %d beats of records %s", len(beats), " ".join(args.eval_records))
    return beats


def cmd_aggregate(args: argparse.Namespace) -> int:
    import numpy as np

    from broker.model_release import load_private_key
    from tools.broker_args import broker_settings, fleet_name, fleet_settings
    from training.federated.aggregator import Aggregator
    from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
    from training.federated.aggregator_workers import coordinator
    from training.federated.head_model import head_evaluator, load_head_model, save_head
    from training.federated.local_config import LocalConfig
    from training.federated.update_log import LogPolicy

    fleet = fleet_settings(args)
    name = fleet_name(args)
    broker = broker_settings(args, "aggregator")
    if broker is None:
        raise ValueError("give --broker URL (with --ca/--cert/--key for mqtts://) or --fleet-config")
    if bool(args.model) == bool(args.init):
        raise ValueError("start from an exported model (--model m_int8.tflite) or, for TensorFlow devices, "
                         "from --init weights.npz (one of the two)")
    registry = _registry(args, fleet)
    evaluate, features, local = None, None, {}
    if args.model:
        features, weights = load_head_model(Path(args.model))
        if args.eval_records:
            held = _held_out(args, features)
            evaluate = head_evaluator(features, held.waves, held.rr, held.labels)
    else:
        with np.load(args.init) as data:
            weights = [data[f"arr_{i}"] for i in range(len(data.files))]
        local = LocalConfig(epochs=args.local_epochs, learning_rate=args.lr, lr_decay=args.lr_decay,
                            label_shift=label_shift_for(args, False),
                            label_shift_floor=args.label_shift_floor).__dict__
    key_path = args.signing_key or (fleet.signing_key if fleet else None)
    cfg = AggregatorConfig(fleet=name, devices=registry, rounds=args.rounds, strategy=strategy_for(args, "fedavg"),
                           strategy_args=dict(args.strategy_arg),
                           policy=RoundPolicy(selection=args.selection, quorum=args.quorum, deadline_s=args.deadline,
                                              late=args.late),
                           local=local, encoding=args.encoding, chunk_size=args.chunk_size, seed=args.seed,
                           device_keys=_device_keys(fleet, registry), dp_noise=args.dp_noise or "secure")
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    signing_key = load_private_key(Path(key_path)) if key_path else None
    log_policy = LogPolicy(args.fsync_every, args.fsync_ms / 1000)
    if args.worker_index is not None:
        return _run_worker(args, cfg, weights, broker, run_dir, log_policy, signing_key)
    if args.workers:
        aggregator = coordinator(cfg, weights, broker, run_dir, args.workers, evaluate=evaluate,
                                 signing_key=signing_key, log_policy=log_policy)
    else:
        aggregator = Aggregator(cfg, weights, broker, run_dir, evaluate=evaluate, signing_key=signing_key,
                                log_policy=log_policy)
    result = aggregator.run()
    if features is not None:
        sha = hashlib.sha256(Path(args.model).read_bytes()).hexdigest()
        save_head(run_dir / "head_best.npz", result.best_weights, sha)
    summary = {"rounds": len(result.history), "best_round": result.best_round, "rejected": result.rejected,
               "participants": [row["participants"] for row in result.history]}
    if result.history and "val_macro_f1" in result.history[-1]:
        summary["val_macro_f1"] = [round(row["val_macro_f1"], 4) for row in result.history]
    print(json.dumps(summary))
    print(f"per-round metrics in {run_dir}/rounds.csv" + (f"; best head in {run_dir}/head_best.npz" if features else ""))
    return 0


def _run_worker(args: argparse.Namespace, cfg, weights, broker, run_dir: Path, log_policy, signing_key) -> int:
    """One aggregator worker (``--worker-index``) until the coordinator's last round, SIGTERM or Ctrl-C."""
    import signal

    from training.federated.aggregator_workers import AggregatorWorker

    worker = AggregatorWorker(cfg, weights, broker, run_dir, args.worker_index, log_policy=log_policy,
                              aggregator_key=signing_key.public_key() if signing_key else None)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop_event.set())
    try:
        worker.run()
    except KeyboardInterrupt:
        worker.stop_event.set()
    taken = "updates_forwarded" if worker.forwarding is not None else "updates_summed"
    print(json.dumps({"worker": args.worker_index, "client_id": worker.client_id,
                      taken: worker.accepted_total, "rejected": dict(worker.service.rejected)}))
    return 0


def add_aggregate_parser(sub, add_federated_args, add_round_policy_args, strategies: list[str]) -> None:
    from tools.broker_args import add_broker_args

    p = sub.add_parser("aggregate", help="run the aggregator service of a fleet (resumes after a crash)",
                       description="The long-running aggregator: publishes signed global models, screens and "
                                   "aggregates updates, scores a held-out set, appends accepted updates to a log "
                                   "in --run-dir (acknowledged after its batched fsync), checkpoints when a round "
                                   "opens and closes, and resumes from there when restarted. From --model it "
                                   "federates the int8 model's head with light devices (`edge run --join`). "
                                   "With --workers N it coordinates N aggregator workers (each started with the "
                                   "same arguments, its own --run-dir and --worker-index I) that share the update "
                                   "stream through an MQTT 5 shared subscription and send partial sums (or, for "
                                   "median, trimmed_mean, krum and norm_bounded without a clip, forward each "
                                   "screened update to the coordinator).")
    p.add_argument("--fleet", help="fleet name (default: from --fleet-config)")
    p.add_argument("--devices", help="registered devices as NAME:ID,... (default: the fleet config's)")
    p.add_argument("--model", help="exported int8 .tflite (with its .json metadata): federate its head")
    p.add_argument("--init", help=".npz of whole-model weights (arr_0, arr_1, ...) for TensorFlow devices")
    p.add_argument("--signing-key", help="Ed25519 key that signs global models (default: the fleet's)")
    p.add_argument("--run-dir", required=True, help="checkpoint and per-round metrics")
    p.add_argument("--seed", type=int, default=0, help="seeds random device selection")
    p.add_argument("--eval-records", nargs="+", help="held-out MIT-BIH records scored every round (val_macro_f1)")
    p.add_argument("--eval-max-beats", type=int, help="score only the first N held-out beats")
    p.add_argument("--data-dir", help="MIT-BIH folder for --eval-records (default: $MITDB_DIR)")
    p.add_argument("--workers", type=int, default=0,
                   help="coordinate N aggregator workers (partial sums, or forwarded updates for the robust "
                        "strategies; not fedbuff; docs/scale.md)")
    p.add_argument("--worker-index", type=int,
                   help="run as aggregator worker I (0..N-1) of a coordinator started with --workers N")
    p.add_argument("--fsync-every", type=int, default=256, help="fsync the update log every N updates (256)")
    p.add_argument("--fsync-ms", type=float, default=20.0, help="... or after this many ms (20)")
    add_federated_args(p, strategies)
    add_round_policy_args(p)
    add_broker_args(p)
    p.set_defaults(func=cmd_aggregate)
