"""The AF task's ectopy gate: ectopy-cleaned RR irregularity on hand-made rhythms and on real MIT-BIH excerpts
(the ventricular bigeminy of records 119 and 223 is vetoed, the AF of 201 and 203 is not), the device computing
the same gate as the evaluation, and the selection rule that chose it."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.af_episodes import AF_THRESHOLD, ECTOPY_GATE, ectopy_gated
from edge_runtime.rr_ectopy import (
    clean_intervals,
    clean_irregularity,
    raw_irregularity,
    window_irregularity,
)

#: What the tests call "irregular enough for AF" when the task ships without a gate (ECTOPY_GATE 0).
GATE = ECTOPY_GATE or 0.05


def _sinus(n: int = 32, seed: int = 0) -> np.ndarray:
    return 0.9 + 0.01 * np.random.default_rng(seed).standard_normal(n)


def test_ectopic_rhythms_are_regular_once_cleaned_and_af_is_not():
    rng = np.random.default_rng(1)
    af = rng.uniform(0.4, 1.1, 32)
    assert clean_irregularity(af, np.ones(33, bool)) > 0.1
    # Atrial premature beats (normal QRS): short coupling interval, then a pause; the sinus rhythm in between
    apc = _sinus()
    for i in (5, 13, 21, 27):
        apc[i], apc[i + 1] = 0.55, 1.25
    assert clean_irregularity(apc, np.ones(33, bool)) < 0.02
    # Ventricular bigeminy: every other beat has another QRS; with the QRS calls or from the RR pattern alone
    big = np.where(np.arange(32) % 2 == 0, 0.55, 1.25)
    v_flags = np.arange(33) % 2 == 0
    assert clean_irregularity(big, v_flags) == 0.0
    assert clean_irregularity(big, np.ones(33, bool)) == 0.0
    # Ventricular trigeminy and quadrigeminy with compensatory pauses: every 3rd / 4th beat has another QRS
    for period in (3, 4):
        rr = _sinus(33)[:32]
        flags = np.ones(33, bool)
        for beat in range(period - 1, 32, period):
            rr[beat - 1], rr[beat] = 0.55, 1.25
            flags[beat] = False
        assert raw_irregularity(rr) > 0.3 and clean_irregularity(rr, flags) < 0.02


def test_clean_intervals_keeps_the_sinus_intervals_and_checks_its_input():
    rr = _sinus(10)
    rr[4], rr[5] = 0.5, 1.3
    keep = clean_intervals(rr, np.ones(11, bool))
    assert not keep[4] and not keep[5] and keep[[0, 1, 2, 3, 6, 7, 8, 9]].all()
    with pytest.raises(ValueError, match="one normal-QRS flag per beat"):
        clean_intervals(rr, np.ones(10, bool))
    with pytest.raises(ValueError, match="one normal-QRS flag per beat"):
        window_irregularity(np.arange(40.0), np.ones(39, bool), 32, 8)
    # (clean, raw) per window: vetoed only where ectopy explains the irregularity; a regular window is left alone
    irr = np.array([[0.2, 0.3], [0.01, 0.3], [0.2, 0.3], [0.01, 0.01]])
    assert ectopy_gated(np.array([True, True, False, True]), irr, 0.05).tolist() == [True, False, False, True]
    assert ectopy_gated(np.ones(4, bool), irr, 0.0).all()  # gate 0: no veto


def _rhythm_spans(mitdb_dir, name: str, rhythm: str) -> list[tuple[float, float]]:
    from training.data.mitdb import load_record

    rec = load_record(mitdb_dir, name)
    changes = [(s / rec.fs_hz, str(a).rstrip("\x00")) for s, sym, a in zip(rec.ann_sample, rec.ann_symbol, rec.ann_aux)
               if sym == "+" and a]
    ends = [t for t, _ in changes[1:]] + [rec.signal_mv.size / rec.fs_hz]
    return [(t, e) for (t, a), e in zip(changes, ends) if a == rhythm]


def _vetoed_inside(mitdb_dir, name: str, spans: list[tuple[float, float]], share: float = 1.0) -> np.ndarray:
    """Whether the ectopy gate vetoes each of the record's windows (the task's) with at least ``share`` of their time
    inside ``spans``."""
    from training.tasks.af_data import record_rhythm, windows_of

    r = record_rhythm(mitdb_dir, name)
    irr = window_irregularity(r.beat_s, r.beat_normal, 32, 8)
    starts = np.arange(len(irr)) * 8
    first, last = r.beat_s[starts], r.beat_s[starts + 32]
    overlap = np.zeros(len(irr))
    for a, b in spans:
        overlap += np.clip(np.minimum(last, b) - np.maximum(first, a), 0.0, None)
    inside = overlap >= share * (last - first) - 1e-9
    assert len(irr) == len(windows_of(r.beat_s, r.beat_af, r.beat_p, r.beat_normal, 32, 8).targets)
    return ~ectopy_gated(np.ones(len(irr), bool), irr, GATE)[inside]


def test_bigeminy_of_records_119_and_223_is_vetoed(mitdb_dir):
    # 119's bigeminy comes in runs of 5-14 s, shorter than a 32-beat window: windows at least half in one
    vetoed = _vetoed_inside(mitdb_dir, "119", _rhythm_spans(mitdb_dir, "119", "(B"), share=0.5)
    assert vetoed.size >= 8 and np.mean(vetoed) >= 0.8
    # 223's runs last up to 150 s: windows wholly inside one
    vetoed = _vetoed_inside(mitdb_dir, "223", _rhythm_spans(mitdb_dir, "223", "(B"))
    assert vetoed.size >= 20 and np.mean(vetoed) >= 0.95


@pytest.mark.parametrize("name", ["201", "203"])
def test_af_of_records_201_and_203_is_not_vetoed(mitdb_dir, name):
    vetoed = _vetoed_inside(mitdb_dir, name, _rhythm_spans(mitdb_dir, name, "(AFIB"))
    assert vetoed.size >= 30
    assert np.mean(vetoed) <= 0.05


def test_monitor_applies_the_ectopy_gate_as_the_evaluation_does(mitdb_dir):
    """Streaming (``AfMonitor``) and batch (``window_irregularity``) gate the same windows of record 201."""
    from edge_runtime.af_episodes import p_gated, smooth_decisions
    from edge_runtime.af_features import FEATURE_NAMES, standardise
    from edge_runtime.af_monitor import AfMonitor
    from edge_runtime.alerts import AlertBuilder
    from tests.test_task_af import _annotated_beats, _contract, _tiny_model
    from training.tasks.af_data import record_rhythm, windows_of
    from training.tasks.af_metrics import merge_spans

    model, mean, std = _tiny_model(mitdb_dir)
    predict = lambda x: model(x["rr_features"]).numpy()
    full = record_rhythm(mitdb_dir, "201")
    keep = full.beat_s < 900.0  # AF, then sinus rhythm with ectopics, then AF again
    beat_s, normal = full.beat_s[keep], full.beat_normal[keep]
    wins = windows_of(beat_s, full.beat_af[keep], full.beat_p[keep], normal, 32, 8)
    probs = predict({"rr_features": standardise(wins.features, mean, std)})[:, 1]
    irr = window_irregularity(beat_s, normal, 32, 8)
    gate = float(np.quantile(irr[probs >= 0.5, 0], 0.3))  # strict enough to veto some AF-called windows
    ungated = p_gated(probs, wins.features[:, FEATURE_NAMES.index("p_corr_median_normal")], 0.5, 0.5)
    flags = ectopy_gated(ungated, irr, gate)
    assert np.any(np.asarray(flags) != np.asarray(ungated))  # the gate vetoes windows here: the check below can fail
    batch = [e for e in merge_spans(wins.span_s, smooth_decisions(flags, 3)) if e[1] - e[0] >= 30]
    contract = _contract(mean, std)
    contract.preprocessing["ectopy_gate"] = gate
    monitor = AfMonitor(predict, contract, AlertBuilder("d", "p"), lambda a: None, "v")
    assert monitor.ectopy_gate == gate
    for beat in _annotated_beats(mitdb_dir, "201", beat_s, "v"):
        monitor.on_beat(beat)
    monitor.close()
    assert batch and np.allclose(np.asarray(monitor.episodes), np.asarray(batch))


def test_task_contract_carries_the_gate_and_threshold(mitdb_dir, monkeypatch, cache_root):
    from training.tasks.af import AfTask

    monkeypatch.setenv("PULSEWIRE_CACHE", str(cache_root))
    task = AfTask(max_persons=1, data_dir=mitdb_dir)
    pre = task.edge_contract(task.load("val")).preprocessing
    assert pre["ectopy_gate"] == ECTOPY_GATE and pre["threshold"] == AF_THRESHOLD
    assert pre["ectopy_feature"] == "clean_mad_drr_rel"


def test_ectopy_selection_rule_keeps_sensitivity_and_aftdb_af():
    from tools.task_bench.af_ectopy_selection import pick

    def row(gate, thr, se, ppv, dur_se=0.97, windows=0.99, segments=1.0):
        return {"ectopy_gate": gate, "threshold": thr, "episode_se": se, "episode_ppv": ppv, "duration_se": dur_se,
                "aftdb": {"window_retention": windows, "segment_retention": segments}}

    base = row(0.0, 0.5, 1.0, 0.47)
    rows = [base, row(0.04, 0.5, 1.0, 0.8), row(0.05, 0.5, 1.0, 0.8), row(0.06, 0.5, 0.95, 0.9),
            row(0.08, 0.5, 1.0, 0.95, windows=0.93), row(0.05, 0.7, 1.0, 0.8), row(0.04, 0.7, 1.0, 0.85, dur_se=0.9)]
    assert pick(rows) == (0.04, 0.5)  # Se lost, aftdb AF lost, duration lost; ties: weaker gate, lower threshold
    assert pick([base, row(0.08, 0.5, 1.0, 0.95, segments=0.9)]) == (0.0, 0.5)  # nothing qualifies: the default
