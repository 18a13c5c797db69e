"""The fleet simulator's secure-aggregation devices (``tools.fleet_sim.secagg_devices``): simulated devices on
asyncio MQTT connections run the real client against the real aggregator over Mosquitto, the bench's row and
its targets come out of one measured round."""
import pytest

from broker.launcher import broker_url
from tools.privacy_bench.targets import secagg_fleet_targets
from tools.secagg_overhead import measure_fleet

pytestmark = pytest.mark.integration


def test_simulated_devices_sum_exactly_with_30_percent_dropping_after_their_input(mosquitto):
    n = 30
    url = broker_url(mosquitto)
    plain = measure_fleet(n, "plain", 0.0, workers=1, broker=url)
    plus = measure_fleet(n, "secagg+", 0.3, workers=1, broker=url)
    assert plain.get("error") is None and plus.get("error") is None, (plain.get("error"), plus.get("error"))
    assert plain["inputs"] == n and plus["inputs"] == n and plus["dropped"] == 9 and plus["failed"] is None
    # the consistency round ran: enough confirmations, and unmask replies from survivors only
    assert plus["confirms"] >= plus["consistency"] and plus["threshold"] <= plus["unmask_replies"] <= n - 9
    assert plus["max_abs_error"] <= 1 / plus["fixed_point_scale"]  # the dropped devices' inputs count
    assert plus["simulation"]["done"] == n and plus["simulation"]["device_errors"] == 0 and plus["rejected"] == {}
    assert plus["kb_up_per_device"] > plain["kb_up_per_device"] > 4 * 4757 / 1000  # keys and shares cost bytes

    targets = {t["target"].split(":")[0]: t for t in secagg_fleet_targets(
        [{"key": f"secagg-fleet/{n}/plain/0", **plain}, {"key": f"secagg-fleet/{n}/secagg+/0.3", **plus}])}
    assert targets["SecAgg+ round completes"]["met"] is True
    assert targets["SecAgg+ sum exact within fixed-point error"]["met"] is True
    up = next(t for name, t in targets.items() if name.startswith("bytes up per device, SecAgg+ / plain"))
    assert up["mean"] == pytest.approx(plus["kb_up_per_device"] / plain["kb_up_per_device"])
    # the round-time target is judged on the critical path: aggregator and broker CPU plus, per step, the slowest
    # device's own CPU (measured per device, shared verdicts charged to every device that used them)
    steps = plus["device_cpu"]
    assert {"global", "AdvertList", "SharesFor", "ConfirmRequest", "UnmaskRequest"} <= set(steps)
    assert steps["SharesFor"]["devices"] == n and 0 < steps["SharesFor"]["max_s"] <= steps["SharesFor"]["sum_s"]
    slowest = sum(r["max_s"] for step, r in steps.items() if step != "final")
    assert plus["slowest_device_cpu_seconds"] == pytest.approx(slowest, abs=1e-3)
    assert plus["critical_path_seconds"] == pytest.approx(plus["aggregator_cpu_seconds"] + slowest, abs=0.02)
    time_target = next(t for name, t in targets.items() if name.startswith("round time, SecAgg+ / plain FedAvg, as "
                                                                           "critical path"))
    assert time_target["mean"] == pytest.approx(plus["critical_path_seconds"] / plain["critical_path_seconds"])
