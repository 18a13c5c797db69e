"""The device's local-DP ledger survives restarts, and a device that lost it refuses to train until reset."""
import sqlite3

import pytest

from broker.launcher import broker_url
from edge_runtime.alert_spool import AlertSpool
from edge_runtime.fed_client import DeviceClient
from edge_runtime.ledger_store import LEDGER_FILE, LedgerLost, LedgerStore, reset_ledger
from edge_runtime.local_dp import LocalDP, gaussian_epsilon
from tests.federation_helpers import REGISTRY, FixedUpdater, initial_weights, run_to_end
from tools.cli import main
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy

DP = LocalDP(clip=0.05, noise_multiplier=2.0, delta=1e-6)


def _spend(state, rounds):
    store = LedgerStore(state, DP.delta)
    for r in range(1, rounds + 1):
        store.record(r, DP)
    store.close()


def test_a_reopened_ledger_keeps_every_release_and_its_epsilon(tmp_path):
    _spend(tmp_path, 3)
    again = LedgerStore(tmp_path, DP.delta)
    assert again.lost is None and [r["round"] for r in again.ledger.rows] == [1, 2, 3]
    assert again.ledger.epsilon == pytest.approx(gaussian_epsilon(DP.noise_multiplier, 3, DP.delta))
    again.record(4, DP)
    again.close()
    assert LedgerStore(tmp_path, DP.delta).ledger.epsilon == pytest.approx(gaussian_epsilon(2.0, 4, DP.delta))


def test_a_missing_ledger_beside_the_spool_is_lost_until_reset(tmp_path):
    AlertSpool(tmp_path / "dev1-alerts.sqlite").close()
    store = LedgerStore(tmp_path, DP.delta)  # the device ran before (its spool is there), its ledger is gone
    assert store.lost and "missing" in store.lost
    with pytest.raises(LedgerLost):
        store.record(1, DP)
    assert not (tmp_path / LEDGER_FILE).exists()  # nothing recreated: the next start refuses too
    assert LedgerStore(tmp_path, DP.delta).lost
    reset_ledger(tmp_path, "test")
    fresh = LedgerStore(tmp_path, DP.delta)
    assert fresh.lost is None and fresh.ledger.rows == [] and fresh.resets[0]["previous_state"] == "missing"


def test_a_fresh_device_starts_an_empty_ledger(tmp_path):
    store = LedgerStore(tmp_path / "new", DP.delta)
    assert store.lost is None and store.ledger.epsilon == 0


@pytest.mark.parametrize("damage", ["edit", "truncate", "garbage", "drop"])
def test_a_damaged_ledger_is_lost(tmp_path, damage):
    _spend(tmp_path, 3)
    path = tmp_path / LEDGER_FILE
    if damage == "garbage":
        path.write_bytes(b"not a database at all" * 50)
    else:
        db = sqlite3.connect(str(path))
        sql = {"edit": "UPDATE releases SET row = replace(row, '\"round\": 2', '\"round\": 7') WHERE seq = 2",
               "truncate": "DELETE FROM releases WHERE seq = 3", "drop": "DROP TABLE head"}[damage]
        db.execute(sql)
        db.commit()
        db.close()
    store = LedgerStore(tmp_path, DP.delta)
    assert store.lost and "damaged" in store.lost


def test_the_reset_command_needs_yes_and_keeps_the_old_ledger(tmp_path, capsys):
    _spend(tmp_path, 2)
    (tmp_path / LEDGER_FILE).write_bytes(b"corrupted")
    assert main(["edge", "dp-reset", "--state-dir", str(tmp_path)]) == 2
    assert "--yes" in capsys.readouterr().err and LedgerStore(tmp_path, DP.delta).lost
    assert main(["edge", "dp-reset", "--state-dir", str(tmp_path / "nope"), "--yes"]) == 2
    assert main(["edge", "dp-reset", "--state-dir", str(tmp_path), "--yes", "--reason", "flash replaced"]) == 0
    store = LedgerStore(tmp_path, DP.delta)
    assert store.lost is None and store.resets[0]["reason"] == "flash replaced"
    assert list(tmp_path.glob(f"{LEDGER_FILE}.reset-*"))


def _run_round(url, fleet, devices, run_dir, rounds):
    cfg = AggregatorConfig(fleet=fleet, devices=dict(REGISTRY), rounds=rounds,
                           policy=RoundPolicy(deadline_s=60, max_norm_ratio=None))
    agg = Aggregator(cfg, initial_weights(), url, run_dir)
    return run_to_end(agg, devices).history, agg.status


@pytest.mark.integration
def test_a_restarted_device_keeps_its_epsilon_and_its_refusal_at_budget(mosquitto, tmp_path):
    url = broker_url(mosquitto)
    budget = gaussian_epsilon(DP.noise_multiplier, 2, DP.delta) * 1.0001  # exactly two releases fit
    dp = LocalDP(DP.clip, DP.noise_multiplier, DP.delta, epsilon_budget=budget)
    states = {name: tmp_path / name for name in REGISTRY}

    def devices(fleet):
        return [DeviceClient(name, dev_id, fleet, url, FixedUpdater(k), local_dp=dp, noise_seed=k,
                             state_dir=states[name]) for k, (name, dev_id) in enumerate(REGISTRY.items())]

    first = devices("ledger")
    for name in REGISTRY:  # the device's alert spool lives beside its ledger
        AlertSpool(states[name] / f"{name}-alerts.sqlite").close()
    history, _ = _run_round(url, "ledger", first, tmp_path / "run1", rounds=2)
    assert [h["participants"] for h in history] == [3, 3]

    restarted = devices("ledger2")  # a power cycle: new processes, same storage
    assert all(d.privacy.epsilon == pytest.approx(gaussian_epsilon(2.0, 2, DP.delta)) for d in restarted)
    assert all(len(d.privacy.rows) == 2 for d in restarted)
    (states["dev-c"] / LEDGER_FILE).unlink()  # dev-c lost its ledger but kept its spool
    (states["dev-c"] / f"{LEDGER_FILE}-wal").unlink(missing_ok=True)
    lost = DeviceClient("dev-c", REGISTRY["dev-c"], "ledger2", url, FixedUpdater(2), local_dp=dp,
                        state_dir=states["dev-c"])
    history, status = _run_round(url, "ledger2", [*restarted[:2], lost], tmp_path / "run2", rounds=1)
    assert history[0]["participants"] == 0 and history[0]["declined"] == 3
    assert all("exceed the budget" in status[n]["reason"] for n in ("dev-a", "dev-b"))
    assert "ledger" in status["dev-c"]["reason"] and status["dev-c"]["privacy"]["ledger"] == "lost"
    assert all(len(d.privacy.rows) == 2 for d in restarted[:2])
