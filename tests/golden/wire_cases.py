"""Golden wire vectors: fixed inputs whose exact encoded bytes are committed in tests/golden/wire/.

The C side (firmware) checks its encoder and decoder against the same files. Regenerate only on a
deliberate format change (and bump broker.wire.VERSION): `python -m tests.golden.wire_cases --write`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from broker.chunking import split_message
from broker.device_messages import encode_alert, encode_status
from broker.wire import Encoding, Kind, encode_tensors

GOLDEN_DIR = Path(__file__).parent / "wire"
FLEET, DEVICE = 0x50570001, 101


def _tensors() -> list[np.ndarray]:
    return [np.array([[0.5, -1.0, 0.25], [2.0, 0.0, -0.125]], np.float32),
            np.array([0.75, -0.5], np.float32)]


def golden_cases() -> dict[str, bytes]:
    cases = {
        "model_float32": encode_tensors(Kind.MODEL, FLEET, 3, 0, _tensors(), Encoding.FLOAT32,
                                        meta={"local_epochs": 1, "lr": 0.002}),
    }
    for enc in (Encoding.FLOAT32, Encoding.FLOAT16, Encoding.INT8, Encoding.TOPK_INT8):
        cases[f"update_{enc.name.lower()}"] = encode_tensors(
            Kind.UPDATE, FLEET, 3, DEVICE, _tensors(), enc, meta={"num_examples": 1865}, topk_fraction=0.5)
    for i, frame in enumerate(split_message(cases["update_int8"], message_id=7, chunk_size=48)):
        cases[f"chunk_update_int8_{i}"] = frame
    cases["alert_ventricular_run"] = encode_alert("ward3", DEVICE, ALERT)
    cases["alert_summary"] = encode_alert("ward3", DEVICE, SUMMARY)
    cases["status_online"] = encode_status("ward3", DEVICE, {"state": "online", "beats": 1234, "spool_depth": 0})
    return cases


ALERT = {"alert_id": "p101-1a2b3c4d-7", "device": "p101", "patient": "anon-17", "kind": "ventricular_run",
         "time": "2026-11-23T14:00:05.250+00:00", "beat_index": 123456, "beats": 3, "class": "V",
         "confidence_permille": 912, "heart_rate_bpm": 143, "model_version": "fedavg-seed0-9f8e7d", "schema": 1}
SUMMARY = {**ALERT, "alert_id": "p101-1a2b3c4d-8", "kind": "summary", "beats": 71, "class": "N",
           "confidence_permille": 955, "heart_rate_bpm": 72, "counts": {"N": 66, "S": 1, "V": 4}}


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit("usage: python -m tests.golden.wire_cases --write   (overwrites the golden files)")
    GOLDEN_DIR.mkdir(exist_ok=True)
    for name, data in golden_cases().items():
        (GOLDEN_DIR / f"{name}.bin").write_bytes(data)
        print(f"{name}.bin {len(data)} bytes")
