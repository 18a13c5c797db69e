"""`pulsewire server ...` from the command line, the static snapshot, and the server's import boundary."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from dataclasses import dataclass

from server.repository import Store
from tests.conftest import ROOT
from tools.cli import main


@dataclass
class _Result:
    returncode: int
    stdout: str
    stderr: str


def _run(*args) -> _Result:
    """``pulsewire server ARGS`` in this process (an interpreter start per call would cost seconds each)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["server", *args])
        except SystemExit as exc:  # argparse: --help, or a usage error
            code = exc.code
    return _Result(code, out.getvalue(), err.getvalue())


def test_user_add_from_a_password_file_and_its_errors(tmp_path):
    db = str(tmp_path / "s.db")
    (tmp_path / "pw").write_text("a long password\n")
    (tmp_path / "short").write_text("short\n")
    ok = _run("user", "add", "clara", "--role", "clinician", "--password-file", str(tmp_path / "pw"), "--db", db)
    assert ok.returncode == 0, ok.stderr
    again = _run("user", "add", "clara", "--role", "clinician", "--password-file", str(tmp_path / "pw"), "--db", db)
    short = _run("user", "add", "bob", "--role", "engineer", "--password-file", str(tmp_path / "short"), "--db", db)
    missing = _run("user", "add", "bob", "--role", "engineer", "--password-file", str(tmp_path / "nope"), "--db", db)
    role = _run("user", "add", "bob", "--role", "admin", "--db", db)
    assert (again.returncode, short.returncode, missing.returncode, role.returncode) == (2, 2, 2, 2)
    assert "exists already" in again.stderr and "8 characters" in short.stderr and "Traceback" not in short.stderr
    store = Store(db)
    with store.session() as repo:
        assert repo.user("clara").role == "clinician" and repo.user("bob") is None
    store.close()


def test_server_needs_a_fleet_and_a_valid_listen_address(tmp_path):
    res = _run("--db", str(tmp_path / "s.db"))
    assert res.returncode == 2 and "--fleet" in res.stderr
    res = _run("--db", str(tmp_path / "s.db"), "--fleet", "ward", "--listen", "nowhere")
    assert res.returncode == 2 and "HOST:PORT" in res.stderr
    for sub in ([], ["user", "add"], ["snapshot"], ["bench"], ["consent"]):
        assert _run(*sub, "--help").returncode == 0


def test_snapshot_renders_every_page_escaped_with_local_assets(tmp_path):
    db = str(tmp_path / "s.db")
    store = Store(db)
    hostile = "<script>alert(1)</script>"
    with store.session() as repo:
        repo.record_alert("ward", {"alert_id": "a-1", "device": "d1", "patient": hostile, "kind": "ventricular_run",
                                   "time": "t", "beat_index": 1, "beats": 3, "class": "V", "confidence_permille": 9,
                                   "heart_rate_bpm": 99, "model_version": "m", "schema": 1,
                                   "strip": {"fs_hz": 360, "gain": 1000, "start": 0, "samples": [0, 5, 900, 3],
                                             "beats": [[2, "V"]]}}, registered=False)
        repo.record_status("ward", "d1", 1, {"state": "online", "link": hostile}, registered=False)
        repo.record_round_event({"schema": 1, "event": "closed", "fleet": "ward", "round": 1, "strategy": "fedavg",
                                 "participants": 2, "declined": 0, "bytes_received": 10, "seconds": 1.0,
                                 "metrics": {"val_macro_f1": 0.5}})
    store.close()
    res = _run("snapshot", "--db", db, "--out", str(tmp_path / "snap"))
    assert res.returncode == 0, res.stderr
    pages = {p.name: p.read_text() for p in (tmp_path / "snap").glob("*.html")}
    assert {"index.html", "alerts.html", "fleet.html", "rounds.html", "privacy.html", "security.html",
            "models.html", "patients.html", "audit.html", "device-d1.html"} <= set(pages)
    for name, html in pages.items():
        assert "<script>alert(1)" not in html, name  # escaped in tables, \\u003c in the embedded JSON
        assert "http://" not in html and "https://" not in html, name  # no CDN, nothing remote
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["fleet.html"]
    assert (tmp_path / "snap" / "assets" / "plotly.min.js").stat().st_size > 1_000_000
    assert _run("snapshot", "--db", str(tmp_path / "missing.db"), "--out", str(tmp_path / "x")).returncode == 2


def test_the_server_imports_neither_training_nor_tools_nor_tensorflow():
    modules = [p.stem for p in (ROOT / "server").glob("*.py") if p.stem != "__init__"]
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module('server.' + m)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('training', 'tools', 'tensorflow', 'keras')]\n"
            "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
