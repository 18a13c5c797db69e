"""What a hardware-in-the-loop run measured: the device's beats against the Python pipeline fed the same
samples (edge_runtime's detector, windows and RR features, then the int8 model in the interpreter the
generated C is bit-exact with), both scored against the record's reference annotations (EC57 beat-by-beat,
edge_runtime/scoring.py), the latencies and the samples lost on the way."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.hil_link import HilSession

#: interpreters a run can be compared with: the generated C (default FC rounding) is bit-exact with TFLite-Micro
REFERENCES = ("tflm", "litert_ref", "litert_builtin")


@dataclass(frozen=True)
class Reference:
    """The Python pipeline's beats: R-peak samples and int8 logits, one row per beat."""

    samples: np.ndarray
    inputs: np.ndarray  # int8 model inputs per beat: the wave window, then the RR features
    logits: np.ndarray
    backend: str


def _run_model(model: bytes, inputs: np.ndarray, window: int, backend: str) -> np.ndarray:
    """Logits of ``backend`` for rows of int8 inputs (wave then RR), fed in the graph's input order."""
    from training.codegen.references import model_io, run_reference

    ins, _ = model_io(model)
    parts = {3: inputs[:, :window], 2: inputs[:, window:]}
    graph = [parts[len(shape)].reshape((len(inputs),) + tuple(shape[1:])) for _, shape in ins]
    return run_reference(model, graph, backend)[0].reshape(len(inputs), -1)


def python_pipeline(mv: np.ndarray, model_path: Path, backend: str) -> Reference:
    """edge_runtime.beat_stream.offline_beats (the batch reference the stream equals) on ``mv`` (millivolts),
    then the int8 model on its quantized inputs with ``backend``."""
    from edge_runtime.beat_stream import offline_beats
    from edge_runtime.classifier import BeatClassifier
    from edge_runtime.template_features import model_features

    clf = BeatClassifier.from_file(model_path)
    signal = clf.metadata.signal
    peaks, beats = offline_beats(mv, signal)
    samples = peaks[beats.beat_index].astype(np.int64)
    rr = model_features(beats.waves, beats.rr, clf.metadata.rr_feature_names, signal)  # + template features
    width = signal.window_length + rr.shape[1]
    if samples.size == 0:
        return Reference(samples, np.zeros((0, width), np.int8),
                         np.zeros((0, len(clf.metadata.class_names)), np.int8), backend)
    qw, qr = clf.quantize_inputs(beats.waves, rr)
    inputs = np.concatenate([qw.reshape(len(qw), -1), qr.reshape(len(qr), -1)], axis=1)
    return Reference(samples, inputs, _run_model(Path(model_path).read_bytes(), inputs, signal.window_length,
                                                 backend), backend)


def _inputs_check(session: HilSession, ref: Reference, di: np.ndarray, pi: np.ndarray, model: bytes,
                  window: int) -> dict | None:
    """With echoed inputs: is the model on the device bit-exact on its own inputs, and how do those inputs
    differ from the Python pipeline's (the fixed-point front-end against the float one)?"""
    if not session.beats or any(b.inputs is None for b in session.beats):
        return None
    dev = np.array([np.frombuffer(b.inputs, np.int8) for b in session.beats])
    logits = np.array([b.logits for b in session.beats], np.int64)
    model_ok = np.all(_run_model(model, dev, window, ref.backend).astype(np.int64) == logits, axis=1)
    d = np.abs(dev[di].astype(np.int64) - ref.inputs[pi].astype(np.int64))
    return {"model_bit_exact_on_device_inputs": int(model_ok.sum()), "beats": len(dev),
            "identical_input_beats": int(np.sum(np.all(d == 0, axis=1))), "differing_input_values": int(np.sum(d != 0)),
            "input_values": int(d.size), "max_input_diff_lsb": int(d.max(initial=0))}


