"""The federated bench judges issue 13's federated targets on the shipped default case: the DS2 gap to
centralized and the share of S beats called V, pooled over seeds from the int8 confusion matrices."""
import argparse

import pytest

from tools.experiment_args import (
    BEAT_LABEL_SHIFT,
    BEAT_STRATEGY,
    LABEL_SHIFT_FLOOR,
    label_shift_for,
    strategy_for,
)
from tools.federated_bench import DEFAULT_CASE, bench_cases, default_targets, s_called_v
from training.federated.local_training import LocalConfig


def _run(s_as_v: int, s_total: int) -> dict:
    confusion = [[100, 0, 0, 0, 0], [s_total - s_as_v, 0, s_as_v, 0, 0], [0, 0, 50, 0, 0], [0] * 5, [0] * 5]
    return {"metrics": {"int8": {"confusion": confusion}}}


def _case(runs: list[dict], f1s: list[float]) -> dict:
    n = len(f1s)
    return {"settings": {"strategy": "fedavgm"}, "runs": runs,
            "summary": {"int8": {"macro_f1": {"mean": sum(f1s) / n}}}}


def test_s_called_v_pools_the_seeds_confusions():
    assert s_called_v(_case([_run(10, 100), _run(30, 100)], [0.5, 0.5])) == pytest.approx(0.2)
    assert s_called_v(_case([_run(0, 0)], [0.5])) == 0.0  # no S beats: nothing called V


def test_default_targets_gap_and_s_called_v():
    rows = default_targets(_case([_run(5, 100), _run(5, 100)], [0.60, 0.58]), {"int8_macro_f1": 0.616}, 20)
    gap, svc = rows
    assert gap["mean"] == pytest.approx(0.026) and gap["threshold"] == 0.03 and gap["met"] is True
    assert "fedavgm" in gap["target"] and "20 rounds" in gap["target"]
    assert svc["mean"] == pytest.approx(0.05) and svc["met"] is True
    missed = default_targets(_case([_run(40, 100)], [0.50]), {"int8_macro_f1": 0.616}, 20)
    assert [r["met"] for r in missed] == [False, False]
    assert default_targets(None, {"int8_macro_f1": 0.6}, 20) == []
    assert [r["target"].split(" ")[0] for r in default_targets(_case([_run(1, 10)], [0.5]), None, 20)] == ["default"]


def test_the_default_case_is_the_shipped_setting():
    """The bench's default case trains devices exactly as `pulsewire fleet` (so `make demo`) does by default."""
    from tools.cli import build_parser
    from tools.federated_commands import federated_config

    case = next(c for c in bench_cases(LocalConfig()) if c.name == DEFAULT_CASE)
    assert case.strategy == BEAT_STRATEGY and case.encoding == "int8"
    args = build_parser().parse_args(["fleet"])
    args.strategy = strategy_for(args, BEAT_STRATEGY)
    assert case.local == federated_config(args, 0).local
    assert case.local.label_shift == BEAT_LABEL_SHIFT and case.local.label_shift_floor == LABEL_SHIFT_FLOOR
    from tools.training_commands import base_config
    from training.config import TrainConfig

    assert base_config(args, 0).features == TrainConfig().features  # the model input contract's one default
    off = build_parser().parse_args(["fleet", "--no-label-shift"])
    off.strategy = BEAT_STRATEGY
    assert federated_config(off, 0).local.label_shift is False
    standalone = build_parser().parse_args(["aggregate", "--run-dir", "x"])  # devices may not know their prior
    assert label_shift_for(standalone, False) is False


def test_the_strategy_flag_wins_over_each_commands_default():
    assert strategy_for(argparse.Namespace(strategy=None), BEAT_STRATEGY) == BEAT_STRATEGY
    assert strategy_for(argparse.Namespace(), "fedavg") == "fedavg"  # a parser without --strategy
    assert strategy_for(argparse.Namespace(strategy="fednova"), BEAT_STRATEGY) == "fednova"
