"""The aggregator's files in its run directory: the checkpoint, each round's plan and each round's update log.

Why a constant-size checkpoint: it is rewritten when a round opens and when it closes, so it must not
carry anything that grows with the fleet. It holds the round engine's and the strategy's state; the round's
selection is written once into ``updates/round{R}.plan.json`` (the round plan's size), the round's accepted
updates are in ``updates/round{R}.log`` (``update_log``), and the engine's recently accepted (round, device)
pairs, which refuse late duplicates, are rebuilt from the logs kept for ``max_staleness`` + 1 rounds. The
per-device state of the selection policies (the device book) and FedBuff's devices still training go to
``devices.json``, written beside the checkpoint at the same moments: it grows with the fleet, not with the
updates, and the checkpoint stays the same size.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from training.federated import checkpoint
from training.federated.selection import FairnessReport
from training.federated.update_log import LogPolicy, UpdateLog, scan

CHECKPOINT_FILE = "aggregator.npz"
#: Where the rounds' logs and plans are: ``updates/round{R}.log``, ``updates/round{R}.plan.json``.
LOG_DIR = "updates"
#: The engine's per-device state, kept out of the checkpoint (see the module docstring).
DEVICE_STATE_FILE = "devices.json"
_DEVICE_KEYS = ("devices", "in_flight")


class RoundFiles:
    def __init__(self, run_dir: Path, fleet: str, strategy: str, max_staleness: int,
                 policy: LogPolicy | None = None) -> None:
        self.run_dir, self.fleet, self.strategy = Path(run_dir), fleet, strategy
        self.max_staleness, self.policy = max_staleness, policy or LogPolicy()

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def log_path(self, round_: int) -> Path:
        return self.run_dir / LOG_DIR / f"round{round_}.log"

    def plan_path(self, round_: int) -> Path:
        return self.run_dir / LOG_DIR / f"round{round_}.plan.json"

    def save(self, engine_manifest: dict[str, Any], state_keys: list[str], arrays: dict[str, Any]) -> None:
        """The checkpoint (``engine_manifest``: ``RoundEngine.manifest()``), without the device lists."""
        state = dict(engine_manifest)
        selected = state.pop("selected")
        state.pop("recent")
        state["selected_count"] = len(selected)
        checkpoint.save_json(self.run_dir / DEVICE_STATE_FILE, {k: state.pop(k) for k in _DEVICE_KEYS if k in state})
        plan = self.plan_path(state["round"])
        if selected and not plan.exists():
            checkpoint.save_json(plan, {"round": state["round"], "selected": selected})
        checkpoint.save(self.checkpoint_path, {"fleet": self.fleet, "strategy": self.strategy, **state,
                                               "state_keys": state_keys}, arrays)

    def open_log(self, round_: int) -> UpdateLog:
        """``round_``'s log (reopened if it exists); the logs and plans of rounds no longer needed are deleted."""
        keep = {self.log_path(r) for r in range(max(1, round_ - 1 - self.max_staleness), round_ + 1)}
        keep.add(self.plan_path(round_))
        for old in (self.run_dir / LOG_DIR).glob("round*"):
            if old not in keep:
                old.unlink(missing_ok=True)
        return UpdateLog(self.log_path(round_), self.policy)

    def load(self) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]] | None:
        """The engine's manifest (selection and recent pairs filled in) and arrays; None without a checkpoint."""
        if not self.checkpoint_path.exists():
            return None
        manifest, arrays = checkpoint.load(self.checkpoint_path)
        if (manifest["fleet"], manifest["strategy"]) != (self.fleet, self.strategy):
            raise checkpoint.CheckpointError(
                f"{self.checkpoint_path} belongs to fleet {manifest['fleet']!r} with {manifest['strategy']}, not "
                f"{self.fleet!r} with {self.strategy}; use another run directory or delete it")
        current, oldest = manifest["round"], manifest["round"] - 1 - self.max_staleness
        plan = self.plan_path(current)
        selected = checkpoint.load_json(plan)["selected"] if manifest["selected_count"] and plan.exists() else []
        recent = sorted({(rec.round, rec.device) for r in range(max(1, oldest), current)
                         if self.log_path(r).exists() for rec in scan(self.log_path(r)) if rec.round >= oldest})
        device_state = self.run_dir / DEVICE_STATE_FILE
        devices = checkpoint.load_json(device_state) if device_state.exists() else {}
        return {**manifest, **devices, "selected": selected, "recent": recent}, arrays

    def write_metrics(self, history: list[dict], fairness: FairnessReport) -> None:
        """The run's rows so far (``rounds.json``, and ``rounds.csv`` with its scalar columns) and how often each
        device was chosen (``selection.json``; the rows carry its summary)."""
        (self.run_dir / "rounds.json").write_text(json.dumps(history, indent=1) + "\n")
        (self.run_dir / "selection.json").write_text(json.dumps({**fairness.summary(), "rounds": fairness.rounds,
                                                                 "counts": fairness.counts}, indent=1) + "\n")
        scalar = [k for k in history[0] if not isinstance(history[0][k], dict)]
        with open(self.run_dir / "rounds.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(scalar + ["rejected"])
            for row in history:
                writer.writerow([row.get(k) for k in scalar] + [json.dumps(row["rejected"], sort_keys=True)])
