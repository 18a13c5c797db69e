"""Light simulated devices in rounds of the real aggregator: `pulsewire simulate-fleet --rounds` against a real
Mosquitto starts `pulsewire aggregate` (a subprocess, signed models and updates) and 200 devices in two
worker processes; every round completes, the global model moves, and what the aggregator accepted is exactly
the selection minus the devices that dropped out or declined."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from broker.fed_messages import UpdateEncoding, decode_update
from broker.launcher import broker_url
from broker.signing import verify_message
from training.federated import checkpoint
from training.federated.round_files import CHECKPOINT_FILE

ROOT = Path(__file__).resolve().parent.parent


def test_a_light_device_signs_a_real_head_step_in_the_plans_encoding():
    from broker.fed_messages import GlobalModel, RoundPlan, encode_global
    from broker.signing import sign_message
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from tools.fleet_sim.round_member import RoundMember, device_key, head_step

    weights = [np.random.default_rng(0).normal(0, 0.3, (32, 5)).astype(np.float32), np.zeros(5, np.float32)]
    agg = Ed25519PrivateKey.generate()
    plan = RoundPlan(4, ("sim000001", "sim000002"), {}, "int8", None, False)
    broadcast = sign_message(encode_global("ft", GlobalModel(plan, weights, None)), agg)
    member = RoundMember("ft", agg.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), seed=3)
    seen = member.model(broadcast)
    assert member.model(broadcast) is seen and "sim000002" in seen.selected  # decoded once per worker
    [frame] = member.update_frames(seen.model, 1, 2, device_key(3, 1))
    header, update = decode_update(verify_message(frame, device_key(3, 1).public_key()))
    assert (header.round, header.device_id) == (4, 2) and [d.shape for d in update.delta] == [(32, 5), (5,)]
    delta, loss = head_step(weights, 3, 1, 4)
    np.testing.assert_allclose(update.delta[0], delta[0], atol=2 * float(np.abs(delta[0]).max()) / 127)
    assert 0 < loss == pytest.approx(update.train_loss) and UpdateEncoding.parse("int8").lossy
    assert not np.allclose(head_step(weights, 3, 2, 4)[0][0], delta[0])  # devices differ
    with pytest.raises(Exception):
        RoundMember("ft", Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
                    3).model(broadcast)  # a model not signed by the fleet's aggregator is refused


@pytest.mark.integration
def test_two_hundred_devices_complete_aggregator_rounds_with_dropouts(mosquitto, tmp_path):
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "tools.cli", "simulate-fleet", "--broker", broker_url(mosquitto), "--fleet",
           "simrounds", "--devices", "200", "--workers", "2", "--duration", "2", "--status-every", "30",
           "--alerts-per-second", "2", "--rounds", "2", "--selection", "uniform:k=100", "--deadline", "15",
           "--quorum", "0.5", "--dropout", "0.1", "--seed", "4", "--run-dir", str(tmp_path / "fleet"),
           "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "round 2: 100 selected" in run.stdout  # the per-round line a user sees
    report = json.loads(out.read_text())
    agg = report["aggregator"]
    assert agg["exit_code"] == 0 and [r["round"] for r in agg["rounds"]] == [1, 2]
    for r in agg["rounds"]:
        assert r["selected"] == 100 and r["missed"] == 0
        assert r["dropped"] > 0  # 10 % of the selected walk away: the round closes at its deadline without them
        assert r["accepted"] == r["selected"] - r["dropped"] - r["declined_by_devices"] == r["updates_sent"]
        assert r["declined"] == r["declined_by_devices"] and r["rejected"] == {}
        assert {"worker0", "worker1", "aggregator"} <= set(r["resources"])
    # round 1 is drawn before the devices' retained statuses reach the new aggregator; round 2 knows who consented
    assert agg["rounds"][1]["declined"] == 0
    manifest, arrays = checkpoint.load(Path(agg["run_dir"]) / CHECKPOINT_FILE)
    with np.load(tmp_path / "fleet" / "head.npz") as start:
        initial = [start["arr_0"], start["arr_1"]]
    assert manifest["round"] == 3  # two versions published after the first
    assert not np.allclose(arrays["weights"][0], initial[0])
    assert report["alerts"]["lost"] == 0 and report["devices"]["peak_connected"] == 200


def test_the_bench_rounds_target_fails_when_a_selected_device_is_not_accepted():
    from tools.fleet_sim.bench import round_targets

    def report(accepted: int, missed: int = 0) -> dict:
        row = {"round": 1, "selected": 1000, "accepted": accepted, "declined": 60, "dropped": 0, "missed": missed,
               "seconds": 50.0}
        return {"config": {"devices": 10000}, "resources": {"per_process": {}},
                "aggregator": {"settings": {"rounds": 1, "selection": "power-aware:k=1000"}, "exit_code": 0,
                               "rounds": [row]}}

    assert [t["met"] for t in round_targets(report(940))][:2] == [True, True]
    assert round_targets(report(506, missed=0))[1]["met"] is False  # the rest arrived after the close
    assert round_targets(report(939, missed=1))[1]["met"] is False
    assert round_targets({"config": {}}) == []  # no aggregator: no rounds target
