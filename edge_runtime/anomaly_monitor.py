"""The anomaly autoencoder on the device: each usable beat's window is reconstructed by the (int8) model, scored
with the contract's constants and compared with its threshold; a stretch of anomalous beats raises one
"anomaly" alert through the existing alert path, and the counts go into the device status.

``AnomalyModel`` runs the .tflite (float32 or int8, batch 1 as on the device, through ``TaskInterpreter``); ``AnomalyAlerts`` is an alert
builder (what ``AlertPublisher`` takes as ``builder``) that adds anomaly alerts to the rhythm alerts and
summaries of the wrapped ``AlertBuilder``; ``AnomalySink`` is a plain ``BeatSink`` for runs without a broker.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.alerts import AlertBuilder
from edge_runtime.anomaly_score import AnomalyScoring
from edge_runtime.runtime import BeatResult
from edge_runtime.task_model import TaskInterpreter

log = logging.getLogger(__name__)
ALERT_KIND = "anomaly"


class AnomalyModelError(ValueError):
    """The model or its metadata cannot serve as the anomaly detector; the message says what to re-export."""


class AnomalyModel:
    """The autoencoder as the device runs it (``TaskInterpreter``: float32 or int8, batch 1) with the score
    constants of its contract; inputs are the beat stream's window and unscaled RR features."""

    def __init__(self, interpreter: TaskInterpreter) -> None:
        contract = interpreter.contract
        if contract.task != "anomaly":
            raise AnomalyModelError(f"model was exported for task {contract.task!r}, not 'anomaly'")
        self.scoring = AnomalyScoring.from_dict(contract.preprocessing)
        if self.scoring.threshold is None:
            raise AnomalyModelError("model has no anomaly threshold: calibrate the task on validation persons "
                                    "(AnomalyTask.calibrate) before exporting")
        if set(interpreter.input_names) != {"wave", "rr"}:
            raise AnomalyModelError(f"expected inputs 'wave' and 'rr', got {interpreter.input_names}")
        self.interpreter, self.contract = interpreter, contract

    @classmethod
    def from_file(cls, model_path: Path) -> "AnomalyModel":
        return cls(TaskInterpreter.from_file(Path(model_path)))

    @property
    def threshold(self) -> float:
        assert self.scoring.threshold is not None  # checked in __init__
        return self.scoring.threshold

    def reconstruct(self, waves: np.ndarray, rr_scaled: np.ndarray) -> np.ndarray:
        """The model's (dequantized) reconstruction of scaled inputs, one beat at a time."""
        return self.interpreter.predict({"wave": waves, "rr": rr_scaled})

    def scores(self, waves: np.ndarray, rr: np.ndarray) -> np.ndarray:
        """Anomaly scores of beats given as the beat stream gives them (``ValueError`` on NaN or wrong shapes)."""
        w, r = self.scoring.inputs(waves, rr)
        return self.scoring.scores(w, r, self.reconstruct(w, r))


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
