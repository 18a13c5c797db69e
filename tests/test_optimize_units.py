"""The arithmetic of the optimization stages on hand-made arrays (no training)."""
import argparse

import numpy as np
import pytest

from training.config import ModelConfig
from training.optimize.fitting import FitConfig, distillation_loss, packed_targets, soft_targets
from training.optimize.pipeline import validate_chain
from training.optimize.prune import narrower_config, polynomial_sparsity, prune_smallest
from tools.optimize_commands import chain_from_flags, cli_variants
from tools.optimize_report import pareto_front


def test_prune_smallest_zeroes_exactly_the_smallest_share():
    kernel = np.array([[0.5, -0.1, 0.3], [-0.9, 0.05, 0.2]], np.float32)
    out = prune_smallest(kernel, 0.5)
    np.testing.assert_array_equal(out, np.array([[0.5, 0, 0.3], [-0.9, 0, 0]], np.float32))
    assert np.count_nonzero(prune_smallest(np.ones((7, 3)), 0.6) == 0) == round(0.6 * 21)
    np.testing.assert_array_equal(prune_smallest(kernel, 0.0), kernel)


def test_polynomial_schedule_starts_at_zero_and_holds_the_target():
    assert polynomial_sparsity(0, 100, 0.5) == 0
    assert 0 < polynomial_sparsity(10, 100, 0.5) < polynomial_sparsity(50, 100, 0.5) < 0.5
    assert polynomial_sparsity(100, 100, 0.5) == polynomial_sparsity(500, 100, 0.5) == 0.5


def test_structured_config_keeps_the_ceiling_of_each_width():
    cfg = narrower_config(ModelConfig(), 0.5)
    assert cfg.conv_filters == (4, 8, 16) and cfg.dense_units == 16 and cfg.conv_kernels == (7, 5, 5)
    assert narrower_config(ModelConfig(conv_filters=(3,), conv_kernels=(5,), dense_units=1), 0.9).conv_filters == (1,)
    with pytest.raises(ValueError, match="fraction"):
        narrower_config(ModelConfig(), 1.0)


def test_distillation_loss_by_hand():
    labels = np.array([0, 2])
    fit = FitConfig(class_weight_power=0.0)  # all class weights 1
    probs = np.array([[0.7, 0.1, 0.1, 0.05, 0.05], [0.2, 0.2, 0.4, 0.1, 0.1]], np.float32)
    teacher = soft_targets(np.array([[0.6, 0.2, 0.1, 0.05, 0.05], [0.1, 0.1, 0.6, 0.1, 0.1]]), 2.0)
    y = packed_targets(labels, fit, teacher)
    ce = -np.log([0.7, 0.4])
    np.testing.assert_allclose(distillation_loss(1.0, 2.0)(y, probs).numpy(), ce, rtol=1e-5)
    student_t = soft_targets(probs, 2.0)
    kl = np.sum(teacher * (np.log(teacher) - np.log(student_t)), axis=1)
    np.testing.assert_allclose(distillation_loss(0.3, 2.0)(y, probs).numpy(), 0.3 * ce + 0.7 * 4 * kl, rtol=1e-4)
    # a student that reproduces the teacher pays nothing for the soft part
    same = soft_targets(probs, 1.0)
    y_same = packed_targets(labels, fit, soft_targets(probs, 2.0))
    np.testing.assert_allclose(distillation_loss(0.0, 2.0)(y_same, same).numpy(), 0, atol=1e-5)


def test_class_weights_ride_on_the_hard_labels_only():
    labels = np.array([0, 0, 0, 1])
    y = packed_targets(labels, FitConfig(), np.full((4, 5), 0.2, np.float32))
    assert y[3, 1] > y[0, 0] > 0 and np.allclose(y[:, 5:], 0.2)


def test_chains_from_flags():
    ns = argparse.Namespace(distill=True, prune=0.5, structured=True, qat=True)
    assert chain_from_flags(ns) == ("distill", "structured", "qat")
    assert list(cli_variants(ns)) == ["baseline", "distill", "distill_structured", "distill_structured_qat"]
    assert chain_from_flags(argparse.Namespace(distill=False, prune=0.3, structured=False, qat=False)) == \
        ("baseline", "prune")
    with pytest.raises(ValueError):
        validate_chain(("baseline", "qat", "prune"))
    with pytest.raises(ValueError):
        validate_chain(("teacher", "structured"))


def test_pareto_front():
    pts = {"big_good": (10.0, 0.9), "small_bad": (1.0, 0.5), "dominated": (10.0, 0.6), "mid": (5.0, 0.7)}
    assert sorted(pareto_front(pts)) == ["big_good", "mid", "small_bad"]


def test_pareto_chart_joins_only_the_front_and_marks_the_limits():
    from tools.optimize_report import SIZE_LIMIT, pareto_chart

    def variant(size: float, f1: float) -> dict:
        return {"weight_bytes": {"mean": size}, "int8_macro_f1": {"mean": f1, "std": 0.01}}

    summary = {"small": variant(2_000, 0.50), "big": variant(20_000, 0.60), "worse": variant(10_000, 0.45)}
    spec = pareto_chart(summary, {"float32_macro_f1": 0.62})
    front, dominated = spec["data"]
    assert front["text"] == ["small", "big"] and dominated["text"] == ["worse"]
    lines = {(s["y0"], s["x0"]) for s in spec["layout"]["shapes"]}
    assert (0.62, 0) in lines and (0, SIZE_LIMIT) in lines
