"""The coordinator: starts the monitor and the worker processes, samples them every few seconds and turns
their counters into one report (connected devices, messages/s, CPU, RSS, broker memory, alerts lost)."""
from __future__ import annotations

import logging
import multiprocessing as mp
import queue as queue_mod
import time
from collections import Counter
from dataclasses import asdict

from broker.mqtt_link import parse_broker_url
from tools.fleet_sim.aggregator_rounds import AggregatorRounds, with_device_counts
from tools.fleet_sim.config import FleetSimConfig
from tools.fleet_sim.monitor import FleetMonitor, ProcessSampler, listening_pid
from tools.fleet_sim.worker import worker_main

log = logging.getLogger(__name__)
SAMPLE_EVERY_S = 5.0
DRAIN_S = 5.0  # after the devices stop: time for in-flight alerts to reach the monitor


class SimulationFailed(RuntimeError):
    """A worker died or never reported; the message says which and why."""


def _merge(snapshots: dict[int, dict]) -> dict:
    total: dict = {"connected": 0, "connects": 0, "connect_failures": 0, "churn_leaves": 0, "publish_failures": 0,
                   "loop_errors": 0, "slow_subscribes": 0,
                   "alerts_acked": 0, "messages": Counter(), "bytes": Counter(), "updates_acked": Counter()}
    for snap in snapshots.values():
        for key in ("connected", "connects", "connect_failures", "churn_leaves", "publish_failures", "loop_errors",
                    "alerts_acked", "slow_subscribes"):
            total[key] += snap.get(key, 0)
        for key in ("messages", "bytes", "updates_acked"):
            total[key].update(snap[key])
    return total


def simulate_fleet(cfg: FleetSimConfig, broker_pid: int | None = None, rounds: AggregatorRounds | None = None,
                   on_round=lambda row: None) -> dict:
    """Run the fleet for ``cfg.duration_s`` and return the report (see docs/scale.md for every field).
    ``rounds``: a real aggregator, started once every device is connected (or the ramp should long be over);
    the fleet then runs until its last round too, and ``on_round(row)`` hears of each round as it closes."""
    host, port = parse_broker_url(cfg.broker_url)
    if broker_pid is None and host in ("127.0.0.1", "localhost", "::1"):
        broker_pid = listening_pid(port)
    monitor = FleetMonitor(cfg.broker_url, cfg.fleet)
    monitor.start()
    ctx = mp.get_context("spawn")  # no fork of a process that runs the monitor's network thread
    q, stop_event = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=worker_main, args=(cfg, i, q, stop_event), name=f"fleet-sim-{i}", daemon=True)
             for i in range(cfg.workers)]
    for p in procs:
        p.start()
    pids = {f"worker{i}": p.pid for i, p in enumerate(procs)}
    if broker_pid:
        pids["broker"] = broker_pid
    sampler = ProcessSampler(pids)
    snapshots: dict[int, dict] = {}
    finals: dict[int, dict] = {}
    timeline: list[dict] = []
    started = time.monotonic()
    next_tick, next_sample = started + 1.0, started
    give_up = started + cfg.duration_s + cfg.overtime_s + 120 + cfg.workers * 10  # spawn start-up, shutdown
    ramp_over = started + 3 * cfg.devices / cfg.connect_rate + 120  # some device never connects: start anyway
    try:
        while len(finals) < cfg.workers:
            now = time.monotonic()
            if rounds is not None:
                _drive(rounds, sampler, _merge(snapshots)["connected"] >= cfg.devices or now > ramp_over, on_round)
                if rounds.finished and now - started >= cfg.duration_s:
                    stop_event.set()
            if now > give_up:
                raise SimulationFailed(f"workers {sorted(set(range(cfg.workers)) - set(finals))} did not finish")
            if now >= next_sample:
                sampler.sample()
                next_sample = now + SAMPLE_EVERY_S
            if now >= next_tick:
                merged, (seen, _) = _merge(snapshots), monitor.counts()
                timeline.append({"t": round(now - started, 1), "connected": merged["connected"],
                                 "acked": sum(merged["messages"].values()), "received": sum(seen.values())})
                next_tick += 1.0
            try:
                kind, index, payload = q.get(timeout=0.2)
            except queue_mod.Empty:
                if any(not p.is_alive() and p.exitcode not in (0, None) and i not in finals
                       for i, p in enumerate(procs)):
                    raise SimulationFailed("a worker process died; run with -v to see its log")
                continue
            if kind == "error":
                raise SimulationFailed(f"worker {index}: {payload}")
            (finals if kind == "final" else snapshots)[index] = payload
            if kind == "final":
                snapshots[index] = payload
        sampler.sample()
        time.sleep(DRAIN_S)
    finally:
        stop_event.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        monitor.stop()
        aggregator = rounds.stop() if rounds is not None else None
    report = _report(cfg, finals, monitor, sampler, timeline, time.monotonic() - started - DRAIN_S)
    if rounds is not None:
        report["aggregator"] = {**aggregator, "settings": asdict(rounds.settings),
                                "rounds": with_device_counts(rounds.rows, finals)}
    return report


