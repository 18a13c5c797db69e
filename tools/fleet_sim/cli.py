"""`pulsewire simulate-fleet`: the device simulator from the command line (a broker is started when none is
given), a human summary on stdout and the full report as JSON."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("pulsewire.fleet_sim")


def add_sim_args(p: argparse.ArgumentParser, devices: int, duration: float) -> None:
    p.add_argument("--broker", help="mqtt://HOST:PORT (default: start a Mosquitto on a free loopback port)")
    p.add_argument("--fleet", default="sim", help="fleet name: topics pw/FLEET/...")
    p.add_argument("--devices", type=int, default=devices)
    p.add_argument("--workers", type=int, default=2, help="worker processes the devices are spread over")
    p.add_argument("--status-every", type=float, default=60.0, help="seconds between a device's statuses")
    p.add_argument("--alerts-per-second", type=float, default=5.0, help="fleet-wide alert rate (Poisson)")
    p.add_argument("--duration", type=float, default=duration, help="seconds the fleet runs")
    p.add_argument("--connect-rate", type=float, default=500.0, help="new connections per second while ramping up")
    p.add_argument("--churn", metavar="ONLINE_S:OFFLINE_S",
                   help="devices come and go: mean seconds connected and away (exponential), e.g. 120:30")
    p.add_argument("--slow-fraction", type=float, default=0.0, help="share of devices on a slow uplink")
    p.add_argument("--slow-link-bps", type=float, default=2000.0, help="bytes/s of a slow uplink")
    p.add_argument("--round-every", type=float, default=0.0, help="seconds between transport rounds (0: none)")
    p.add_argument("--round-devices", type=int, default=0, help="devices sending an int8 head update per round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the full report here")
    g = p.add_argument_group("rounds of the real aggregator (`pulsewire aggregate`, started once the fleet is up)")
    g.add_argument("--rounds", type=int, default=0, help="aggregator rounds the devices take part in (0: none)")
    g.add_argument("--selection", default="power-aware:fraction=0.1",
                   help="selection policy, as `aggregate --selection` (e.g. uniform:k=1000, power-aware:k=100)")
    g.add_argument("--deadline", type=float, default=60.0, help="seconds a round waits for its devices")
    g.add_argument("--quorum", type=float, default=0.5, help="share of the selected that closes a round at its deadline")
    g.add_argument("--strategy", default="fedavg", help="aggregation strategy, as `aggregate --strategy`")
    g.add_argument("--encoding", default="int8", help="update encoding the round plan asks for")
    g.add_argument("--model", help="exported int8 .tflite: federate its head (default: a seeded 32 x 5 + 5 head)")
    g.add_argument("--dropout", type=float, default=0.0,
                   help="share of the selected devices that leave instead of answering (back after ~--churn's away time)")
    g.add_argument("--run-dir", help="fleet folder and the aggregator's run dir (default: a new temporary folder)")


def config_from_args(args: argparse.Namespace, broker_url: str):
    from tools.fleet_sim.config import FleetSimConfig

    online, offline = None, 30.0
    if args.churn:
        try:
            online, offline = (float(x) for x in args.churn.split(":"))
        except ValueError:
            raise ValueError(f"--churn {args.churn!r}: give ONLINE_S:OFFLINE_S, e.g. 120:30") from None
    return FleetSimConfig(broker_url=broker_url, fleet=args.fleet, devices=args.devices, workers=args.workers,
                          status_every_s=args.status_every, alerts_per_second=args.alerts_per_second,
                          duration_s=args.duration, connect_rate=args.connect_rate, churn_online_s=online,
                          churn_offline_s=offline, slow_fraction=args.slow_fraction,
                          slow_link_bytes_per_s=args.slow_link_bps, round_every_s=args.round_every,
                          round_devices=args.round_devices, seed=args.seed, dropout=args.dropout)


def start_scale_broker(devices: int):
    """A Mosquitto for many connections: no connection cap (each device holds one of the process's 20,000
    file descriptors), persistence off (a bench measures the bus, not the disk)."""
    from broker.launcher import MosquittoBroker

    broker = MosquittoBroker(extra_config=("max_connections -1",), persistence=False)
    broker.start()
    log.info("started mosquitto for %d devices on %s:%d", devices, broker.host, broker.port)
    return broker


def aggregator_settings(args: argparse.Namespace):
    """The aggregator's settings (None without ``--rounds``); ValueError for a wrong flag."""
    from tools.fleet_sim.aggregator_rounds import AggregatorSettings

    if not args.rounds:
        return None
    return AggregatorSettings(args.rounds, args.selection, args.deadline, args.quorum, args.strategy, args.encoding,
                              args.model, args.run_dir)


