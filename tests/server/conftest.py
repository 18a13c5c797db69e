"""Fixtures of the fleet-server tests: a real PostgreSQL, the server in-process on a free port, Chromium.

PostgreSQL (Debian's 15) runs from a private folder on a free loopback port; as root it runs as the
``postgres`` user. Mosquitto comes from the session fixture of tests/conftest.py.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.launcher import free_port, wait_for_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "correct horse battery"


def _as_postgres(cmd: str) -> list[str]:
    return ["su", "postgres", "-c", cmd] if os.geteuid() == 0 else ["bash", "-c", cmd]


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL cluster for the session; its URL (database ``pulsewire``, user ``pw``)."""
    if not (PG_BIN / "initdb").is_file():
        pytest.fail("PostgreSQL 15 is not installed (apt-get install postgresql; make setup does it)")
    folder = Path(tempfile.mkdtemp(prefix="pulsewire-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    port = free_port()
    subprocess.run(_as_postgres(f"{PG_BIN}/initdb -D {folder}/data -A trust -U pw"), check=True,
                   capture_output=True, timeout=120)
    subprocess.run(_as_postgres(f"{PG_BIN}/pg_ctl -D {folder}/data -l {folder}/log -o "
                                f"'-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off' -w start"),
                   check=True, capture_output=True, timeout=120)
    try:
        wait_for_port("127.0.0.1", port, 30)
        subprocess.run(_as_postgres(f"{PG_BIN}/createdb -h 127.0.0.1 -p {port} -U pw pulsewire"),
                       check=True, capture_output=True, timeout=60)
        yield f"postgresql+psycopg://pw@127.0.0.1:{port}/pulsewire"
    finally:
        subprocess.run(_as_postgres(f"{PG_BIN}/pg_ctl -D {folder}/data -m fast stop"), capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each store test runs on a SQLite file and on the real PostgreSQL (a fresh schema each time)."""
    if request.param == "sqlite":
        yield str(tmp_path / "server.db")
        return
    base = request.getfixturevalue("postgres_url")
    name = f"t{os.getpid()}_{time.monotonic_ns()}"
    import sqlalchemy

    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield base.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class RunningServer:
    server: object  # server.app_runner.FleetServer
    url: str
    host: str
    port: int
    broker_url: str
    fleet: str

    @property
    def store(self):
        return self.server.store


def start_server(db: str, broker_url: str, fleet: str, **kwargs) -> tuple[RunningServer, callable]:
    """The real FleetServer (ingest + uvicorn) in a thread of this process; returns it and its stop function."""
    import uvicorn

    from server.app_runner import FleetServer, ServerConfig
    from server.auth import add_user

    port = free_port()
    fs = FleetServer(ServerConfig(db, broker_url, fleet, "127.0.0.1", port, **kwargs))
    with fs.store.session() as repo:
        add_user(repo, "clara", "clinician", PASSWORD)
        add_user(repo, "ed", "engineer", PASSWORD)
    fs.ingest.start()
    web = uvicorn.Server(uvicorn.Config(fs.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True, name="uvicorn")
    thread.start()
    wait_for_port("127.0.0.1", port, 30)

    def stop() -> None:
        web.should_exit = True
        thread.join(timeout=10)
        fs.ingest.stop()
        fs.store.close()

    return RunningServer(fs, f"http://127.0.0.1:{port}", "127.0.0.1", port, broker_url, fleet), stop


@pytest.fixture
def running_server(mosquitto, tmp_path):
    from broker.launcher import broker_url

    fleet = f"ward{time.monotonic_ns() % 10**8}"
    rs, stop = start_server(str(tmp_path / "server.db"), broker_url(mosquitto), fleet)
    yield rs
    stop()


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """Headless Debian Chromium driven by selenium (chromium-driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not Path("/usr/bin/chromium").is_file() or not Path("/usr/bin/chromedriver").is_file():
        pytest.fail("chromium and chromium-driver are not installed (make setup installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def wait_until(predicate, timeout_s: float = 20.0, interval_s: float = 0.1):
    """Poll until ``predicate()`` is truthy (its value) or fail with AssertionError: no timed assertions,
    only a generous bound so a broken feature cannot hang the suite."""
    end = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
