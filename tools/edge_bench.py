"""The edge benchmark: R-peak detection on all 48 MIT-BIH records against peers, end-to-end speed and
memory of the device pipeline, and beat-to-alert latency through a loopback Mosquitto.

Peers run in the same process on the same records and signals: ``wfdb.processing.xqrs_detect`` and
``neurokit2.ecg_peaks`` (each on its own preferred input: the raw lead, and NeuroKit's own cleaning).
All detectors are scored identically (EC57 matching within 150 ms, flutter episodes excluded).
"""
from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edge_runtime.aami import aami_labels
from edge_runtime.rpeak import StreamingRPeakDetector
from edge_runtime.scoring import DetectionScore, score_detection
from edge_runtime.signal_config import SignalConfig
from tools.data_args import cache_root
from training.data.mitdb import load_record

log = logging.getLogger(__name__)
Detector = Callable[[np.ndarray, float], np.ndarray]


def pulsewire_detector(signal: np.ndarray, fs: float) -> np.ndarray:
    """Ours, as the device runs it: causal filter and detector fed one-second chunks."""
    from edge_runtime.filtering import StreamingBandpass

    cfg = SignalConfig(fs_hz=fs)
    filt, det = StreamingBandpass(cfg), StreamingRPeakDetector()
    step = int(fs)
    parts = [det.process(filt.process(signal[i:i + step])) for i in range(0, signal.size, step)]
    return np.concatenate(parts + [det.flush()])


def xqrs_detector(signal: np.ndarray, fs: float) -> np.ndarray:
    from wfdb import processing

    return np.asarray(processing.xqrs_detect(sig=signal, fs=fs, verbose=False), np.int64)


def neurokit_detector(signal: np.ndarray, fs: float) -> np.ndarray:
    import neurokit2 as nk

    cleaned = nk.ecg_clean(signal, sampling_rate=int(fs))
    _, info = nk.ecg_peaks(cleaned, sampling_rate=int(fs))
    return np.asarray(info["ECG_R_Peaks"], np.int64)


DETECTORS: dict[str, Detector] = {"pulsewire": pulsewire_detector, "wfdb_xqrs": xqrs_detector,
                                  "neurokit2": neurokit_detector}


def detection_bench(data_dir: Path, records: list[str]) -> dict:
    per_record: dict[str, dict] = {}
    totals = {name: DetectionScore(0, 0, 0) for name in DETECTORS}
    seconds = {name: 0.0 for name in DETECTORS}
    for name in records:
        try:
            rec = load_record(data_dir, name)
        except Exception:
            rec = load_record(data_dir, name, lead=0)  # 102 and 104 have no MLII
        _, pos = aami_labels(rec.ann_symbol)
        reference, episodes = rec.ann_sample[pos], rec.flutter_episodes()
        row = {"lead": rec.lead}
        for det_name, detect in DETECTORS.items():
            t0 = time.perf_counter()
            try:
                peaks = detect(rec.signal_mv, rec.fs_hz)
            except Exception as exc:  # a peer failing on a record is a result, not a crash
                log.warning("%s failed on %s: %s", det_name, name, exc)
                peaks = np.zeros(0, np.int64)
            seconds[det_name] += time.perf_counter() - t0
            score = score_detection(reference, peaks, rec.fs_hz, episodes)
            totals[det_name] = totals[det_name] + score
            row[det_name] = score.to_dict()
        per_record[name] = row
        log.info("%s: %s", name, "  ".join(f"{d} Se {_pct(row[d]['se'])} +P {_pct(row[d]['ppv'])}"
                                           for d in DETECTORS))
    return {"records": per_record,
            "totals": {d: {**totals[d].to_dict(), "seconds": seconds[d]} for d in DETECTORS}}


def _pct(value: float | None) -> str:
    """A detector that found no beat has no +P (0/0): say so instead of failing the bench."""
    return "n/a" if value is None else f"{100 * value:.2f}"


