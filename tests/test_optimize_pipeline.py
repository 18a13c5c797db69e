"""Distillation and a composed chain end to end on a few real records: teacher, student, structured pruning,
QAT, int8 exports, TFLite-Micro, the report with its Pareto plot."""
import numpy as np
import pytest

from tools.optimize_report import finish_results, write_optimize_report
from training.config import TrainConfig
from training.optimize.pipeline import OptimizeConfig, run_variants

pytestmark = pytest.mark.slow


def test_distill_structured_qat_chain_and_report(mitdb_dir, cache_root, tmp_path):
    from training.data.feature_sets import load_feature_beats

    cfg = OptimizeConfig(train=TrainConfig(epochs=1, min_epochs=1), finetune_epochs=1, qat_epochs=1,
                         calibration_beats=200, tflm_beats=200)
    train = load_feature_beats(mitdb_dir, ["119", "201", "208", "209"], cache_root)
    val = load_feature_beats(mitdb_dir, ["118", "207"], cache_root)
    test = load_feature_beats(mitdb_dir, ["213"], cache_root)
    variants = {"baseline": ("baseline",), "distill": ("distill",),
                "distill_structured_qat": ("distill", "structured", "qat")}
    runs = run_variants(train.subset(np.arange(0, len(train), 2)), val, test, variants, cfg, tmp_path / "m", "t")
    assert 0 < runs["distill"]["val_macro_f1"] <= 1 and runs["distill"]["best_epoch"] == 1
    small, base = runs["distill_structured_qat"], runs["baseline"]
    assert small["parameters"] < base["parameters"] and small["macs_per_beat"] < base["macs_per_beat"]
    assert small["flatbuffer"]["weight_bytes"] < base["flatbuffer"]["weight_bytes"]
    for run in runs.values():
        assert run["tflm"]["all_identical_reference"] and not run["flatbuffer"]["ops_outside_firmware_set"]
        assert run["int8"]["n_beats"] == len(test)

    results = {"command": "test", "data_dir": str(mitdb_dir), "elapsed_seconds": 0.0,
               "settings": {"variants": {k: list(v) for k, v in variants.items()}, "protocols": ["inter"],
                            "seeds": [0], "quick": True,
                            "config": {"inter": __import__("dataclasses").asdict(cfg)}},
               "protocols": {"inter": {"runs": {"0": runs}, "splits": {"0": "test split"}}}}
    results = finish_results(results, tmp_path / "no_foundation.json")
    paths = write_optimize_report(results, tmp_path / "report", "optimize")
    md = paths["markdown"].read_text()
    assert "distill_structured_qat" in md and "QAT − PTQ" not in md  # no PTQ twin of the QAT chain was run
    assert paths["optimize_pareto"].stat().st_size > 10_000
    html = paths["html"].read_text()  # the Pareto plot drawn interactively, Plotly from beside the page
    assert "Pareto front" in html and (tmp_path / "report" / "plotly.min.js").exists()
    assert results["targets"][-1]["met"] is True  # every variant bit-exact in TFLite-Micro, firmware ops only
