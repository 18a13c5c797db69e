"""The robustness suite: the device chain on MIT-BIH under perturbations, and on its second channel.

Every case runs the device's own pipeline (``EdgeRuntime``: invalid-sample guard, resampling, band-pass,
R-peak detector, signal quality, int8 classifier) on one whole record, perturbed by one named plug-in of
``training.data.perturbations`` (seeded by the record number) or read from MIT-BIH's second channel
(V1, V2, V4 or V5: a lead no model was trained or selected on). Detection is scored on every detected R
peak, classes on the beats the runtime emits (EC57 matching within 150 ms; flutter episodes and the
perturbation's unscoreable ranges, lead-off gaps and clipped bursts plus 1 s, are excluded). Matching runs
on the whole record before anything is excluded: a reference beat in a scored stretch is found when a
detection lies within 150 ms of it, even if that detection falls just inside an excluded range (the QRS
right before an electrode comes off, reported at the step to the rail), and a detection matched to an
excluded reference beat is neither a hit nor a false beat. Detection counts every R peak, including beats
the quality index labels Q (unclassifiable): a beat found and marked unusable is still found. In the class
scores, Q-labelled beats count as misclassified wherever the reference says otherwise.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edge_runtime.aami import AAMI_CLASSES, aami_labels
from edge_runtime.metrics import classification_report
from edge_runtime.scoring import DetectionScore, excluded_mask, match_beats
from training.data.ecg_noise import nst_snr_db
from training.data.mitdb import EcgRecord, load_record
from training.data.perturbations import perturbation
from training.data.perturbed import Perturbed

log = logging.getLogger(__name__)

SECOND_CHANNEL = "second_channel"
DETECTION_TARGET = 0.995
TOLERANCE_S = 0.150
NST_NOISES = ("emg", "motion")


def second_channel(data_dir: Path, name: str) -> EcgRecord:
    """The record's other lead than MLII (or its second channel when it has no MLII)."""
    import wfdb

    names = wfdb.rdheader(str(Path(data_dir) / name)).sig_name
    other = [i for i, lead in enumerate(names) if lead != "MLII"]
    return load_record(data_dir, name, lead=other[0] if "MLII" in names else 1)


def _chunks(x: np.ndarray, n: int) -> Iterator[np.ndarray]:
    for i in range(0, x.size, n):
        yield x[i:i + n]


class _Collector:
    def __init__(self) -> None:
        self.samples: list[int] = []
        self.labels: list[str] = []

    def on_beat(self, beat) -> None:
        self.samples.append(beat.sample)
        self.labels.append(beat.label)

    def close(self) -> None:
        pass


