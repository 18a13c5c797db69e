"""The edge bench's report when a peer detector is missing or finds nothing (no +P: 0/0)."""
from __future__ import annotations

from tools.edge_bench import edge_markdown, edge_targets


def _score(se, ppv, seconds=1.0):
    return {"se": se, "ppv": ppv, "tp": 0, "fn": 0, "fp": 0, "seconds": seconds}


def test_a_peer_that_found_no_beat_is_reported_not_a_crash():
    totals = {"pulsewire": _score(0.9996, 1.0), "wfdb_xqrs": _score(1.0, 1.0), "neurokit2": _score(0.0, None)}
    results = {"command": "pulsewire edge bench --records 100",
               "detection": {"records": {"100": {"lead": "MLII", **totals}}, "totals": totals}}
    results["targets"] = edge_targets(results)
    gap = next(t for t in results["targets"] if t["target"].startswith("R-peak Se + +P minus"))
    assert abs(gap["mean"] - (1.9996 - 2.0)) < 1e-9 and gap["met"] is False  # measured against xqrs, not the 0/0
    md = edge_markdown(results)
    assert "| 100 | MLII | 99.96 / 100.00 | 100.00 / 100.00 | 0.00 / n/a |" in md
