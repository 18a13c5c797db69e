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
    up = targets["bytes up per device, SecAgg+ / plain FedAvg, same run (30 devices over Mosquitto, 9 dropping "
                 "after their masked input)"]
    assert up["mean"] == pytest.approx(plus["kb_up_per_device"] / plain["kb_up_per_device"])