def end_to_end_bench(data_dir: Path, records: list[str], model: Path) -> dict:
    """`pulsewire edge run --speed max` in a fresh process per record: wall time and peak RSS."""
    rows = {}
    for name in records:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out = subprocess.run([sys.executable, "-m", "tools.cli", "edge", "run", "--record", str(data_dir / name),
                              "--model", str(model), "--speed", "max", "--out", f"out/edge-bench/{name}"],
                             capture_output=True, text=True, check=True)
        stats = json.loads(out.stdout[: out.stdout.rindex("}") + 1])
        rows[name] = {**stats, "peak_rss_mb": max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024}
    factors = [r["realtime_factor"] for r in rows.values()]
    return {"records": rows, "realtime_factor_min": min(factors), "realtime_factor_median": float(np.median(factors)),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rows.values())}


def latency_bench(data_dir: Path, model: Path, seconds: float = 120.0) -> dict:
    """Real-time replay of record 208 with an alert every 2 s and every V run, through a loopback Mosquitto."""
    from broker.launcher import MosquittoBroker, broker_url
    from edge_runtime.alert_publisher import AlertPublisher
    from edge_runtime.alerts import AlertPolicy
    from edge_runtime.classifier import BeatClassifier
    from edge_runtime.runtime import EdgeRuntime
    from edge_runtime.sources import WfdbReplay, paced

    broker = MosquittoBroker()
    broker.start()
    try:
        source = WfdbReplay(data_dir / "208", "MLII", chunk_s=0.02)
        limited = _first_seconds(source, seconds)
        pub = AlertPublisher("bench", 1, "bench", broker_url(broker), Path("out/edge-bench/latency.sqlite"), "anon",
                             AlertPolicy(summary_every_s=2.0))
        pub.start()
        pub.link.connected.wait(10)
        EdgeRuntime(BeatClassifier.from_file(model), source.fs_hz, [pub]).run(paced(limited, 1.0))
    finally:
        broker.close()
    lat = np.asarray(pub.latencies_ms)
    return {"alerts": int(lat.size), "replay_seconds": seconds, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
            "definition": "from the classified beat reaching the alert sink to the broker's PUBACK "
                          "(spooled in SQLite, published QoS 1)"}


class _first_seconds:
    def __init__(self, source, seconds: float) -> None:
        self.fs_hz, self._source, self._n = source.fs_hz, source, int(seconds * source.fs_hz)

    def chunks(self):
        sent = 0
        for chunk in self._source.chunks():
            if sent >= self._n:
                return
            yield chunk[: self._n - sent]
            sent += chunk.size


def edge_targets(results: dict) -> list[dict]:
    rows = []

    def add(name: str, value: float | None, threshold: float, higher: bool = True) -> None:
        met = None if value is None else (value >= threshold if higher else value <= threshold)
        rows.append({"target": name, "mean": value, "threshold": threshold, "met": met})

    totals = results["detection"]["totals"]
    ours = totals["pulsewire"]
    add("R-peak Se, 48 records", ours["se"], 0.996)
    add("R-peak +P, 48 records", ours["ppv"], 0.996)
    def both(v: dict) -> float:  # a detector that found nothing (a missing peer) has no +P: it counts as 0
        return (v["se"] or 0.0) + (v["ppv"] or 0.0)

    best_peer = max((v for k, v in totals.items() if k != "pulsewire"), key=both)
    add("R-peak Se + +P minus the best peer's", both(ours) - both(best_peer), 0.0)
    if "end_to_end" in results:
        add("end-to-end real-time factor at --speed max (slowest record)", results["end_to_end"]["realtime_factor_min"],
            1000.0)
    if "latency" in results:
        add("beat-to-alert latency p99, ms", results["latency"]["p99_ms"], 50.0, higher=False)
    return rows


