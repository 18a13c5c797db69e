"""The deployed paths draw DP noise from the secure source unless told otherwise, as their reports say: the
aggregator service's DP-FedAvg ledger (``rounds.json``) and each device's status over a real Mosquitto; a
seeded source only when asked for by name, and then recorded as such."""
from __future__ import annotations

import json

import pytest

from broker.launcher import broker_url
from edge_runtime.fed_client import DeviceClient
from edge_runtime.local_dp import LocalDP
from tests.federation_helpers import REGISTRY, FixedUpdater, initial_weights, run_to_end
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.simulation import FederatedConfig

DP = {"clip": 1.0, "noise_multiplier": 1.0}


def _config(fleet: str, **extra) -> AggregatorConfig:
    return AggregatorConfig(fleet=fleet, devices=dict(REGISTRY), rounds=1, strategy="dp_fedavg", strategy_args=DP,
                            policy=RoundPolicy(deadline_s=60, max_norm_ratio=None),
                            honour_consent=False, **extra)


@pytest.mark.integration
def test_the_aggregator_and_devices_use_the_secure_source_by_default_and_say_so(mosquitto, tmp_path):
    url = broker_url(mosquitto)
    names = list(REGISTRY)
    dp = LocalDP(clip=0.5, noise_multiplier=1.0)  # a device with local DP reports its privacy in every status
    devices = [DeviceClient(name, REGISTRY[name], "noise", url, FixedUpdater(k), local_dp=dp)
               for k, name in enumerate(names[:2])]
    devices.append(DeviceClient(names[2], REGISTRY[names[2]], "noise", url, FixedUpdater(2), local_dp=dp,
                                noise_seed=5))
    agg = Aggregator(_config("noise"), initial_weights(), url, tmp_path)
    result = run_to_end(agg, devices)
    assert result.history[0]["privacy"]["noise"] == "secure" and result.history[0]["participants"] == 3
    assert json.loads((tmp_path / "rounds.json").read_text())[0]["privacy"]["noise"] == "secure"
    reported = {name: agg.status[name]["privacy"]["noise"] for name in names}
    assert reported == {names[0]: "secure", names[1]: "secure", names[2]: "seeded:5"}


def test_seeded_noise_is_a_named_choice_and_the_simulation_default():
    assert AggregatorConfig(fleet="f", devices={"a": 1}, rounds=1).dp_noise == "secure"
    assert FederatedConfig().dp_noise == "seeded"  # benches: reproducible, recorded in their JSON
    with pytest.raises(ValueError, match="unknown"):
        _config("f", dp_noise="pcg64")
    with pytest.raises(ValueError, match="unknown"):
        FederatedConfig(dp_noise="urandom")


def test_the_command_line_picks_the_source_by_name():
    from tools.cli import build_parser
    from tools.federated_commands import federated_config

    parser = build_parser()
    assert federated_config(parser.parse_args(["simulate"]), 0).dp_noise == "seeded"
    assert federated_config(parser.parse_args(["simulate", "--dp-noise", "secure"]), 0).dp_noise == "secure"
    assert parser.parse_args(["aggregate", "--run-dir", "r", "--dp-noise", "seeded"]).dp_noise == "seeded"
    with pytest.raises(SystemExit):
        parser.parse_args(["fleet", "--dp-noise", "pcg64"])
