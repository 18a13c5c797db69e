"""The tabular task on a device (a hospital's workstation): one CSV record per line -> diagnosis.

The model's contract (``metadata.extra["task"]``, source "tabular") names the 30 features in order and carries
the training side's mean and std (and the feature transform, log(1 + x) or none); a record is transformed and
standardised with them and scored by ``TaskInterpreter``. A line
that is not a record (wrong number of fields, a field that is not a finite number) is logged, counted and
skipped: bad input never stops the run. A first line of feature names is taken as a header.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.task_model import TaskInterpreter

log = logging.getLogger(__name__)


@dataclass
class RecordStats:
    scored: int = 0
    malformed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, line_no: int, reason: str) -> None:
        self.malformed += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        log.warning("line %d: %s; skipped", line_no, reason)


class TabularScorer:
    def __init__(self, model: TaskInterpreter) -> None:
        contract = model.contract
        if contract.source != "tabular":
            raise ValueError(f"model of task {contract.task!r} reads {contract.source!r}, not tabular records")
        self.model, self.features = model, contract.channels
        self.mean = np.asarray(contract.preprocessing["mean"], np.float32)
        self.std = np.asarray(contract.preprocessing["std"], np.float32)
        #: "log1p": log(1 + x) of each raw feature before standardising (models exported before it existed: none)
        self.transform = contract.preprocessing.get("transform", "standard")
        if self.transform not in ("standard", "log1p", "log-offset"):
            raise ValueError(f"model's feature transform {self.transform!r} unknown to this runtime")
        #: the columns of a record the model reads (all when absent) and log-offset's public offsets a
        self.columns = np.asarray(contract.preprocessing.get("columns", range(len(self.features))), np.int64)
        self.offset = np.asarray(contract.preprocessing.get("offset", np.zeros(len(self.columns))), np.float32)
        if self.transform == "log-offset" and "offset" not in contract.preprocessing:
            raise ValueError("model's log-offset transform carries no offsets")
        self.classes = tuple(model.metadata.class_names)
        self.stats = RecordStats()

    def _parse(self, line_no: int, line: str) -> np.ndarray | None:
        fields = [f.strip() for f in line.replace(";", ",").split(",")]
        if len(fields) != len(self.features):
            self.stats.reject(line_no, f"{len(fields)} fields, the model needs {len(self.features)}")
            return None
        try:
            values = [float(f) for f in fields]
        except ValueError:
            self.stats.reject(line_no, "a field is not a number")
            return None
        if not all(math.isfinite(v) for v in values):
            self.stats.reject(line_no, "a field is NaN or infinite")
            return None
        if self.transform != "standard" and min(values) < 0:
            self.stats.reject(line_no, "a field is negative (the model reads log(1 + x) of sizes and counts)")
            return None
        return np.asarray(values, np.float32)

    def _map(self, record: np.ndarray) -> np.ndarray:
        """The contract's fixed per-feature map (the same as training's ``tabular_features.feature_map``)."""
        if self.transform == "log1p":
            return np.log1p(record)
        return np.log(record + self.offset) if self.transform == "log-offset" else record

    def score(self, lines: Iterable[str]) -> Iterator[dict]:
        """One result per valid record: line number, class, class probabilities."""
        for line_no, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#") or (line_no == 1 and line.split(",")[0].strip() == self.features[0]):
                continue
            record = self._parse(line_no, line)
            if record is None:
                continue
            record = self._map(record[self.columns])
            probs = self.model.predict({"features": ((record - self.mean) / self.std)[None, :]})[0]
            self.stats.scored += 1
            yield {"line": line_no, "class": self.classes[int(np.argmax(probs))],
                   **{f"p_{c}": float(p) for c, p in zip(self.classes, probs)}}
