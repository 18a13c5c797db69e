"""Secure-aggregation overhead over a real Mosquitto: one round of N devices with a model-sized update
(4,757 parameters), plain FedAvg (signed float32 updates) against secure aggregation (signed SECAGG steps),
optionally with a share of the devices dropping out. `python -m tools.secagg_overhead 22 100` prints the
table; `pulsewire privacy-bench --parts secagg` stores it in privacy.json.

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
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.fed_messages import GlobalModel, LocalUpdate
from broker.launcher import broker_url, start_broker
from broker.secagg_messages import Confirmation, UnmaskReply
from edge_runtime.fed_client import DeviceClient
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.secagg_round import SecAggAggregator, SecAggSettings

PARAMETERS = 4757  # the beat classifier's
log = logging.getLogger(__name__)


def _delta(k: int) -> list[np.ndarray]:
    return [np.random.default_rng(k).normal(0, 0.02, PARAMETERS).astype(np.float32)]


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
    except Exception as exc:  # noqa: BLE001 - reported in the row
        log.exception("secagg overhead n=%d %s drop=%g failed", n, mode, drop)
        nan = float("nan")
        return {"devices": n, "mode": mode, "dropped": int(round(drop * n)), "drop_mode": drop_mode,
                "parameters": PARAMETERS, "kb_up_per_device": nan, "kb_down_per_device": nan, "round_seconds": nan,
                "wall_seconds_with_setup": nan, "unmask_seconds": None, "inputs": None, "threshold": None,
                "max_abs_error": nan, "error": f"{exc.__class__.__name__}: {exc}"[:300]}


def _measure(n: int, mode: str, drop: float, drop_mode: str) -> dict:
    dropping = set(np.random.default_rng(n).choice(n, int(round(drop * n)), replace=False).tolist())
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


def main(argv: list[str]) -> None:
    for n in [int(a) for a in argv] or [22, 100]:
        for mode, drop, how in (("plain", 0.0, "after"), ("secagg", 0.0, "after"), ("secagg", 0.3, "after"),
                                ("secagg", 0.3, "before"), ("secagg+", 0.3, "after")):
            print(json.dumps(measure_overhead(n, mode, drop, how)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
