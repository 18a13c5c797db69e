"""The privacy bench's in-process federations on the inter-patient split, and the checkpoint that keeps every
finished run, so that a restarted bench skips what it holds."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from tools.privacy_bench.settings import BenchSettings

log = logging.getLogger(__name__)


class Checkpoint:
    """Finished runs by key, written to disk after each one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[str, Any] = json.loads(path.read_text())["runs"] if path.is_file() else {}
        self.missing: list[str] = []

    def get_or_run(self, key: str, fn: Callable[[], dict], allowed: bool = True) -> dict | None:
        """The stored run, or a new one when ``allowed``; None for a run not (yet) done."""
        if key not in self.runs:
            if not allowed:
                self.missing.append(key)
                return None
            started = time.perf_counter()
            self.runs[key] = {**fn(), "wall_seconds": round(time.perf_counter() - started, 1)}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"runs": self.runs}, indent=1) + "\n")
            tmp.replace(self.path)
            log.info("%s: %s", key, {k: v for k, v in self.runs[key].items() if k != "history"})
        return self.runs[key]


def load_inter(data_dir: Path | None, cache_root: Path) -> Any:
    """The beats of the inter-patient protocol's records (DS1 and DS2), loaded once for every seed."""
    from training.data.feature_sets import load_feature_beats
    from training.data.protocols import protocol_records

    return load_feature_beats(data_dir, protocol_records("inter"), cache_root)


class Simulator:
    """The inter-patient split of ``settings.seed`` (which DS1 patients validate) and in-process federations on
    it, each scored once on DS2."""

    def __init__(self, data: Any, settings: BenchSettings) -> None:
        from training.data.protocols import make_split

        split = make_split("inter", data, settings.seed)
        self.train, self.val, self.test = (data.subset(split.train), data.subset(split.val),
                                           data.subset(split.test))
        self.settings = settings
        self.patients = len(set(self.train.record.tolist()))

    def run(self, strategy: str, args: dict, partition: str = "patient", attack: str | None = None,
            share: float = 0.0, epochs_factor: int = 1) -> dict:
        from training.config import TrainConfig
        from training.federated.local_training import LocalConfig
        from training.federated.simulation import FederatedConfig, run_simulation
        from training.train import evaluate_keras

        s = self.settings
        fed = FederatedConfig(rounds=s.rounds, strategy=strategy, strategy_args=args, partition=partition, seed=s.seed,
                              local=LocalConfig(epochs=s.local_epochs * epochs_factor), attack=attack, attackers=share)
        trained = run_simulation(self.train, self.val, fed, TrainConfig(seed=s.seed), progress=False)
        rep = evaluate_keras(trained.model, self.test, trained.rr_scaler)
        per = rep["per_class"]
        return {"ds2_macro_f1": rep["macro_f1"], "ds2_accuracy": rep["accuracy"], "dp_noise": fed.dp_noise,
                "s_se": per["S"]["se"], "v_se": per["V"]["se"], "best_round": trained.best_epoch,
                "best_val_macro_f1": max(h["val_macro_f1"] for h in trained.history),
                "declined_updates": sum(h.get("declined", 0) for h in trained.history),
                "val_macro_f1_by_round": [round(h["val_macro_f1"], 4) for h in trained.history]}
