"""Secure-aggregation overhead over a real Mosquitto: one round of N devices with a model-sized update
(4,757 parameters), plain FedAvg (signed float32 updates) against secure aggregation (signed SECAGG steps),
optionally with a share of the devices dropping out. `python -m tools.secagg_overhead 22 100` prints the
table (`--fleet 1000`: the fleet-scale rows below); `pulsewire privacy-bench --parts secagg` stores both in
privacy.json.

``measure_fleet`` is the same round at fleet scale: the devices are simulated on asyncio connections
(``tools.fleet_sim.secagg_devices``: the real secure-aggregation client, one MQTT connection per device) so
that 1,000 of them fit on one machine; plain FedAvg and SecAgg+ are measured in the same run.

Modes: ``plain``, ``secagg`` (Bonawitz et al., every pair of devices), ``secagg+`` (Bell et al.: the graph
and threshold chosen for 30 % dropout and 5 % corrupt devices, with the consistency round).

Dropping modes: ``after`` — devices that send their masked input and then never answer again (no confirmation,
no unmask reply; the aggregator closes once the replies cover every device's secrets); ``before`` — devices
whose local round fails after they shared their keys (they decline, so the aggregator reconstructs their
pairwise masks from the survivors' shares).
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.fed_messages import GlobalModel, LocalUpdate
from broker.launcher import broker_url, start_broker
from broker.secagg_messages import Confirmation, UnmaskReply
from edge_runtime.fed_client import DeviceClient
from tools.fleet_sim.secagg_devices import (
    PARAMETERS,
    SecAggFleetConfig,
    device_name,
    device_update,
    merge_device_cpu,
    secagg_worker_main,
)
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.secagg_round import SecAggAggregator, SecAggSettings

log = logging.getLogger(__name__)


def _delta(k: int) -> list[np.ndarray]:
    return [device_update(k)]


class _Updater:
    def __init__(self, k: int, fail: bool) -> None:
        self.k, self.fail = k, fail

    def fit(self, model: GlobalModel) -> LocalUpdate:
        if self.fail:
            raise RuntimeError("simulated dropout before the masked input")
        return LocalUpdate(_delta(self.k), num_examples=100, local_steps=10)


class _SilentAfterInput(DeviceClient):
    def _send_secagg(self, outgoing: list) -> None:
        super()._send_secagg([o for o in outgoing if not isinstance(o[2], (UnmaskReply, Confirmation))])


def measure_overhead(n: int, mode: str = "secagg", drop: float = 0.0, drop_mode: str = "after") -> dict:
    """One round; ``mode`` "plain", "secagg" or "secagg+"; ``drop`` the share of devices dropping. A failed
    measurement is a row with its error (and NaN numbers), so a long benchmark goes on."""
    try:
        return _measure(n, mode, drop, drop_mode)
    except Exception as exc:
        log.exception("secagg overhead n=%d %s drop=%g failed", n, mode, drop)
        nan = float("nan")
        return {"devices": n, "mode": mode, "dropped": round(drop * n), "drop_mode": drop_mode,
                "parameters": PARAMETERS, "kb_up_per_device": nan, "kb_down_per_device": nan, "round_seconds": nan,
                "wall_seconds_with_setup": nan, "unmask_seconds": None, "inputs": None, "threshold": None,
                "max_abs_error": nan, "error": f"{exc.__class__.__name__}: {exc}"[:300]}


def _measure(n: int, mode: str, drop: float, drop_mode: str) -> dict:
    dropping = set(np.random.default_rng(n).choice(n, round(drop * n), replace=False).tolist())
    broker = start_broker()
    url = broker_url(broker)
    fleet = f"overhead-{mode.replace('+', 'plus')}-{n}-{int(drop * 100)}"
    registry = {f"d{k:03d}": k + 1 for k in range(n)}
    keys = {name: Ed25519PrivateKey.generate() for name in [*registry, "aggregator"]}
    executor = ThreadPoolExecutor(1)
    silent = drop_mode == "after"
    directory = {dev_id: keys[name].public_key() for name, dev_id in registry.items()}
    devices = [(_SilentAfterInput if k in dropping and silent else DeviceClient)(
        name, dev_id, fleet, url, _Updater(k, fail=k in dropping and not silent), executor, keys[name],
        keys["aggregator"].public_key(), peer_keys=directory) for k, (name, dev_id) in enumerate(registry.items())]
    cfg = AggregatorConfig(fleet=fleet, devices=registry, rounds=1, policy=RoundPolicy(deadline_s=60),
                           device_keys={d: keys[d].public_key() for d in registry})
    init = [np.zeros(PARAMETERS, np.float32)]
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "plain":
            agg = Aggregator(cfg, init, url, Path(tmp), signing_key=keys["aggregator"])
        else:
            settings = SecAggSettings(dropout=0.3, corrupt=0.05) if mode == "secagg+" else None
            agg = SecAggAggregator(cfg, init, url, Path(tmp), signing_key=keys["aggregator"], secagg=settings)
        box: dict = {}
        thread = threading.Thread(target=lambda: box.update(result=agg.run()), daemon=True)
        try:
            for d in devices:
                d.start()
            started = time.perf_counter()
            thread.start()
            thread.join(600)
            wall = time.perf_counter() - started
        finally:
            for d in devices:
                d.stop()
            executor.shutdown(wait=False)
            broker.close()
    row = box["result"].history[0]
    contributors = [k for k in range(n) if not (k in dropping and not silent)]
    want = np.mean([_delta(k)[0].astype(np.float64) for k in contributors], axis=0)  # equal sample counts
    error = float(np.max(np.abs(box["result"].final_weights[0] - want)))
    sa = row.get("secagg", {})
    up = sa.get("bytes_up", row["bytes_received"])
    down = row["model_bytes"] * n + sa.get("bytes_down", 0)
    return {"devices": n, "mode": mode, "dropped": len(dropping), "drop_mode": drop_mode if dropping else None,
            "parameters": PARAMETERS, "kb_up_per_device": up / n / 1000, "kb_down_per_device": down / n / 1000,
            "round_seconds": row["seconds"], "wall_seconds_with_setup": wall,
            "unmask_seconds": sa.get("unmask_seconds"), "inputs": sa.get("inputs", row["participants"]),
            "threshold": sa.get("threshold"), "degree": sa.get("degree"), "max_abs_error": error}


def measure_fleet(n: int, mode: str = "secagg+", drop: float = 0.3, workers: int = 2, broker: str | None = None) -> dict:
    """One round of ``n`` simulated devices over ``broker`` (default: a Mosquitto started here); ``mode`` "plain"
    or "secagg+" (30 % dropout, 5 % corrupt, consistency round); ``drop``: the share of devices that disconnect
    right after their masked input (plain: after their update). A failed measurement is a row with its error."""
    try:
        return _measure_fleet(n, mode, drop, workers, broker)
    except Exception as exc:
        log.exception("secagg fleet n=%d %s drop=%g failed", n, mode, drop)
        return {"devices": n, "mode": mode, "dropped": round(drop * n), "simulator": "fleet_sim",
                "error": f"{exc.__class__.__name__}: {exc}"[:300]}


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())


def _measure_fleet(n: int, mode: str, drop: float, workers: int, url: str | None) -> dict:
    from tools.fleet_sim.cli import start_scale_broker

    dropping = frozenset(np.random.default_rng(n).choice(n, round(drop * n), replace=False).tolist())
    keys = [Ed25519PrivateKey.generate() for _ in range(n)]
    aggregator_key = Ed25519PrivateKey.generate()
    registry = {device_name(k): k + 1 for k in range(n)}
    broker = None if url else start_scale_broker(n)
    url = url or broker_url(broker)
    fleet = f"fleet-{mode.replace('+', 'plus')}-{n}-{int(drop * 100)}"
    cfg = SecAggFleetConfig(url, fleet, tuple(_raw(k) for k in keys),
                            aggregator_key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw),
                            dropping, workers)
    ctx = mp.get_context("spawn")
    q, stop = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=secagg_worker_main, args=(cfg, i, q, stop), daemon=True) for i in range(workers)]
    finals: dict[int, dict] = {}
    box: dict = {}
    try:
        for p in procs:
            p.start()
        ready = 0
        for _ in range(workers):
            kind, index, payload = q.get(timeout=600)
            if kind == "error":
                raise RuntimeError(f"worker {index}: {payload}")
            ready += payload
        if ready < n:
            raise RuntimeError(f"only {ready} of {n} simulated devices connected")
        policy = RoundPolicy(deadline_s=600)
        acfg = AggregatorConfig(fleet=fleet, devices=registry, rounds=1, policy=policy, honour_consent=False,
                                device_keys={device_name(k): key.public_key() for k, key in enumerate(keys)})
        init = [np.zeros(PARAMETERS, np.float32)]
        with tempfile.TemporaryDirectory() as tmp:
            if mode == "plain":
                agg = Aggregator(acfg, init, url, Path(tmp), signing_key=aggregator_key)
            else:
                agg = SecAggAggregator(acfg, init, url, Path(tmp), signing_key=aggregator_key,
                                       secagg=SecAggSettings(dropout=0.3, corrupt=0.05))
            cpu0, broker0, load0 = time.process_time(), _cpu_of(broker), os.getloadavg()
            box["result"] = agg.run()
            aggregator_cpu, broker_cpu = time.process_time() - cpu0, _cpu_of(broker) - broker0
            load = {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in os.getloadavg()]}
        while len(finals) < workers:
            kind, index, payload = q.get(timeout=120)
            if kind == "error":
                raise RuntimeError(f"worker {index}: {payload}")
            if kind == "final":
                finals[index] = payload
    finally:
        stop.set()
        for p in procs:
            if p.pid is None:
                continue
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        if broker is not None:
            broker.close()
    result = box["result"]
    row = result.history[0]
    want = np.mean([device_update(k).astype(np.float64) for k in range(n)], axis=0)  # equal sample counts
    error = float(np.max(np.abs(result.final_weights[0] - want)))
    sa = row.get("secagg", {})
    up = sa.get("bytes_up", row["bytes_received"])
    down = row["model_bytes"] * n + sa.get("bytes_down", 0)
    sim = {key: sum(f.get(key, 0) for f in finals.values())
           for key in ("done", "device_errors", "mqtt_errors", "verifications", "verdicts", "verify_cpu_us",
                        "cpu_seconds")}
    device_cpu = merge_device_cpu([f.get("device_cpu", {}) for f in finals.values()])
    out = {"devices": n, "mode": mode, "simulator": "fleet_sim (asyncio, one MQTT connection per device)",
           "workers": workers, "dropped": len(dropping), "drop_mode": "after" if dropping else None,
           "parameters": PARAMETERS, "kb_up_per_device": up / n / 1000, "kb_down_per_device": down / n / 1000,
           "round_seconds": row["seconds"], "aggregator_cpu_seconds": round(aggregator_cpu, 2),
           "broker_cpu_seconds": round(broker_cpu, 2) if broker is not None else None,
           "unmask_seconds": sa.get("unmask_seconds"), "inputs": sa.get("inputs", row["participants"]),
           "threshold": sa.get("threshold"), "degree": sa.get("degree"), "consistency": sa.get("consistency"),
           "confirms": sa.get("confirms"), "unmask_replies": sa.get("unmask_replies"), "failed": sa.get("failed"),
           "step_seconds": sa.get("step_seconds"), "step_cpu_seconds": sa.get("step_cpu_seconds"),
           "max_abs_error": error, "fixed_point_scale": sa.get("scale"), "rejected": dict(result.rejected), "simulation": sim,
           "device_cpu": device_cpu, **critical_path(aggregator_cpu, broker_cpu if broker is not None else None,
                                                     device_cpu),
           "load_average": {**load, "cores": os.cpu_count(), "note": "os.getloadavg() (1, 5, 15 min) when the "
                            "aggregator started and finished the round: the other work on this shared machine"}}
    steps, cpu = sa.get("step_seconds") or {}, sa.get("step_cpu_seconds") or {}
    if "summed" in steps and "masked_input_in" in steps:  # the aggregator's side once the inputs are in
        out["last_input_to_sum_seconds"] = round(steps["summed"] - steps["masked_input_in"], 3)
        out["aggregator_cpu_after_last_input_seconds"] = round(cpu["summed"] - cpu["masked_input_in"], 3)
    if sa.get("consistency"):
        out["consistency_check_cpu_s_per_device"] = _check_cost(n, sa["consistency"])
    return out


#: How ``critical_path_seconds`` is computed (stored with every fleet row, quoted by the report and the docs).
CRITICAL_PATH_METHOD = (
    "critical path = aggregator process CPU seconds over the round (its own work, serial on its own processor: "
    "screening, signature checks, routing, unmasking, FedAvg, its MQTT client) + Mosquitto CPU seconds + the sum "
    "over the round's steps (global model, adverts, shares, unmask request, ...) of the slowest device's own CPU "
    "seconds for that step (devices run in parallel in a fleet, one processor each); no overlap between the "
    "three is assumed (conservative), network latency is not included (loopback here), and the device term is "
    "this machine's CPU (a slower device processor scales it: it is reported on its own)")


def critical_path(aggregator_cpu: float, broker_cpu: float | None, device_cpu: dict) -> dict:
    """The round's time if every device had its own processor (``CRITICAL_PATH_METHOD``), from CPU times,
    which the shared bench machine's load does not inflate the way it inflates wall time."""
    slowest = sum(row["max_s"] for step, row in device_cpu.items() if step != "final")  # "final": after the round
    return {"slowest_device_cpu_seconds": round(slowest, 4),
            "critical_path_seconds": round(aggregator_cpu + (broker_cpu or 0.0) + slowest, 3),
            "critical_path_method": CRITICAL_PATH_METHOD}


