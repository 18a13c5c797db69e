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
    message = "full MIT-BIH copy not found: set MITDB_DIR to run the whole-database tests"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must not skip them)")
    pytest.skip(message)


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


@pytest.fixture(scope="session")
def exported(mitdb_dir, cache_root, tmp_path_factory):
    """A small classifier trained for a few epochs on real beats, exported float32 and int8 (shared by the
    export and edge-runtime tests)."""
    from training.config import TrainConfig
    from training.data.beat_dataset import load_beats
    from training.export import export_model, representative_beats
    from training.train import train_centralized

    # the RR-only input set, pinned: these tests check export, edge and firmware mechanics that every feature set
    # shares; models on "rr+template" (the default) are covered by test_template_features / test_firmware_template
    cfg = TrainConfig(epochs=4, min_epochs=1, seed=0, features="rr")
    train = load_beats(mitdb_dir, ["106", "119", "201", "209", "223", "208"], cfg.signal, cache_root, progress=False)
    val = load_beats(mitdb_dir, ["118", "207"], cfg.signal, cache_root, progress=False)
    test = load_beats(mitdb_dir, ["200", "232", "213"], cfg.signal, cache_root, progress=False)
    trained = train_centralized(train, val, cfg, verbose=0)
    out = tmp_path_factory.mktemp("models")
    calib = train.subset(representative_beats(train, 500, 0))
    return {
        "trained": trained,
        "test": test,
        "float32": export_model(trained, out / "m_float32.tflite", "float32", "t1"),
        "int8": export_model(trained, out / "m_int8.tflite", "int8", "t1", calib),
    }
