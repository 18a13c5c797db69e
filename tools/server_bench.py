"""`pulsewire server bench`: can the fleet server keep up with a fleet? Alerts lost, latency to the browser, RSS.

A real Mosquitto and the real server (a subprocess, so its RSS is its own) are started; a few paho
clients multiplex N simulated devices, each sending a retained status every ``status_every_s`` and,
fleet-wide, ``alert_rate`` alerts per second. An SSE client logged in as a clinician stands where the
browser would: the latency of an alert is from the moment its device's publish call returns to the
moment its event arrives on /api/events. At the end every alert must have been stored exactly once.
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from broker.device_messages import encode_alert, encode_status
from broker.launcher import MosquittoBroker, free_port, wait_for_port
from broker.topics import FleetTopics

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


class DashboardClient:
    """HTTP as a browser would do it: log in for a session cookie, then call the API or listen to SSE."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.cookie = ""
        self.events: list[tuple[float, str, dict]] = []  # (perf_counter at arrival, kind, data)
        self._stop = threading.Event()
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        h = {"Cookie": self.cookie} if self.cookie else {}
        conn.request(method, path, body=body, headers={**h, **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp, data

    def login(self, name: str, password: str) -> bool:
        form = urllib.parse.urlencode({"name": name, "password": password}).encode()
        resp, _ = self.request("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
        cookie = resp.getheader("Set-Cookie") or ""
        self.cookie = cookie.split(";", 1)[0] if cookie.startswith("pw_session=") else ""
        return bool(self.cookie)

    def get_json(self, path: str) -> dict:
        resp, data = self.request("GET", path)
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}")
        return json.loads(data)

    def listen(self) -> threading.Event:
        """Open /api/events in a thread; the returned event is set once the stream is connected."""
        ready = threading.Event()
        threading.Thread(target=self._listen, args=(ready,), daemon=True, name="sse-client").start()
        return ready

    def _listen(self, ready: threading.Event) -> None:
        self._conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self._conn.request("GET", "/api/events", headers={"Cookie": self.cookie, "Accept": "text/event-stream"})
        resp = self._conn.getresponse()
        kind = None
        while not self._stop.is_set():
            line = resp.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text.startswith(": connected"):
                ready.set()
            elif text.startswith("event: "):
                kind = text[7:]
            elif text.startswith("data: ") and kind:
                self.events.append((time.perf_counter(), kind, json.loads(text[6:])))
                kind = None

    def close(self) -> None:
        self._stop.set()
        if self._conn is not None:
            try:
                self._conn.sock.shutdown(2)
            except (OSError, AttributeError):
                pass


def start_server_process(db: str, broker_url: str, fleet: str, port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "server", "--db", db, "--broker", broker_url,
                             "--fleet", fleet, "--listen", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port, timeout_s=60)
    return proc


def add_users(db: str, password: str) -> None:
    from server.auth import add_user
    from server.repository import Store

    store = Store(db)
    with store.session() as repo:
        for name, role in (("bench-clinician", "clinician"), ("bench-engineer", "engineer")):
            if repo.user(name) is None:
                add_user(repo, name, role, password)
    store.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_bench(devices: int, seconds: float, alert_rate: float, status_every_s: float, clients: int,
              workdir: Path) -> dict:
    fleet, password = "bench", "bench-password-1"
    topics = FleetTopics(fleet)
    broker = MosquittoBroker(state_dir=workdir / "mosquitto")
    broker.start()
    db = str(workdir / "server.db")
    add_users(db, password)
    port = free_port()
    server = start_server_process(db, f"mqtt://127.0.0.1:{broker.port}", fleet, port, workdir / "server.log")
    sse = DashboardClient("127.0.0.1", port)
    pubs: list[mqtt.Client] = []
    try:
        if not sse.login("bench-clinician", password):
            raise RuntimeError("bench could not log in")
        if not sse.listen().wait(30):
            raise RuntimeError("no SSE stream")
        for i in range(clients):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-devices-{i}", protocol=mqtt.MQTTv311)
            c.max_inflight_messages_set(1000)
            c.connect("127.0.0.1", broker.port)
            c.loop_start()
            pubs.append(c)
        names = [f"dev{i:05d}" for i in range(devices)]
        sent: dict[str, float] = {}
        rss: list[float] = []
        # statuses are evenly spread over the period and stay in that cyclic order: one pointer walks them
        status_due = [time.perf_counter() + status_every_s * i / devices for i in range(devices)]
        start = time.perf_counter()
        alert_period = 1.0 / alert_rate if alert_rate > 0 else float("inf")
        next_alert, seq, last_rss, nxt = start, 0, 0.0, 0
        now = start
        while now - start < seconds:
            now = time.perf_counter()
            while status_due[nxt] <= now:
                payload = encode_status(fleet, nxt + 1, {"state": "online", "battery": 80, "link": "wifi",
                                                         "signal_quality": 0.9, "capabilities": ["infer"]})
                pubs[nxt % clients].publish(topics.status(names[nxt]), payload, qos=1, retain=True)
                status_due[nxt] += status_every_s
                nxt = (nxt + 1) % devices
            while next_alert <= now:
                i = seq % devices
                seq += 1
                alert_id = f"{names[i]}-bench-{seq}"
                alert = {"alert_id": alert_id, "device": names[i], "patient": f"pt{i:05d}",
                         "kind": "ventricular_run", "time": dt.datetime.now(dt.timezone.utc).isoformat(),
                         "beat_index": seq, "beats": 3, "class": "V", "confidence_permille": 950,
                         "heart_rate_bpm": 130, "model_version": "bench", "schema": 1}
                pubs[i % clients].publish(topics.alert(names[i]), encode_alert(fleet, i + 1, alert), qos=1)
                sent[alert_id] = time.perf_counter()
                next_alert += alert_period
            if now - last_rss >= 1.0:
                rss.append(rss_mb(server.pid))
                last_rss = now
            time.sleep(0.005)
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            got = {d["alert_id"] for _, k, d in sse.events if k == "alert"}
            if len(got & set(sent)) == len(sent):
                break
            time.sleep(0.5)
        arrival = {}
        for t, k, d in sse.events:
            if k == "alert" and d["alert_id"] in sent:
                arrival.setdefault(d["alert_id"], t)
        latencies = np.array([arrival[a] - sent[a] for a in arrival]) if arrival else np.zeros(0)
        window = 10.0  # where in the run the slow ones were: p99 per 10 s of sending
        by_window: dict[int, list[float]] = {}
        for a in arrival:
            by_window.setdefault(int((sent[a] - start) // window), []).append(arrival[a] - sent[a])
        timeline = [{"from_s": k * window, "alerts": len(v), "p50_s": float(np.percentile(v, 50)),
                     "p99_s": float(np.percentile(v, 99))} for k, v in sorted(by_window.items())]
        engineer = DashboardClient("127.0.0.1", port)
        engineer.login("bench-engineer", password)
        counters = engineer.get_json("/api/counters")
        fleet_view = engineer.get_json("/api/devices")
        rss.append(rss_mb(server.pid))
    finally:
        sse.close()
        for c in pubs:
            c.loop_stop()
            c.disconnect()
        server.terminate()
        server.wait(timeout=30)
        broker.close()
    stored = counters.get("stored.alert", 0)
    lost = len(sent) - len(arrival)
    return {"devices": devices, "seconds": seconds, "alert_rate": alert_rate, "status_every_s": status_every_s,
            "alerts_sent": len(sent), "alerts_on_sse": len(arrival), "alerts_stored": stored,
            "duplicates_stored": counters.get("duplicate.alert", 0), "alerts_lost": lost,
            "latency_s_p50": float(np.percentile(latencies, 50)) if latencies.size else None,
            "latency_s_p99": float(np.percentile(latencies, 99)) if latencies.size else None,
            "latency_s_max": float(latencies.max()) if latencies.size else None,
            "latency_per_10s": timeline, "load_average_1min": os.getloadavg()[0],
            "devices_seen": len(fleet_view["devices"]), "rss_mb_max": max(rss), "rss_mb_end": rss[-1],
            "statuses_stored": counters.get("stored.status", 0), "rejected": {k: v for k, v in counters.items()
                                                                             if k.startswith("rejected.")}}


def targets(r: dict) -> list[dict]:
    p99 = r["latency_s_p99"]
    return [{"target": "alerts lost (SSE and database)", "mean": r["alerts_lost"] + (r["alerts_sent"] - r["alerts_stored"]),
             "threshold": 0, "met": r["alerts_lost"] == 0 and r["alerts_stored"] == r["alerts_sent"]},
            {"target": "p99 publish-to-SSE latency (s)", "mean": p99, "threshold": 1.0,
             "met": p99 is not None and p99 < 1.0},
            {"target": "server RSS max (MB), reported", "mean": r["rss_mb_max"], "threshold": None, "met": True}]


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--alert-rate", type=float, default=20.0, help="alerts per second, fleet-wide")
    p.add_argument("--status-every", type=float, default=10.0, help="seconds between a device's statuses")
    p.add_argument("--clients", type=int, default=8, help="MQTT connections the simulated devices share")
    p.add_argument("--json", help="results file (default: out/server-bench/server.json)")


def run_command(args: argparse.Namespace) -> int:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.devices < 1 or args.seconds <= 0 or args.clients < 1 or args.status_every <= 0:
        print("pulsewire: error: --devices, --clients >= 1; --seconds, --status-every > 0", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pulsewire-server-bench-") as tmp:
        r = run_bench(args.devices, args.seconds, args.alert_rate, args.status_every, args.clients, Path(tmp))
    results = {"command": " ".join(["pulsewire"] + sys.argv[1:]), "results": r, "targets": targets(r)}
    path = Path(args.json) if args.json else Path("out/server-bench/server.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    for t in results["targets"]:
        print(f"{t['target']}: {t['mean']} (threshold {t['threshold']}) {'met' if t['met'] else 'NOT met'}")
    print(f"results: {path}")
    return 0
