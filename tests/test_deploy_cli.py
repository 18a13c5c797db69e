"""Day-one fixes of the deployment issue: typed strategy arguments, bench outputs, quiet TensorFlow, exit 2."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from broker.launcher import free_port
from tools.cli import build_parser, main
from training.federated.registry import make_fleet_strategy
from training.federated.strategies import ClientUpdate

ROOT = Path(__file__).resolve().parent.parent


def _strategy_args(*pairs: str) -> dict:
    argv = ["simulate", "--strategy", "krum"] + [a for p in pairs for a in ("--strategy-arg", p)]
    return dict(build_parser().parse_args(argv).strategy_arg)


def _updates(n: int = 5) -> list[ClientUpdate]:
    rng = np.random.default_rng(0)
    return [ClientUpdate(f"d{i}", [rng.normal(size=(3, 2)).astype(np.float32)], 10) for i in range(n)]


def test_strategy_args_keep_their_types():
    args = _strategy_args("multi=3", "momentum=0.9", "adaptive=true", "accountant=rdp", "server_lr=1e-3")
    assert args == {"multi": 3, "momentum": 0.9, "adaptive": True, "accountant": "rdp", "server_lr": 0.001}
    assert type(args["multi"]) is int and type(args["momentum"]) is float


def test_multi_krum_from_the_command_line_aggregates():
    """`--strategy-arg multi=3` used to arrive as 3.0 and crash the slice of the best updates."""
    strategy = make_fleet_strategy("krum", _strategy_args("byzantine=1", "multi=3"), 5)
    new = strategy.aggregate([np.zeros((3, 2), np.float32)], _updates())
    assert new[0].shape == (3, 2) and np.all(np.isfinite(new[0]))


def test_dp_fedavg_seed_from_the_command_line_seeds_the_noise_only_when_seeded_noise_is_asked_for():
    """`--strategy-arg seed=7` used to arrive as 7.0, which numpy's generator refuses; and a seed is predictable
    noise, so it needs `--dp-noise seeded` (the service's default is the secure source, which takes no seed)."""
    args = _strategy_args("seed=7", "noise_multiplier=1.0", "clip=0.5")
    runs = [make_fleet_strategy("dp_fedavg", args, 5, "seeded").aggregate([np.zeros((3, 2), np.float32)],
                                                                        _updates())[0] for _ in range(2)]
    assert np.array_equal(runs[0], runs[1])  # same seed, same noise
    other = make_fleet_strategy("dp_fedavg", {**args, "seed": 8}, 5, "seeded").aggregate(
        [np.zeros((3, 2), np.float32)], _updates())[0]
    assert not np.array_equal(runs[0], other)
    with pytest.raises(ValueError, match="seeded"):
        make_fleet_strategy("dp_fedavg", args, 5)
    with pytest.raises(ValueError, match="--dp-noise"):
        make_fleet_strategy("dp_fedavg", {"noise": "seeded"}, 5)


@pytest.mark.parametrize("argv", [["edge", "bench"], ["firmware", "bench", "--model", "m.tflite"],
                                  ["privacy-bench"]])
def test_benches_write_under_out_unless_told(argv):
    args = build_parser().parse_args(argv)
    target = getattr(args, "json", None) or args.out
    assert target.startswith("out/") and "bench/results" not in target


def test_tensorflow_start_up_noise_is_silenced_and_errors_exit_2():
    """A command that imports TensorFlow and then fails on a user error: one line, no noise, no traceback."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "foundation", "--offline", "--epochs", "1",
                           "--data-dir", "/nonexistent/mitdb", "--out", "/tmp/unused"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    assert "tensorflow" in proc.stderr.lower() or "pulsewire: error" in proc.stderr
    for noise in ("cudart_stub", "oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard",
                  "Traceback"):
        assert noise not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("pulsewire: error:")


def test_mqtts_without_certificates_exits_2_with_what_to_pass(exported, tmp_path, capsys):
    assert main(["keys", "--out", str(tmp_path / "keys")]) == 0
    rc = main(["release", "--model", str(exported["int8"].tflite_path), "--version", "1", "--fleet", "ward",
               "--signing-key", str(tmp_path / "keys" / "aggregator.key"), "--broker", "mqtts://127.0.0.1:8883"])
    err = capsys.readouterr().err
    assert rc == 2 and "--ca" in err and "Traceback" not in err


def test_unreachable_broker_exits_2(exported, tmp_path, capsys):
    assert main(["keys", "--out", str(tmp_path / "keys")]) == 0
    rc = main(["release", "--model", str(exported["int8"].tflite_path), "--version", "1", "--fleet", "ward",
               "--signing-key", str(tmp_path / "keys" / "aggregator.key"),
               "--broker", f"mqtt://127.0.0.1:{free_port()}", "--connect-timeout", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "no MQTT connection" in err and "start one" in err


@pytest.mark.parametrize("argv, hint", [
    (["aggregate", "--model", "/nonexistent/m.tflite", "--devices", "a:1", "--fleet", "x", "--run-dir", "{tmp}/r",
      "--broker", "mqtt://127.0.0.1:1"], "/nonexistent/m"),
    (["label", "--fleet-config", "/nonexistent/fleet", "--device", "d1", "--alert", "a", "--beats", "1",
      "--labels", "N"], "pulsewire fleet init"),
    (["device", "enroll", "d1", "--fleet-dir", "/nonexistent/fleet"], "pulsewire fleet init"),
    (["aggregate", "--broker", "mqtts://127.0.0.1:1", "--ca", "/nonexistent/ca.crt", "--fleet", "x",
      "--devices", "a:1", "--model", "m", "--run-dir", "{tmp}/r"], "/nonexistent/ca.crt"),
])
def test_missing_files_exit_2_with_what_to_do(argv, hint, tmp_path, capsys):
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and hint in err and "Traceback" not in err
