"""What the simulator measures from outside the devices: a subscriber that counts what the broker delivers
(alerts by id, statuses, updates per round) and /proc readings of the workers' and the broker's CPU and
memory (Linux; a remote broker's memory is not visible and is reported as None)."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path

from broker.device_messages import decode_alert
from broker.mqtt_link import Message, MqttLink
from broker.topics import FleetTopics, parse_topic
from broker.wire import WireError

log = logging.getLogger(__name__)
_TICKS = os.sysconf("SC_CLK_TCK")


class FleetMonitor:
    """A QoS 1 subscriber to the fleet's alerts, statuses and updates. Malformed messages are counted by
    reason, never raised: a monitor must survive what it monitors."""

    def __init__(self, broker_url: str, fleet: str) -> None:
        topics = FleetTopics(fleet)
        self.fleet = fleet
        self.alert_ids: set[str] = set()
        self.received: Counter = Counter()  # kind -> messages
        self.bytes: Counter = Counter()
        self.updates_per_round: Counter = Counter()
        self.rejected: Counter = Counter()  # reason -> messages
        self.duplicates = 0
        self._lock = threading.Lock()
        self.link = MqttLink(broker_url, f"pw-{fleet}-monitor-{os.getpid()}",
                             [topics.all_alerts(), topics.all_statuses(), topics.all_updates()], self._on_message,
                             clean_session=True,  # no session left behind on a long-lived broker
                             keepalive_s=120)  # a starved coordinator must not be dropped (as the devices)

    def start(self) -> None:
        self.link.start()

    def stop(self) -> None:
        self.link.stop()

    def counts(self) -> tuple[dict, int]:
        with self._lock:
            return dict(self.received), len(self.alert_ids)

    def _on_message(self, m: Message) -> None:
        try:
            match = parse_topic(m.topic)
        except ValueError:
            with self._lock:
                self.rejected["bad_topic"] += 1
            return
        with self._lock:
            self.received[match.kind] += 1
            self.bytes[match.kind] += len(m.payload)
            if match.kind == "update":
                self.updates_per_round[match.round] += 1
        if match.kind != "alert":
            return
        try:
            _, alert = decode_alert(m.payload)
        except WireError as exc:
            log.warning("monitor: undecodable alert on %s: %s", m.topic, exc)
            with self._lock:
                self.rejected[exc.reason] += 1
            return
        with self._lock:
            if alert["alert_id"] in self.alert_ids:
                self.duplicates += 1  # QoS 1 is at-least-once; duplicates are not losses
            self.alert_ids.add(alert["alert_id"])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (fields 14 and 15 of /proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def memory_kib(pid: int) -> dict[str, int] | None:
    """VmRSS (now) and VmHWM (peak) of a live process, in KiB."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out or None


def listening_pid(port: int) -> int | None:
    """The local process listening on TCP ``port`` (the broker), found through its socket inode; None when
    the broker is remote or belongs to a user whose /proc entries we cannot read."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(cols[9])
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


class ProcessSampler:
    """CPU and memory of a set of processes sampled over a run: CPU as a share of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.t0 = {name: self.started for name in pids}
        self.peak_rss: dict[str, int] = {}
        self.last_cpu: dict[str, float] = {}
        self.last_t = self.started

    def add(self, name: str, pid: int) -> None:
        """A process started during the run (the aggregator): its CPU counts from now."""
        self.pids[name] = pid
        self.cpu0[name], self.t0[name] = cpu_seconds(pid), time.monotonic()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            mem, cpu = memory_kib(pid), cpu_seconds(pid)
            if mem:
                self.peak_rss[name] = max(self.peak_rss.get(name, 0), mem["VmRSS"])
            if cpu is not None:
                self.last_cpu[name] = cpu
        self.last_t = time.monotonic()

    def summary(self) -> dict[str, dict]:
        out = {}
        for name in self.pids:
            wall = max(self.last_t - self.t0[name], 1e-9)
            c0, c1 = self.cpu0.get(name), self.last_cpu.get(name)
            out[name] = {"cpu_percent_of_one_core": None if c0 is None or c1 is None else round(100 * (c1 - c0) / wall, 1),
                         "peak_rss_mib": round(self.peak_rss[name] / 1024, 1) if name in self.peak_rss else None}
        return out
