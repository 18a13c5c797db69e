"""Shared fixtures: the real MIT-BIH copy (or the committed excerpt) and a per-session beat cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXCERPT_DIR = ROOT / "tests" / "fixtures" / "mitdb_excerpt"


@pytest.fixture(scope="session")
def mitdb_dir() -> Path:
    """The full database: $MITDB_DIR (set by the Makefile) or ../shared/data/mitdb."""
    for candidate in (os.environ.get("MITDB_DIR"), ROOT.parent / "shared" / "data" / "mitdb"):
        if candidate and (Path(candidate) / "RECORDS").is_file():
            return Path(candidate)
    pytest.skip("full MIT-BIH copy not found: set MITDB_DIR to run the whole-database tests")


@pytest.fixture(scope="session")
def excerpt_dir() -> Path:
    return EXCERPT_DIR


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pulsewire-cache")


@pytest.fixture(scope="session")
def mosquitto():
    """A real Mosquitto on a free loopback port for the whole session (the Makefile installs it)."""
    from broker.launcher import BrokerUnavailable, MosquittoBroker

    try:
        broker = MosquittoBroker()
    except BrokerUnavailable as exc:
        pytest.fail(f"{exc}; integration tests need a real broker")
    broker.start()
    yield broker
    broker.close()
