"""Rounds of the real aggregator with the simulator's light devices: the fleet folder it needs, the
`pulsewire aggregate` process, and one row per round as the aggregator writes it (``RUN_DIR/rounds.json``)
with what the simulator saw of that round and the CPU and memory of every process during it.

The aggregator is the deployed service, started as a user starts it (``pulsewire aggregate --fleet-config
DIR``): the folder holds ``fleet.toml`` (the fleet's name, the broker, every simulated device's name and wire
id), the aggregator's Ed25519 signing key and each device's public key (``public/devices/NAME.pub``, derived
from the fleet's seed by ``round_member.device_key``), so global models go out signed and only updates
signed by their device are accepted. Without ``--model`` the global model is a seeded classifier head
(32 x 5 + 5, the beat classifier's) given as ``--init``; with an exported int8 ``.tflite`` the aggregator
federates that model's head, as with devices that run `edge run --join`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.fleet_config import FleetSettings
from tools.fleet_sim.config import FleetSimConfig
from tools.fleet_sim.device import SimDevice
from tools.fleet_sim.monitor import cpu_seconds, memory_kib
from tools.fleet_sim.round_member import device_key

ROOT = Path(__file__).resolve().parents[2]
HEAD_SHAPES = ((32, 5), (5,))


@dataclass(frozen=True)
class AggregatorSettings:
    """What `pulsewire aggregate` is started with (its flags of the same names)."""

    rounds: int
    selection: str = "power-aware:fraction=0.1"
    deadline_s: float = 60.0
    quorum: float = 0.5
    strategy: str = "fedavg"
    encoding: str = "int8"
    model: str | None = None
    run_dir: str | None = None

    def __post_init__(self) -> None:
        from training.federated.aggregator_config import RoundPolicy

        if self.rounds < 1:
            raise ValueError("--rounds must be at least 1")
        RoundPolicy(selection=self.selection, quorum=self.quorum, deadline_s=self.deadline_s)  # its own checks
        if self.model and not Path(self.model).is_file():
            raise ValueError(f"--model {self.model}: no such file (an exported int8 .tflite with its .json)")

    @property
    def allowance_s(self) -> float:
        """The longest the rounds may take: start-up plus two deadlines a round (one more without a quorum)."""
        return 120.0 + 2 * self.deadline_s * self.rounds


def write_fleet_folder(folder: Path, cfg: FleetSimConfig) -> bytes:
    """fleet.toml, the aggregator's signing key and every device's public key; returns the aggregator's raw
    public key (the devices check global models with it)."""
    devices = [SimDevice.create(cfg.first_device + i, cfg.seed, 0.0) for i in range(cfg.devices)]
    FleetSettings(folder, cfg.fleet, cfg.broker_url, devices={d.name: d.device_id for d in devices}).save()
    pem = serialization.PublicFormat.SubjectPublicKeyInfo
    public = folder / "public" / "devices"
    public.mkdir(parents=True, exist_ok=True)
    for d in devices:
        key = device_key(cfg.seed, d.index).public_key()
        (public / f"{d.name}.pub").write_bytes(key.public_bytes(serialization.Encoding.PEM, pem))
    signing = Ed25519PrivateKey.generate()
    (folder / "aggregator").mkdir(exist_ok=True)
    (folder / "aggregator" / "signing.key").write_bytes(signing.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    head = np.random.default_rng([cfg.seed, 3])
    np.savez(folder / "head.npz", *[head.normal(0, 0.3, s).astype(np.float32) if len(s) > 1 else
                                    np.zeros(s, np.float32) for s in HEAD_SHAPES])
    return signing.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class AggregatorRounds:
    """The aggregator process of one simulated fleet and its rounds as they close."""

    def __init__(self, settings: AggregatorSettings, cfg: FleetSimConfig) -> None:
        self.settings, self.cfg = settings, cfg
        self.folder = Path(settings.run_dir or tempfile.mkdtemp(prefix="pulsewire-fleet-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run_dir = self.folder / "run"
        self.public_key = write_fleet_folder(self.folder, cfg)
        self.proc: subprocess.Popen | None = None
        self.rows: list[dict] = []
        self.pids: dict[str, int] = {}
        self._mark: tuple[float, dict[str, float | None]] | None = None
        self._mtime = 0.0

    def command(self) -> list[str]:
        s = self.settings
        start = ["--model", s.model] if s.model else ["--init", str(self.folder / "head.npz")]
        return [sys.executable, "-m", "tools.cli", "aggregate", "--fleet-config", str(self.folder),
                "--broker", self.cfg.broker_url, "--run-dir", str(self.run_dir), "--rounds", str(s.rounds),
                "--selection", s.selection, "--deadline", str(s.deadline_s), "--quorum", str(s.quorum),
                "--strategy", s.strategy, "--encoding", s.encoding, "--seed", str(self.cfg.seed), *start]

    def start(self, pids: dict[str, int]) -> int:
        """Start the aggregator (its log: ``aggregator.log`` in the folder); ``pids``: the processes whose
        CPU and memory each round reports. Returns the aggregator's pid."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        log = open(self.folder / "aggregator.log", "w")
        self.proc = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        self.pids = {**pids, "aggregator": self.proc.pid}
        self._mark = (time.monotonic(), {n: cpu_seconds(p) for n, p in self.pids.items()})
        return self.proc.pid

    @property
    def finished(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def poll(self) -> list[dict]:
        """Rounds closed since the last call, each with the CPU (% of one core) and RSS of every process
        since the previous round closed."""
        path = self.run_dir / "rounds.json"
        try:
            mtime = path.stat().st_mtime
            if mtime == self._mtime:
                return []
            history = json.loads(path.read_text())
        except (OSError, ValueError):  # not written yet, or caught mid-write: next time
            return []
        self._mtime = mtime
        new = history[len(self.rows):]
        if new:
            now, cpu = time.monotonic(), {n: cpu_seconds(p) for n, p in self.pids.items()}
            t0, cpu0 = self._mark
            usage = {n: {"cpu_percent_of_one_core": None if cpu[n] is None or cpu0.get(n) is None
                         else round(100 * (cpu[n] - cpu0[n]) / max(now - t0, 1e-9), 1),
                         "rss_mib": round(mem["VmRSS"] / 1024, 1) if (mem := memory_kib(p)) else None}
                     for n, p in self.pids.items()}
            self._mark = (now, cpu)
            for row in new:
                self.rows.append({**_row(row), "resources": usage})
        return new and self.rows[-len(new):]

    def stop(self) -> dict:
        """Wait for (or end) the aggregator; its exit code and the summary line it printed."""
        if self.proc is None:
            return {"started": False}
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.poll()
        lines = (self.folder / "aggregator.log").read_text().splitlines()
        summary = next((json.loads(x) for x in reversed(lines) if x.startswith("{")), None)
        return {"started": True, "exit_code": self.proc.returncode, "summary": summary,
                "log": str(self.folder / "aggregator.log"), "run_dir": str(self.run_dir)}


def _row(row: dict) -> dict:
    """The aggregator's row, the fields the simulator reports."""
    return {"round": row["round"], "selected": row["selected"], "accepted": row["participants"],
            "declined": row["declined"], "closed_by": row["closed_by"], "seconds": round(row["seconds"], 2),
            "rejected": row["rejected"], "bytes_received": row["bytes_received"], "model_bytes": row["model_bytes"],
            "fairness": row["fairness"]}


def with_device_counts(rows: list[dict], finals: dict[int, dict]) -> list[dict]:
    """Each round's row with what the devices did: updates the broker acknowledged, devices that left instead
    of answering (dropout), declined; ``missed``: selected devices that never answered (away when the round
    opened, or back too late)."""
    out = []
    for row in rows:
        key = str(row["round"])
        sent = sum(f["updates_acked"].get(key, 0) for f in finals.values())
        dropped = sum(f["dropped"].get(key, 0) for f in finals.values())
        declined = sum(f["declined"].get(key, 0) for f in finals.values())
        out.append({**row, "updates_sent": sent, "dropped": dropped, "declined_by_devices": declined,
                    "missed": row["selected"] - sent - dropped - declined})
    return out
