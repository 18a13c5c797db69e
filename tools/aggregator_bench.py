"""`pulsewire aggregator-bench`: the aggregator's cost per accepted update and its checkpoint size per round.

One aggregator worker's whole receive path on real messages: int8 UPDATE messages of the 4,757-parameter
beat classifier, Ed25519-signed by their device, go through ``Aggregator.take`` exactly as they come off
MQTT (topic parse, wire decode, signature check, sender check, the round engine's screen, the fixed-point
running sum, the append to the update log with batched fsync, the held acknowledgement), without the
broker: the broker's share of the cost is measured by the scale bench. Then the round is closed and the
checkpoint's size recorded, for rounds of different sizes: it must not grow with the number of updates.

Reported beside it: the forwarding mode of workers (strategies that need every update, here the median):
a worker's receive path that ends in a forward batch (int8 + scale) instead of the running sum, and the
coordinator's side, which decodes the batches and screens each update once more, then runs the median.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.fed_messages import LocalUpdate, UpdateEncoding, encode_update
from broker.mqtt_link import Message
from broker.signing import sign_message
from broker.topics import FleetTopics
from training.federated.aggregator import CHECKPOINT_FILE, Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.forwarded_updates import ForwardAccepted, ForwardingWorkers
from training.federated.update_log import LogPolicy

#: The beat classifier's tensors (conv 7/5/5 with 8/16/32 filters, dense 32 on 32 + 7 RR features, 5 classes).
CLASSIFIER_SHAPES = [(7, 1, 8), (8,), (5, 8, 16), (16,), (5, 16, 32), (32,), (39, 32), (32,), (32, 5), (5,)]
FLEET = "bench"


def classifier_weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.1, s).astype(np.float32) for s in CLASSIFIER_SHAPES]


def device_names(n: int) -> dict[str, int]:
    return {f"dev{i:06d}": 1000 + i for i in range(n)}


def update_messages(devices: dict[str, int], round_: int, seed: int, keys: dict | None = None,
                    encoding: str = "int8") -> list[tuple[str, bytes]]:
    """(device, message) pairs: each device's int8 delta for ``round_``, signed with its key when given."""
    rng = np.random.default_rng([seed, round_])
    out = []
    for name, dev_id in devices.items():
        delta = [rng.normal(0, 0.01, s).astype(np.float32) for s in CLASSIFIER_SHAPES]
        data = encode_update(FLEET, round_, dev_id, LocalUpdate(delta, int(rng.integers(20, 400)), 5,
                                                                train_loss=float(rng.uniform(0.2, 1.0))),
                             UpdateEncoding.parse(encoding))
        out.append((name, sign_message(data, keys[name]) if keys else data))
    return out


def bench_aggregator(devices: int, rounds: int, run_dir: Path, seed: int, signed: bool,
                     log_policy: LogPolicy) -> list[dict]:
    """Per round: accepted updates per second through ``Aggregator.take`` and the checkpoint's bytes."""
    names = device_names(devices)
    keys = {n: Ed25519PrivateKey.generate() for n in names} if signed else None
    cfg = AggregatorConfig(FLEET, names, rounds=rounds, policy=RoundPolicy(deadline_s=60),
                           device_keys={n: k.public_key() for n, k in keys.items()} if keys else None,
                           honour_consent=False, encoding="int8")
    agg = Aggregator(cfg, classifier_weights(seed), "mqtt://127.0.0.1:1", run_dir, log_policy=log_policy)
    topics = FleetTopics(FLEET)
    rows = []
    for r in range(1, rounds + 1):
        agg.open_round()
        messages = update_messages(names, r, seed, keys)
        started, cpu_started = time.perf_counter(), time.process_time()
        for mid, (name, data) in enumerate(messages, 1):
            agg.take(Message(topics.update(r, name), data, mid, 1))
        agg.journal.sync()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        assert len(agg.accepted) == devices, f"only {len(agg.accepted)} of {devices} accepted: {dict(agg.rejected)}"
        log_bytes, fsyncs = agg.journal.log.size, agg.journal.log.fsyncs
        agg._close_round()
        rows.append({"round": r, "updates": devices, "seconds": seconds, "cpu_seconds": cpu,
                     "updates_per_s": devices / seconds, "updates_per_cpu_s": devices / cpu,
                     "fsyncs": fsyncs, "log_bytes": log_bytes,
                     "checkpoint_bytes": (run_dir / CHECKPOINT_FILE).stat().st_size,
                     "message_bytes": len(messages[0][1])})
    agg.journal.log.close()
    return rows