def compare(session: HilSession, ref: Reference, model: bytes, window: int, max_listed: int = 10) -> dict:
    """Beat by beat: positions (identical, within 2 samples), and at identical positions the logits byte for
    byte and the classes; with echoed inputs, where a difference comes from (see ``_inputs_check``)."""
    from edge_runtime.scoring import match_beats

    dev = np.array([b.sample for b in session.beats], np.int64)
    dev_logits = np.array([b.logits for b in session.beats], np.int64).reshape(len(dev), -1)
    same, di, pi = np.intersect1d(dev, ref.samples, assume_unique=True, return_indices=True)
    near_p, _ = match_beats(ref.samples, dev, 2)
    equal = np.all(dev_logits[di] == ref.logits[pi].astype(np.int64), axis=1) if same.size else np.zeros(0, bool)
    dev_cls = np.array([b.cls for b in session.beats], np.int64)
    ref_cls = np.argmax(ref.logits, axis=1) if len(ref.logits) else np.zeros(0, np.int64)
    mismatches = [{"sample": int(same[k]), "device": dev_logits[di[k]].tolist(), "python": ref.logits[pi[k]].tolist()}
                  for k in np.flatnonzero(~equal)[:max_listed]]
    numbers = [b.n for b in session.beats]
    return {
        "reference_interpreter": ref.backend,
        "python_beats": int(ref.samples.size), "device_beats": int(dev.size),
        "identical_positions": int(same.size), "positions_within_2_samples": int(near_p.size),
        "only_python": [int(s) for s in np.setdiff1d(ref.samples, dev)[:max_listed]],
        "only_device": [int(s) for s in np.setdiff1d(dev, ref.samples)[:max_listed]],
        "identical_logits": int(equal.sum()), "identical_classes": int(np.sum(dev_cls[di] == ref_cls[pi])),
        "argmax_consistent": bool(np.all(dev_cls == (np.argmax(dev_logits, axis=1) if dev.size else dev_cls))),
        "beat_lines_lost": int(max(numbers) + 1 - len(numbers)) if numbers else 0,
        "first_mismatches": mismatches,
        "inputs": _inputs_check(session, ref, di, pi, model, window),
        "bit_exact_every_beat": bool(dev.size == ref.samples.size == same.size == int(equal.sum())),
    }


def ec57(samples: np.ndarray, classes: np.ndarray, annotations, fs_hz: float) -> dict | None:
    """Beat-by-beat scores against the reference annotations (None without them): detection Se / +P and
    per-class Se / +P on matched beats, flutter episodes excluded."""
    from edge_runtime.aami import AAMI_CLASSES, aami_labels
    from edge_runtime.scoring import score_classes

    if annotations is None:
        return None
    ref_samples, symbols, episodes = annotations
    labels, pos = aami_labels(symbols)
    return score_classes(np.asarray(ref_samples)[pos], labels, samples, classes, AAMI_CLASSES, fs_hz,
                         macro_over=("N", "S", "V", "F"), excluded=episodes)