def round_line(row: dict) -> str:
    """One aggregator round as it closes: selection, what was accepted, wall time, CPU and memory."""
    res = row["resources"]
    cpu = ", ".join(f"{n} {v['cpu_percent_of_one_core']}%" for n, v in res.items())
    rss = sum(v["rss_mib"] or 0 for v in res.values())
    return (f"round {row['round']}: {row['selected']} selected, {row['accepted']} updates accepted, "
            f"{row['declined']} declined, closed by {row['closed_by']} after {row['seconds']:.1f} s; "
            f"CPU (of one core) {cpu}; RSS {rss:.0f} MiB in all")


def run_simulation(args: argparse.Namespace) -> dict:
    """Start a broker when needed (and the aggregator with ``--rounds``), run the fleet, stop them: the report."""
    from dataclasses import replace

    from broker.launcher import broker_url
    from tools.fleet_sim.aggregator_rounds import AggregatorRounds
    from tools.fleet_sim.run import simulate_fleet

    config_from_args(args, args.broker or "mqtt://127.0.0.1:1")  # validate the flags before starting anything
    settings = aggregator_settings(args)
    broker = None if args.broker else start_scale_broker(args.devices)
    try:
        cfg = config_from_args(args, args.broker or broker_url(broker))
        rounds = None
        if settings is not None:
            rounds = AggregatorRounds(settings, cfg)
            cfg = replace(cfg, aggregator_key=rounds.public_key, overtime_s=settings.allowance_s)
            log.info("fleet folder and aggregator run dir: %s", rounds.folder)
        return simulate_fleet(cfg, broker_pid=broker.pid if broker else None, rounds=rounds,
                              on_round=lambda row: print(round_line(row), flush=True))
    finally:
        if broker:
            broker.close()


def summary_lines(report: dict) -> list[str]:
    d, m, a, r = report["devices"], report["messages"], report["alerts"], report["resources"]
    broker = r["per_process"].get("broker", {})
    return [f"devices: {d['configured']} configured, peak {d['peak_connected']} connected, "
            f"all connected after {d['all_connected_after_s']} s, min while held {d['min_connected_while_held']}, "
            f"{d['connect_failures']} connect failures, {d['churn_leaves']} churn leaves",
            f"messages: {m['acked_per_s']}/s acknowledged, {m['received_per_s']}/s seen by the monitor; "
            f"mean bytes {m['mean_bytes_by_kind']}; {m['publish_failures']} publish failures, "
            f"{m['worker_loop_errors']} event-loop errors",
            f"alerts: {a['acked']} acknowledged, {a['seen_by_subscriber']} seen, {a['lost']} lost, "
            f"{a['duplicates']} duplicates, {a['unsent_at_end']} unsent at the end",
            f"workers: {r['workers_cpu_percent_of_one_core']} % of one core, {r['workers_peak_rss_mib']} MiB peak RSS; "
            f"broker: {broker.get('cpu_percent_of_one_core')} % CPU, {broker.get('peak_rss_mib')} MiB peak RSS",
            *(f"round {k}: {v['updates_acked']} updates acknowledged, {v['updates_seen']} seen"
              for k, v in report["rounds"].items() if "aggregator" not in report),
            *aggregator_lines(report.get("aggregator"))]


def aggregator_lines(agg: dict | None) -> list[str]:
    if agg is None:
        return []
    lines = [f"aggregator: exit code {agg.get('exit_code')}, {len(agg['rounds'])} round(s), log {agg.get('log')}"]
    for r in agg["rounds"]:
        lines.append(f"aggregator round {r['round']}: {r['selected']} selected, {r['accepted']} accepted, "
                     f"{r['updates_sent']} updates sent, {r['dropped']} dropped out, {r['declined']} declined, "
                     f"{r['missed']} missed, {r['seconds']} s ({r['closed_by']})")
    return lines


def cmd_simulate_fleet(args: argparse.Namespace) -> int:
    try:
        report = run_simulation(args)
    except ValueError as exc:
        print(f"pulsewire simulate-fleet: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.json}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("simulate-fleet", help="thousands of light simulated devices on asyncio MQTT connections",
                       description="Simulated wearables (statuses with battery, link and signal quality; alerts; "
                                   "optional int8 head updates; churn; slow links) spread over worker processes, "
                                   "each device on its own MQTT connection, real wire format and topics. Reports "
                                   "connected devices, messages/s, worker CPU and RSS, broker memory and alerts "
                                   "lost (acknowledged by the broker but never seen by a subscriber).")
    add_sim_args(p, devices=1000, duration=60.0)
    p.set_defaults(func=cmd_simulate_fleet)