def bench_forwarding(devices: int, run_dir: Path, seed: int, log_policy: LogPolicy, batch: int = 256) -> dict:
    """One forwarding worker (median) and its coordinator, without the broker: the worker's signed updates per
    CPU second up to the forward batches, the coordinator's per CPU second from the batches, its median close."""
    names = device_names(devices)
    keys = {n: Ed25519PrivateKey.generate() for n in names}
    cfg = AggregatorConfig(FLEET, names, rounds=1, strategy="median", policy=RoundPolicy(deadline_s=60),
                           device_keys={n: k.public_key() for n, k in keys.items()}, honour_consent=False,
                           encoding="int8")
    worker = Aggregator(cfg, classifier_weights(seed), "mqtt://127.0.0.1:1", run_dir / "worker", log_policy=log_policy)
    worker.mode = forwarding = ForwardAccepted()
    worker.open_round()
    topics, batches = FleetTopics(FLEET), []
    messages = update_messages(names, 1, seed, keys)
    started = time.process_time()
    for mid, (name, data) in enumerate(messages, 1):
        worker.take(Message(topics.update(1, name), data, mid, 1))
        if len(forwarding.outbox) >= batch:
            batches.append(forwarding.flush())
    batches.append(forwarding.flush())
    worker.journal.sync()
    worker_cpu = time.process_time() - started
    worker.journal.log.close()
    coord = Aggregator(cfg, classifier_weights(seed), "mqtt://127.0.0.1:1", run_dir / "coord", log_policy=log_policy)
    coord.open_round()
    receiving = ForwardingWorkers(1)
    started = time.process_time()
    for data in batches:
        receiving.note(coord, "forward", 0, data)
    coord_cpu = time.process_time() - started
    assert len(coord.accepted) == devices, f"coordinator took {len(coord.accepted)} of {devices}"
    started = time.process_time()
    coord._close_round()
    close_cpu = time.process_time() - started
    coord.journal.log.close()
    return {"updates": devices, "worker_updates_per_cpu_s": devices / worker_cpu,
            "coordinator_updates_per_cpu_s": devices / coord_cpu, "median_close_cpu_s": close_cpu,
            "forward_bytes_per_update": sum(len(b) for b in batches) / devices,
            "message_bytes": len(messages[0][1])}


def checkpoint_growth(counts: list[int], seed: int, log_policy: LogPolicy) -> list[dict]:
    """The checkpoint after one round of each size (fresh run each)."""
    out = []
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            row = bench_aggregator(n, 1, Path(tmp), seed, signed=False, log_policy=log_policy)[0]
        out.append({"updates": n, "checkpoint_bytes": row["checkpoint_bytes"], "log_bytes": row["log_bytes"]})
    return out


def _measure(args: argparse.Namespace, signed: bool, policy: LogPolicy) -> tuple[list[float], list[float], list[dict]]:
    """Per-CPU-second and per-wall-second rates of ``--repeats`` rounds (one seed each) and their rows."""
    cpu, wall, runs = [], [], []
    for seed in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            rows = bench_aggregator(args.devices, 1, Path(tmp), seed, signed=signed, log_policy=policy)
        runs += [{**r, "signed": signed} for r in rows]
        cpu.append(rows[0]["updates_per_cpu_s"])
        wall.append(rows[0]["updates_per_s"])
    return cpu, wall, runs


def _rate(target: str, values: list[float], threshold: float | None) -> dict:
    mean = statistics.mean(values)
    return {"target": target, "mean": round(mean, 1), "spread": [round(min(values), 1), round(max(values), 1)],
            "threshold": f">= {threshold:g}" if threshold else "reported",
            "met": (mean >= threshold) if threshold else None}


def forwarding_targets(rows: list[dict]) -> list[dict]:
    """The forwarding mode's rates (reported: the target is the summing worker's)."""
    n = rows[0]["updates"]
    close = _rate(f"forwarding coordinator: CPU seconds of the median over {n} updates at the close (reported)",
                  [r["median_close_cpu_s"] for r in rows], None)
    seconds = [r["median_close_cpu_s"] for r in rows]
    close.update(mean=round(statistics.mean(seconds), 3), spread=[round(min(seconds), 3), round(max(seconds), 3)])
    return [_rate("forwarding worker (median): accepted signed int8 updates per CPU second, decoded, screened, "
                  "logged and forwarded as int8 + scale (reported)", [r["worker_updates_per_cpu_s"] for r in rows],
                  None),
            _rate("forwarding coordinator: forwarded updates taken in per CPU second (reported)",
                  [r["coordinator_updates_per_cpu_s"] for r in rows], None), close,
            _rate(f"forward bytes per update (the signed device message: {rows[0]['message_bytes']}) (reported)",
                  [r["forward_bytes_per_update"] for r in rows], None)]