def _stats_ms(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = np.asarray(values)
    return {"n": int(v.size), "median": round(float(np.median(v)), 2), "p95": round(float(np.percentile(v, 95)), 2),
            "max": round(float(v.max()), 2)}


def latency(session: HilSession, fs_hz: float) -> dict:
    """Per beat: ``detection_delay`` = samples the device had taken when it sent the beat minus its R-peak
    sample (the algorithm's delay: the next beat and the window's end must arrive first), in ms of signal;
    ``r_peak_to_line`` = host time from sending the batch with the R peak to receiving the beat line (at
    --speed 1 the real-time latency a wearer would see, plus the serial line); ``processing`` = host time
    from sending the batch that completed the beat to receiving its line (device compute + serial)."""
    firsts = np.array([s for s, _, _ in session.sent_at], np.int64)
    times = np.array([t for _, _, t in session.sent_at])
    delay, r_to_line, processing = [], [], []
    for b in session.beats:
        delay.append(1000.0 * (b.samples_acked - b.sample) / fs_hz)
        if firsts.size:
            k = int(np.searchsorted(firsts, b.sample, side="right")) - 1
            j = int(np.searchsorted(firsts, b.samples_acked - 1, side="right")) - 1
            if k >= 0:
                r_to_line.append(1000.0 * (b.arrived_s - times[k]))
            if j >= 0:
                processing.append(1000.0 * (b.arrived_s - times[j]))
    return {"detection_delay_ms": _stats_ms(delay), "r_peak_to_line_ms": _stats_ms(r_to_line),
            "processing_ms": _stats_ms(processing)}


def dropped(session: HilSession, samples_sent: int) -> dict:
    c = session.counters
    never = max(0, samples_sent - c.get("samples", 0))
    return {"samples_sent": samples_sent, "device_samples": c.get("samples", 0),
            "gap_samples": c.get("gap_samples", 0), "never_taken": never,
            "dropped_samples": c.get("gap_samples", 0) + never,
            "bad_lines": c.get("bad_lines", 0), "dup_lines": c.get("dup_lines", 0), "overruns": c.get("overruns", 0),
            "late_peaks": c.get("late_peaks", 0), "detector_dropped": c.get("detector_dropped", 0),
            "model_errors": c.get("model_errors", 0), "device_lines_bad_checksum": session.bad_checksums,
            "console_lines_ignored": session.foreign_lines, "device_lines_malformed": session.malformed_lines,
            "device_errors": session.errors[:10]}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def markdown(r: dict) -> str:
    c, d, lat = r["comparison"], r["dropped"], r["latency"]
    lines = [f"# HIL run: record {r['record']} ({r['lead']}), {r['seconds']:g} s, speed {r['speed']}", "",
             f"Device: {r['device']['info']} via {r['port']}; self-test {r['device']['selftest']}.", "",
             "| quantity | value |", "|---|---|",
             f"| beats: device / Python pipeline | {c['device_beats']} / {c['python_beats']} |",
             f"| identical R-peak positions | {c['identical_positions']} |",
             f"| identical int8 logits (vs {c['reference_interpreter']}) | {c['identical_logits']} |",
             f"| identical classes | {c['identical_classes']} |",
             f"| bit-exact on every beat | {'yes' if c['bit_exact_every_beat'] else '**no**'} |",
             *([] if not c["inputs"] else [
                 (f"| device model on its own inputs: identical logits | {c['inputs']['model_bit_exact_on_device_inputs']}"
                 f" / {c['inputs']['beats']} |"),
                 (f"| int8 inputs identical to Python's (beats; values differing, max LSB) | "
                 f"{c['inputs']['identical_input_beats']} ({c['inputs']['differing_input_values']} of "
                 f"{c['inputs']['input_values']}, {c['inputs']['max_input_diff_lsb']}) |")]),
             f"| dropped samples (gap fill + never taken) | {d['dropped_samples']} |",
             f"| bad lines / overruns / late peaks | {d['bad_lines']} / {d['overruns']} / {d['late_peaks']} |",
             (f"| detection delay median / max (ms of signal) | {lat['detection_delay_ms'].get('median')} / "
             f"{lat['detection_delay_ms'].get('max')} |"),
             (f"| R peak sent -> beat line, median / p95 (ms) | {lat['r_peak_to_line_ms'].get('median')} / "
             f"{lat['r_peak_to_line_ms'].get('p95')} |"),
             (f"| completing batch sent -> beat line, median / p95 (ms) | {lat['processing_ms'].get('median')} / "
             f"{lat['processing_ms'].get('p95')} |"),
             f"| wall time (s) | {r['wall_seconds']} |"]
    if r.get("ec57"):
        lines += ["", "EC57 against the reference annotations (150 ms, flutter excluded):", "",
                  "| pipeline | detection Se / +P (%) | V Se / +P (%) | S Se / +P (%) |", "|---|---|---|---|"]
        for who in ("device", "python"):
            e = r["ec57"][who]
            lines.append(f"| {who} | {_pct(e['detection']['se'])} / {_pct(e['detection']['ppv'])} | "
                         f"{_pct(e['per_class']['V']['se'])} / {_pct(e['per_class']['V']['ppv'])} | "
                         f"{_pct(e['per_class']['S']['se'])} / {_pct(e['per_class']['S']['ppv'])} |")
    return "\n".join(lines) + "\n"