def edge_markdown(results: dict) -> str:
    from tools.report import targets_table

    dets = list(results["detection"]["totals"])
    head = ["record", "lead"] + [f"{d} Se / +P" for d in dets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in list(results["detection"]["records"].items()) + [("total", {"lead": "", **results["detection"]["totals"]})]:
        cells = [name, row["lead"]] + [f"{_pct(row[d]['se'])} / {_pct(row[d]['ppv'])}" for d in dets]
        lines.append("| " + " | ".join(cells) + " |")
    speed = "  \n".join(f"{d}: {results['detection']['totals'][d]['seconds']:.1f} s for all records" for d in dets)
    parts = [f"# pulsewire edge benchmark\n\nCommand: `{results['command']}`",
             "## Targets\n\n" + targets_table(results["targets"]),
             "## R-peak detection (EC57 matching, 150 ms, flutter episodes excluded)\n\n" + "\n".join(lines),
             "## Detector time\n\n" + speed]
    if "end_to_end" in results:
        e = results["end_to_end"]
        parts.append(f"## End to end\n\nreal-time factor min {e['realtime_factor_min']:,.0f}, median "
                     f"{e['realtime_factor_median']:,.0f}; peak RSS {e['peak_rss_mb_max']:.0f} MB")
    if "latency" in results:
        lat = results["latency"]
        parts.append(f"## Beat-to-alert latency\n\n{lat['alerts']} alerts: p50 {lat['p50_ms']:.1f} ms, "
                     f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms ({lat['definition']})")
    if "personalization" in results:
        rows = ["| labelled minutes | head | macro F1 | accuracy | S Se / +P | V Se / +P |", "|---|---|---|---|---|---|"]
        for key, block in results["personalization"].items():
            if not key.endswith("_min"):
                continue
            for head, rep in block.items():
                pc = rep["per_class"]
                rows.append(f"| {key[:-4]} | {head} | {rep['macro_f1']:.3f} | {100 * rep['accuracy']:.1f} | "
                            f"{100 * (pc['S']['se'] or 0):.1f} / {100 * (pc['S']['ppv'] or 0):.1f} | "
                            f"{100 * (pc['V']['se'] or 0):.1f} / {100 * (pc['V']['ppv'] or 0):.1f} |")
        parts.append("## On-device personalization (DS2 records, the rest of each record after the labelled "
                     "minutes)\n\n" + "\n".join(rows))
    return "\n\n".join(parts) + "\n"


def personalization_bench(data_dir: Path, model: Path, records: list[str], minutes: tuple[float, ...] = (2.0, 5.0)) -> dict:
    """Per record: label the first M minutes (as a clinician would confirm them), retrain the head on the
    device, score the rest of the record with the population and the personalized head."""
    from edge_runtime.aami import AAMI_CLASSES
    from edge_runtime.classifier import BeatClassifier
    from edge_runtime.metrics import classification_report
    from edge_runtime.personalize import Head, HeadFeatures, train_head
    from edge_runtime.template_features import feature_set_of
    from training.data.feature_sets import load_feature_beats

    clf = BeatClassifier.from_file(model)
    features = HeadFeatures(clf, model.read_bytes())
    population = Head(features.population_w, features.population_b)
    cache = cache_root()
    data = load_feature_beats(data_dir, records, cache, feature_set_of(clf.metadata.rr_feature_names),
                              clf.metadata.signal)
    out: dict = {"model": str(model), "records": records}
    for m in minutes:
        y, base, pers = [], [], []
        for r in records:
            d = data.subset(np.flatnonzero(data.record == r))
            n = int(np.searchsorted(d.sample, m * 60 * clf.metadata.signal.fs_hz))
            f = features.features(d.waves, d.rr)
            head = train_head(f[:n], d.labels[:n], population)
            y.append(d.labels[n:])
            base.append(population.predict(f[n:]))
            pers.append(head.predict(f[n:]))
        y_all = np.concatenate(y)
        out[f"{m:g}_min"] = {name: classification_report(y_all, np.concatenate(p), AAMI_CLASSES,
                                                          macro_over=("N", "S", "V", "F"))
                             for name, p in (("population", base), ("personalized", pers))}
    return out