def _cpu_of(broker) -> float:
    """CPU seconds (user + system) the Mosquitto process has used so far (0 for a broker not started here)."""
    if broker is None:
        return 0.0
    try:
        fields = Path(f"/proc/{broker.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _check_cost(n: int, signatures: int) -> float:
    """CPU seconds one device spends on the consistency check without the simulator's shared verdicts:
    ``signatures`` Ed25519 verifications over an ``n``-device survivor list (what each device does in parallel)."""
    from edge_runtime.secagg_plus import survivors_message

    message = survivors_message(1, list(range(1, n + 1)))
    key = Ed25519PrivateKey.generate()
    signature, public = key.sign(message), key.public_key()
    started = time.process_time()
    for _ in range(signatures):
        public.verify(signature, message)
    return round(time.process_time() - started, 3)


def main(argv: list[str]) -> None:
    """``22 100``: the overhead rows with DeviceClient threads; ``--fleet 1000``: plain FedAvg then SecAgg+ with
    simulated devices (``measure_fleet``)."""
    if argv[:1] == ["--fleet"]:
        for n in [int(a) for a in argv[1:]] or [1000]:
            for mode, drop in (("plain", 0.0), ("secagg+", 0.3)):
                print(json.dumps(measure_fleet(n, mode, drop)), flush=True)
        return
    for n in [int(a) for a in argv] or [22, 100]:
        for mode, drop, how in (("plain", 0.0, "after"), ("secagg", 0.0, "after"), ("secagg", 0.3, "after"),
                                ("secagg", 0.3, "before"), ("secagg+", 0.3, "after")):
            print(json.dumps(measure_overhead(n, mode, drop, how)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