def scored_matches(ref: np.ndarray, det: np.ndarray, tolerance: int,
                   excluded: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Matched (reference, detection) index pairs that count, and how many reference beats and detections
    count: all beats are matched first; reference beats in ``excluded`` ranges are left out with their
    matches, detections in them only when no scored reference beat claimed them. Both inputs sorted."""
    mr, md = match_beats(ref, det, tolerance)
    ref_out = excluded_mask(ref, excluded)
    scored = ~ref_out[mr]
    det_in = ~excluded_mask(det, excluded)
    det_in[md] = scored  # a matched detection counts exactly when its reference beat does
    return mr[scored], md[scored], int((~ref_out).sum()), int(det_in.sum())


def unusable_spans(samples: np.ndarray, labels: list[str], fs_hz: float) -> list[tuple[int, int]]:
    """The stretches the quality index marked unusable: each Q-labelled beat's RR interval (just after the
    beat before it, or 1 s for the first), up to 150 ms after it so its own QRS is inside. Sorted beats."""
    tol, first = round(TOLERANCE_S * fs_hz), round(fs_hz)
    return [(int(samples[i - 1]) + 1 if i else int(samples[i]) - first, int(samples[i]) + tol)
            for i, label in enumerate(labels) if label == "Q"]


def covered_samples(spans: list[tuple[int, int]]) -> int:
    """Samples inside the union of [start, end) spans (consecutive Q beats' spans overlap)."""
    total, reach = 0, None
    for a, b in sorted(spans):
        start = a if reach is None else max(a, reach)
        if b > start:
            total += b - start
        reach = b if reach is None else max(reach, b)
    return total


def run_case(rec: EcgRecord, case: Perturbed, classifier) -> dict:
    """The runtime on one perturbed record: detection counts and matched (reference, predicted) class pairs."""
    from edge_runtime.runtime import EdgeRuntime

    sink = _Collector()
    runtime = EdgeRuntime(classifier, case.fs_hz, [sink])
    peaks: list[int] = []
    runtime.stream.on_peak = peaks.append
    stats = runtime.run(_chunks(case.signal_mv, max(1, int(case.fs_hz))))
    detected = np.asarray(runtime.resampler.to_input_index(np.asarray(peaks, np.int64)), np.int64)

    ratio = case.fs_hz / rec.fs_hz
    episodes = [(int(a * ratio), int(np.ceil(b * ratio))) for a, b in rec.flutter_episodes()]
    excluded = episodes + list(case.excluded)
    labels, positions = aami_labels(rec.ann_symbol)
    ref = case.ann_sample[positions]
    tol = round(TOLERANCE_S * case.fs_hz)
    mr, _, n_ref, n_det = scored_matches(ref, np.sort(detected), tol, excluded)
    score = DetectionScore(int(mr.size), n_ref - int(mr.size), n_det - int(mr.size))

    beat_samples = np.asarray(sink.samples, np.int64)
    beat_labels = np.asarray([AAMI_CLASSES.index(c) for c in sink.labels], np.int64)
    order = np.argsort(beat_samples, kind="stable")
    cr, cd, _, _ = scored_matches(ref, beat_samples[order], tol, excluded)
    # the EC57-style alternative ("shutdown"): also leave out what the device itself marked unusable
    spans = unusable_spans(beat_samples[order], [sink.labels[i] for i in order], case.fs_hz)
    ur, _, u_ref, u_det = scored_matches(ref, np.sort(detected), tol, excluded + spans)
    usable = DetectionScore(int(ur.size), u_ref - int(ur.size), u_det - int(ur.size))
    shutdown = covered_samples(spans)
    return {"detection": score, "detection_usable": usable, "shutdown_s": shutdown / case.fs_hz,
            "true": labels[cr].astype(np.int64), "pred": beat_labels[order][cd],
            "seconds": stats.signal_s, "wall": stats.wall_s, "q_beats": stats.unusable_beats,
            "beats": stats.beats}


def nst_equivalent_snr(spec: str, rec: EcgRecord, case: Perturbed) -> float | None:
    """For the additive noises (``emg``, ``motion``): the SNR WFDB's nst would state for the noise this case
    added (its definition differs in detail from the suite's; docs/robustness.md compares them)."""
    if spec.split(":")[0] not in NST_NOISES or case.signal_mv.size != rec.signal_mv.size:
        return None
    return nst_snr_db(rec.signal_mv, case.signal_mv - rec.signal_mv, rec.fs_hz, rec.ann_sample, rec.ann_symbol)


def run_suite(data_dir: Path, records: list[str], specs: list[str], classifier,
              on_row: Callable[[dict], None] | None = None) -> dict:
    """Every perturbation (and the second channel when ``SECOND_CHANNEL`` is among ``specs``) on every record;
    ``on_row`` sees the rows so far after each perturbation (a long run keeps its partial results)."""
    rows: dict[str, dict] = {}
    for spec in specs:
        started = time.perf_counter()
        total, usable, true, pred, per_record = DetectionScore(0, 0, 0), DetectionScore(0, 0, 0), [], [], {}
        seconds = wall = shutdown = 0.0
        q_beats = beats = 0
        snrs: list[float] = []
        for name in records:
            if spec == SECOND_CHANNEL:
                rec = second_channel(data_dir, name)
                case = perturbation("none").apply(rec.signal_mv, rec.fs_hz, rec.ann_sample, 0)
            else:
                rec = load_record(data_dir, name)
                case = perturbation(spec).apply(rec.signal_mv, rec.fs_hz, rec.ann_sample, int(name))
            out = run_case(rec, case, classifier)
            nst = nst_equivalent_snr(spec, rec, case)
            if nst is not None:
                snrs.append(nst)
            total = total + out["detection"]
            usable = usable + out["detection_usable"]
            shutdown += out["shutdown_s"]
            true.append(out["true"])
            pred.append(out["pred"])
            seconds += out["seconds"]
            wall += out["wall"]
            q_beats += out["q_beats"]
            beats += out["beats"]
            per_record[name] = {"lead": rec.lead, **out["detection"].to_dict(),
                                "usable": out["detection_usable"].to_dict(), "shutdown_s": out["shutdown_s"]}
        report = classification_report(np.concatenate(true), np.concatenate(pred), AAMI_CLASSES,
                                       macro_over=("N", "S", "V", "F"))
        rows[spec] = {"detection": total.to_dict(), "classes": report, "records": per_record,
                      "detection_usable": usable.to_dict(), "shutdown_share": shutdown / seconds if seconds else None,
                      "q_share": q_beats / beats if beats else None,
                      "realtime_factor": seconds / wall if wall else None,
                      "nst_snr_db": {"mean": float(np.mean(snrs)), "min": min(snrs), "max": max(snrs)} if snrs else None}
        if on_row is not None:
            on_row(rows)
        log.info("%s: Se %.2f +P %.2f (%.0f s)", spec, 100 * (total.sensitivity or 0),
                 100 * (total.positive_predictivity or 0), time.perf_counter() - started)
    return rows


def robustness_targets(rows: dict) -> list[dict]:
    out = []
    for spec, row in rows.items():
        for key, name in (("se", "Se"), ("ppv", "+P")):
            value = row["detection"][key]
            threshold = 0.997 if spec == "none" else DETECTION_TARGET
            out.append({"target": f"detection {name}, {spec}", "mean": value, "threshold": threshold,
                        "met": None if value is None else value >= threshold})
    return out


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _pct2(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def robustness_markdown(results: dict) -> str:
    from tools.report import targets_table

    head = ("| perturbation | detection Se | detection +P | usable stretches Se / +P (shut down) | N Se / +P | "
            "S Se / +P | V Se / +P | Q-labelled | x real time |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for spec, row in results["rows"].items():
        d, pc = row["detection"], row["classes"]["per_class"]
        cells = [spec, _pct2(d["se"]), _pct2(d["ppv"])]
        u = row.get("detection_usable")  # rows of earlier runs have no such score
        cells.append("–" if u is None else f"{_pct2(u['se'])} / {_pct2(u['ppv'])} ({_pct(row['shutdown_share'])} %)")
        cells += [f"{_pct(pc[c]['se'])} / {_pct(pc[c]['ppv'])}" for c in ("N", "S", "V")]
        cells += [_pct(row["q_share"]) + " %", f"{row['realtime_factor']:,.0f}" if row["realtime_factor"] else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return (f"# pulsewire robustness suite\n\nCommand: `{results['command']}`  \nModel: `{results['model']}`  \n"
            f"Records: {', '.join(results['records'])}\n\n## Targets\n\n{targets_table(results['targets'])}\n\n"
            "## Detection and classes per perturbation (EC57 matching, 150 ms, on the whole record; then left out: "
            "flutter, lead-off gaps and clipped bursts + 1 s, 1 s after a DC step). The targets use the detection "
            "columns, every reported R peak; the usable-stretches column also leaves out the RR intervals of "
            "Q-labelled beats (EC57-style shutdown; share of the signal time in brackets)\n\n" + "\n".join(lines) + "\n"
            + _nst_lines(results["rows"]))


def _nst_lines(rows: dict) -> str:
    snr = {spec: row["nst_snr_db"] for spec, row in rows.items() if row.get("nst_snr_db")}
    if not snr:
        return ""
    cells = [f"{spec} {v['mean']:.1f} dB ({v['min']:.1f} to {v['max']:.1f})" for spec, v in snr.items()]
    return ("\nThe same noises by WFDB nst's SNR definition (mean over records, range): " + "; ".join(cells) + "\n")