def targets(cpu: list[float], wall: list[float], other: list[float], signed: bool, growth: list[dict]) -> list[dict]:
    """``cpu``: updates per CPU second of the worker (one core's worth: the measure that depends least on what
    else the shared machine runs); ``wall``: per wall-clock second; ``other``: per CPU second with the other
    signing choice (reported)."""
    sizes = [g["checkpoint_bytes"] for g in growth]
    spread = max(sizes) - min(sizes)
    what = "signed" if signed else "unsigned"
    rows = [_rate(f"accepted int8 updates per CPU second per worker (4,757 parameters, {what}, decoded, screened, "
                  "summed, logged with batched fsync)", cpu, 2000),
            _rate("the same per wall-clock second on this shared machine (reported)", wall, None)]
    if other:
        rows.append(_rate(f"the same, {'unsigned' if signed else 'signed'}, per CPU second (reported)", other, None))
    rows.append({"target": f"checkpoint bytes per round: largest minus smallest over rounds of "
                           f"{', '.join(str(g['updates']) for g in growth)} updates", "mean": spread,
                 "threshold": "< 256 (independent of the number of updates)", "met": spread < 256})
    return rows


def cmd_aggregator_bench(args: argparse.Namespace) -> int:
    if args.devices < 1 or args.repeats < 1:
        print("pulsewire aggregator-bench: error: --devices and --repeats must be >= 1", file=sys.stderr)
        return 2
    try:
        policy = LogPolicy(args.fsync_every, args.fsync_ms / 1000)
    except ValueError as exc:
        print(f"pulsewire aggregator-bench: error: {exc} (--fsync-every, --fsync-ms)", file=sys.stderr)
        return 2
    logging.getLogger("training.federated").setLevel(logging.ERROR)
    load_before = os.getloadavg()[0]
    cpu, wall, runs = _measure(args, not args.unsigned, policy)
    other, _, other_runs = _measure(args, args.unsigned, policy) if not args.unsigned else ([], [], [])
    growth = checkpoint_growth([10, 200, 2000], 0, policy)
    forwarding = []
    for seed in range(args.repeats if args.forwarding else 0):
        with tempfile.TemporaryDirectory() as tmp:
            forwarding.append(bench_forwarding(args.devices, Path(tmp), seed, policy))
    results = {"command": " ".join(["pulsewire"] + sys.argv[1:]),
               "targets": targets(cpu, wall, other, not args.unsigned, growth)
               + (forwarding_targets(forwarding) if forwarding else []),
               "runs": runs + other_runs, "checkpoint_growth": growth, "forwarding": forwarding,
               "config": {"devices": args.devices, "repeats": args.repeats, "signed": not args.unsigned,
                          "fsync_every": args.fsync_every, "fsync_ms": args.fsync_ms, "parameters": 4757,
                          "encoding": "int8", "load_average_1min": [round(load_before, 2),
                                                                     round(os.getloadavg()[0], 2)],
                          "cpus": os.cpu_count()}}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for t in results["targets"]:
        verdict = {True: "met", False: "NOT met", None: ""}[t["met"]]
        print(f"{t['target']}: {t['mean']} ({t['threshold']}) {verdict}")
    for g in growth:
        print(f"  {g['updates']:>5} updates: checkpoint {g['checkpoint_bytes']} B, update log {g['log_bytes']} B")
    print(f"load average (1 min) before/after: {results['config']['load_average_1min']}; results: {out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("aggregator-bench", help="accepted int8 updates per second per aggregator worker, and "
                                                "checkpoint bytes per round against the number of updates",
                       description="Push signed int8 updates of the 4,757-parameter classifier through one "
                                   "aggregator's receive path (decode, signature, screen, running sum, update log "
                                   "with batched fsync) without a broker, and record the checkpoint's size after "
                                   "rounds of 10, 200 and 2,000 updates.")
    p.add_argument("--devices", type=int, default=2000, help="updates per measured round (default 2000)")
    p.add_argument("--repeats", type=int, default=3, help="measured rounds, each with its own seed (default 3)")
    p.add_argument("--unsigned", action="store_true",
                   help="measure unsigned updates (no Ed25519 check) only; by default signed, unsigned reported")
    p.add_argument("--fsync-every", type=int, default=256, help="fsync the update log every N records (256)")
    p.add_argument("--fsync-ms", type=float, default=20.0, help="... or after this many ms (20)")
    p.add_argument("--no-forwarding", dest="forwarding", action="store_false",
                   help="skip the forwarding mode (median: worker and coordinator rates), reported by default")
    p.add_argument("--json", default="bench/results/aggregator.json", help="where the results go")
    p.set_defaults(func=cmd_aggregator_bench)