def _drive(rounds: AggregatorRounds, sampler: ProcessSampler, ready: bool, on_round) -> None:
    """Start the aggregator once the fleet is up; pass on each round as it closes."""
    if rounds.proc is None:
        if ready:
            sampler.add("aggregator", rounds.start(sampler.pids))
        return
    for row in rounds.poll():
        on_round(row)


def _report(cfg: FleetSimConfig, finals: dict[int, dict], monitor: FleetMonitor, sampler: ProcessSampler,
            timeline: list[dict], wall_s: float) -> dict:
    merged = _merge(finals)
    acked_ids = set().union(*(f["alert_ids"] for f in finals.values()))
    lost = sorted(acked_ids - monitor.alert_ids)
    full = [row["t"] for row in timeline if row["connected"] >= cfg.devices]
    # from the moment all were connected to the end of the configured duration (the workers start a little
    # after the coordinator's clock, so the shutdown falls outside this window)
    held = [row["connected"] for row in timeline if full and full[0] <= row["t"] <= cfg.duration_s]
    n_msgs = sum(merged["messages"].values())
    resources = sampler.summary()
    workers = [v for k, v in resources.items() if k.startswith("worker")]
    sizes = {k: round(merged["bytes"][k] / merged["messages"][k], 1) for k in merged["messages"]}
    return {
        "config": cfg.to_dict(),
        "wall_seconds": round(wall_s, 1),
        "devices": {"configured": cfg.devices, "peak_connected": max((r["connected"] for r in timeline), default=0),
                    "all_connected_after_s": full[0] if full else None,
                    "min_connected_while_held": min(held) if held else None,
                    "mean_connected": round(sum(r["connected"] for r in timeline) / max(len(timeline), 1), 1),
                    "connects": merged["connects"], "connect_failures": merged["connect_failures"],
                    "churn_leaves": merged["churn_leaves"]},
        "messages": {"acked_by_kind": dict(merged["messages"]), "bytes_by_kind": dict(merged["bytes"]),
                     "mean_bytes_by_kind": sizes, "acked_per_s": round(n_msgs / max(wall_s, 1e-9), 1),
                     "publish_failures": merged["publish_failures"], "worker_loop_errors": merged["loop_errors"],
                     "slow_subscribes": merged["slow_subscribes"],
                     "received_by_monitor": dict(monitor.received),
                     "received_per_s": round(sum(monitor.received.values()) / max(wall_s, 1e-9), 1),
                     "rejected_by_monitor": dict(monitor.rejected)},
        "alerts": {"acked": len(acked_ids), "seen_by_subscriber": len(monitor.alert_ids & acked_ids),
                   "lost": len(lost), "lost_ids": lost[:20], "duplicates": monitor.duplicates,
                   "unsent_at_end": sum(f["alerts_unsent"] for f in finals.values())},
        "rounds": {str(r): {"updates_acked": merged["updates_acked"][str(r)],
                            "updates_seen": monitor.updates_per_round[r]}
                   for r in sorted(set(monitor.updates_per_round) | {int(k) for k in merged["updates_acked"]})},
        "resources": {"workers_cpu_percent_of_one_core": round(sum(w["cpu_percent_of_one_core"] or 0 for w in workers), 1),
                      "workers_peak_rss_mib": round(sum(w["peak_rss_mib"] or 0 for w in workers), 1),
                      "per_process": resources},
        "timeline": timeline,
    }
