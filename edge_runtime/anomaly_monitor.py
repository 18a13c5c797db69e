"""The anomaly autoencoder on the device: each usable beat's window is reconstructed by the (int8) model, scored
with the contract's constants and compared with its threshold; a stretch of anomalous beats raises one
"anomaly" alert through the existing alert path, and the counts go into the device status.

``AnomalyModel`` runs the .tflite (float32 or int8, batch 1 as on the device); ``AnomalyAlerts`` is an alert
builder (what ``AlertPublisher`` takes as ``builder``) that adds anomaly alerts to the rhythm alerts and
summaries of the wrapped ``AlertBuilder``; ``AnomalySink`` is a plain ``BeatSink`` for runs without a broker.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.alerts import AlertBuilder
from edge_runtime.anomaly_score import AnomalyScoring
from edge_runtime.interpreter import make_interpreter
from edge_runtime.model_metadata import ModelMetadata, metadata_path_for
from edge_runtime.runtime import BeatResult
from edge_runtime.task_contract import EdgeContract

log = logging.getLogger(__name__)
ALERT_KIND = "anomaly"


class AnomalyModelError(ValueError):
    """The model or its metadata cannot serve as the anomaly detector; the message says what to re-export."""


class AnomalyModel:
    """The autoencoder as the device runs it: inputs are the beat stream's window and unscaled RR features."""

    def __init__(self, model_content: bytes, metadata: ModelMetadata) -> None:
        if metadata.model_sha256 and hashlib.sha256(model_content).hexdigest() != metadata.model_sha256:
            raise AnomalyModelError("model hash differs from its metadata's: the sidecar belongs to another model")
        raw = metadata.extra.get("task")
        if not isinstance(raw, dict):
            raise AnomalyModelError("model metadata has no task contract; export it with `--task anomaly`")
        self.contract = EdgeContract.from_dict(raw)
        if self.contract.task != "anomaly":
            raise AnomalyModelError(f"model was exported for task {self.contract.task!r}, not 'anomaly'")
        self.scoring = AnomalyScoring.from_dict(self.contract.preprocessing)
        if self.scoring.threshold is None:
            raise AnomalyModelError("model has no anomaly threshold: calibrate the task on validation persons "
                                    "before exporting")
        self.metadata = metadata
        self._interp = make_interpreter(model_content)
        by_width = {int(d["shape"][-1]): d for d in self._interp.get_input_details()}
        n_rr = self.scoring.width - self.scoring.window
        if set(by_width) != {self.scoring.window, n_rr}:
            raise AnomalyModelError(f"expected inputs of widths {self.scoring.window} (window) and {n_rr} (RR), "
                                    f"got {sorted(by_width)}")
        out = self._interp.get_output_details()
        if len(out) != 1 or int(out[0]["shape"][-1]) != self.scoring.width:
            raise AnomalyModelError(f"expected one output of width {self.scoring.width}")
        self._wave, self._rr, self._out = by_width[self.scoring.window], by_width[n_rr], out[0]

    @classmethod
    def from_file(cls, model_path: Path, metadata_path: Path | None = None) -> "AnomalyModel":
        meta = ModelMetadata.load(metadata_path or metadata_path_for(Path(model_path)))
        return cls(Path(model_path).read_bytes(), meta)

    @property
    def threshold(self) -> float:
        assert self.scoring.threshold is not None  # checked in __init__
        return self.scoring.threshold

    def quantized_inputs(self, waves: np.ndarray, rr_scaled: np.ndarray) -> dict[int, np.ndarray]:
        """The tensors fed to the interpreter (int8 for int8 models), by tensor index, one row per beat with the
        interpreter's batch-1 shape: golden inputs for the generated C."""
        return {d["index"]: _to_tensor(np.asarray(x, np.float32), d)[:, None, :]
                for d, x in ((self._wave, waves), (self._rr, rr_scaled))}

    def reconstruct(self, waves: np.ndarray, rr_scaled: np.ndarray) -> np.ndarray:
        """The model's (dequantized) reconstruction of scaled inputs, one beat at a time."""
        out = np.empty((len(waves), self.scoring.width), np.float32)
        for i in range(len(waves)):
            self._interp.set_tensor(self._wave["index"], _to_tensor(waves[i][None, :], self._wave))
            self._interp.set_tensor(self._rr["index"], _to_tensor(rr_scaled[i][None, :], self._rr))
            self._interp.invoke()
            out[i] = _from_tensor(self._interp.get_tensor(self._out["index"])[0], self._out)
        return out

    def scores(self, waves: np.ndarray, rr: np.ndarray) -> np.ndarray:
        """Anomaly scores of beats given as the beat stream gives them (``ValueError`` on NaN or wrong shapes)."""
        w, r = self.scoring.inputs(waves, rr)
        return self.scoring.scores(w, r, self.reconstruct(w, r))


