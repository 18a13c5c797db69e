"""The repository on both databases: SQLite and a real PostgreSQL (the ``db_url`` fixture runs each twice)."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect

from server.auth import add_user, check_password, new_session, token_hash
from server.repository import Store
from server import views

HOSTILE = ["x'); DROP TABLE alerts; --", "<script>window.__pwned=1</script>", "Robert\"; DELETE FROM devices; --",
           "ümlaut ✓ 🫀"]


def _alert(i: int, patient: str = "pt1", **extra) -> dict:
    return {"alert_id": f"d1-boot-{i}", "device": "d1", "patient": patient, "kind": "ventricular_run",
            "time": "2026-11-26T08:00:00.000+00:00", "beat_index": i, "beats": 3, "class": "V",
            "confidence_permille": 900, "heart_rate_bpm": 130, "model_version": "m1", "schema": 1, **extra}


def test_migrations_create_every_table_and_rerun_is_a_no_op(db_url):
    store = Store(db_url)
    Store(db_url).close()  # a second start runs `upgrade head` again: nothing to do, nothing breaks
    tables = set(inspect(store.engine).get_table_names())
    assert {"devices", "alerts", "rounds", "privacy_ledger", "security_events", "model_releases", "consents",
            "users", "sessions", "audit_log", "counters", "alembic_version"} <= tables
    store.close()


def test_alerts_are_deduplicated_and_hostile_strings_stored_verbatim(db_url):
    store = Store(db_url)
    with store.session() as repo:
        assert repo.record_alert("ward", _alert(1), registered=False) is not None
        assert repo.record_alert("ward", _alert(1), registered=False) is None  # the redelivery
        for i, text in enumerate(HOSTILE, start=2):
            assert repo.record_alert("ward", _alert(i, patient=text, note=text), registered=False) is not None
    with store.session() as repo:
        assert repo.alert_count() == 1 + len(HOSTILE)
        stored = {a.patient for a in repo.alerts()}
        assert set(HOSTILE) <= stored  # verbatim, and the tables the strings "dropped" are still there
        assert [a.alert_id for a in repo.alerts(patient=HOSTILE[0])] == ["d1-boot-2"]
        assert repo.devices()[0].registered is False  # heard on the bus, never enrolled: listed as unknown
    store.close()


def test_status_then_last_will_marks_a_device_offline_and_keeps_its_facts(db_url):
    store = Store(db_url)
    with store.session() as repo:
        repo.register_devices("ward", {"d1": 11})
        repo.record_status("ward", "d1", 11, {"state": "online", "battery": 77, "link": "ble",
                                              "signal_quality": 0.8, "capabilities": ["infer"],
                                              "model_version": "m2"}, registered=True)
        repo.record_status("ward", "d1", 11, {"state": "offline"}, registered=True)
    with store.session() as repo:
        d = views.fleet_view(repo)["devices"][0]
    assert (d["state"], d["battery"], d["link"], d["role"], d["model_version"], d["enrolled"]) == \
        ("offline", 77.0, "ble", "inference-only", "m2", True)
    store.close()


def test_round_events_fill_rounds_ledger_and_security(db_url):
    store = Store(db_url)
    closed = {"schema": 1, "event": "closed", "fleet": "ward", "round": 2, "strategy": "dp_fedavg",
              "participants": 3, "declined": 1, "bytes_received": 4096, "bytes_down": 9000, "seconds": 1.5,
              "metrics": {"val_macro_f1": 0.55}, "rejected": {"duplicate": 1}, "accepted": ["a", "b", "c"],
              "privacy": {"epsilon_rdp": 1.25, "delta": 1e-5}, "budget": 4.0}
    with store.session() as repo:
        repo.record_round_event({"schema": 1, "event": "opened", "fleet": "ward", "round": 2,
                                 "strategy": "dp_fedavg", "selected": ["a", "b", "c", "d"]})
        repo.record_round_event(closed)
        repo.record_round_event(closed)  # a redelivered event changes nothing
        repo.record_round_event({"schema": 1, "event": "rejected", "fleet": "ward", "round": 2,
                                 "reason": "bad_crc", "device": "a", "detail": "integrity"})
    with store.session() as repo:
        r = views.rounds_view(repo)["rounds"]
        p = views.privacy_view(repo)
        s = views.security_view(repo)
    assert len(r) == 1 and r[0]["participants"] == 3 and r[0]["metrics"] == {"val_macro_f1": 0.55}
    assert r[0]["selected"] == 4 and r[0]["state"] == "closed"
    assert p["spent"] == 1.25 and p["left"] == pytest.approx(2.75) and p["per_device"] == {"a": 1.25, "b": 1.25, "c": 1.25}
    assert s["totals"] == {"bad_crc": 1}
    store.close()


def test_users_sessions_consent_and_audit(db_url):
    store = Store(db_url)
    with store.session() as repo:
        user = add_user(repo, "clara", "clinician", "long enough pw")
        with pytest.raises(ValueError):
            add_user(repo, "eve", "admin", "long enough pw")
        token = new_session(repo, user, dt.timedelta(hours=1))
        expired = new_session(repo, user, dt.timedelta(seconds=-1))
    with store.session() as repo:
        assert check_password(repo.user("clara"), "long enough pw")
        assert not check_password(repo.user("clara"), "wrong password")
        assert not check_password(None, "whatever")
        assert repo.session_user(token_hash(token)).name == "clara"
        assert repo.session_user(token_hash(expired)) is None
        assert repo.user("clara").password_hash.startswith("$argon2id$")
        repo.set_consent("ward", "pt1", training=True, strip=False, user="clara")
        repo.set_consent("ward", "pt1", training=True, strip=True, user="clara")
    with store.session() as repo:
        c = repo.consent("ward", "pt1")
        assert (c.version, c.strip, c.training) == (2, True, True)
        assert [e.action for e in repo.audit_log()] == ["consent", "consent"]
    store.close()


def test_counters_accumulate(db_url):
    store = Store(db_url)
    for _ in range(3):
        with store.session() as repo:
            repo.count("rejected.bad_alert_bad_crc")
    with store.session() as repo:
        assert repo.counters() == {"rejected.bad_alert_bad_crc": 3}
    store.close()


def test_database_urls_a_user_types(tmp_path):
    from server.db import display_url, normalise_url

    assert normalise_url("postgresql://pw@127.0.0.1:5432/fleet") == "postgresql+psycopg://pw@127.0.0.1:5432/fleet"
    assert normalise_url(str(tmp_path / "a" / "f.db")) == f"sqlite:///{tmp_path / 'a' / 'f.db'}"
    assert (tmp_path / "a").is_dir()  # the folder of a new SQLite file is made
    assert "secret" not in display_url("postgresql://pw:secret@127.0.0.1/fleet")  # logs show no password