def _to_tensor(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _from_tensor(q: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]) == np.float32:
        return q.astype(np.float32)
    scale, zero = detail["quantization"]
    return (q.astype(np.float32) - zero) * scale


class AnomalyCounter:
    """Scores usable beats and tracks stretches of anomalous ones; ``run_length`` consecutive anomalous beats
    complete one event (its continuation does not raise another). Beats it cannot score are counted, logged
    and skipped, never raised."""

    def __init__(self, model: AnomalyModel, run_length: int = 2) -> None:
        if run_length < 1:
            raise ValueError(f"run_length must be >= 1, got {run_length}")
        self.model, self.run_length = model, run_length
        self.scored = self.anomalous = self.events = self.rejected = 0
        self.last_score: float | None = None
        self._run: list[BeatResult] = []

    def on_beat(self, beat: BeatResult) -> list[BeatResult] | None:
        """The beats of a stretch this beat completes, else None."""
        if not beat.usable or beat.wave is None or beat.rr is None:
            self._run = []
            return None
        try:
            score = float(self.model.scores(beat.wave[None, :], np.asarray(beat.rr)[None, :])[0])
        except ValueError as exc:
            self.rejected += 1
            self._run = []
            log.warning("beat at sample %d not scored: %s", beat.sample, exc)
            return None
        self.scored += 1
        self.last_score = score
        if score <= self.model.threshold:
            self._run = []
            return None
        self.anomalous += 1
        self._run.append(beat)
        if len(self._run) == self.run_length:
            self.events += 1
            return list(self._run)
        return None

    def status(self) -> dict[str, Any]:
        return {"anomaly_beats": self.anomalous, "anomaly_events": self.events, "anomaly_scored": self.scored,
                "anomaly_rejected": self.rejected, "anomaly_threshold": round(self.model.threshold, 6)}


class AnomalyAlerts:
    """An alert builder for ``AlertPublisher(builder=...)``: the wrapped builder's alerts plus one "anomaly"
    alert per stretch; ``status`` (e.g. the publisher's ``extra_status``) receives the counts after each beat."""

    def __init__(self, inner: AlertBuilder, counter: AnomalyCounter, status: dict | None = None) -> None:
        self.inner, self.counter = inner, counter
        self.patient = inner.patient
        #: Updated with the counter's status after every beat (give it ``AlertPublisher.extra_status``).
        self.status_out = status

    def on_beat(self, beat: BeatResult) -> list[dict]:
        alerts = self.inner.on_beat(beat)
        run = self.counter.on_beat(beat)
        if run is not None:
            alerts.append(self.inner.event(ALERT_KIND, run, beat.label))
        if self.status_out is not None:
            self.status_out.update(self.counter.status())
        return alerts

    def flush(self) -> list[dict]:
        return self.inner.flush()


class AnomalySink:
    """A ``BeatSink`` keeping the alerts ``AnomalyAlerts`` builds (runs without a broker, tests, benches)."""

    def __init__(self, alerts: AnomalyAlerts) -> None:
        self.builder = alerts
        self.alerts: list[dict] = []

    def on_beat(self, beat: BeatResult) -> None:
        self.alerts.extend(self.builder.on_beat(beat))

    def close(self) -> None:
        self.alerts.extend(self.builder.flush())
