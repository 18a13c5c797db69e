"""Crash-safe aggregator state: one ``.npz`` holding named arrays and a JSON manifest.

Written to a temporary file, fsynced, then renamed over the old one, so a SIGKILL at any instant
leaves either the previous checkpoint or the new one, never half of each. Lists of arrays (weights,
strategy state, a delta) are stored as ``name/0``, ``name/1``, ...; ``None`` is simply absent.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

#: 2: the aggregator's accepted updates in files of their own (``accepted/``), no longer in the checkpoint.
#: 3: written when a round opens and closes only; the round's accepted updates are in its update log
#: (``training.federated.update_log``), replayed on restart.
FORMAT = 3
_MANIFEST = "__manifest__"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says what to do."""


def save(path: Path, manifest: dict[str, Any], arrays: dict[str, list[np.ndarray] | None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {_MANIFEST: np.frombuffer(json.dumps({"format": FORMAT, **manifest}).encode(), np.uint8)}
    for name, tensors in arrays.items():
        for i, t in enumerate(tensors or []):
            flat[f"{name}/{i}"] = np.asarray(t)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **flat)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """The manifest and every array list; a missing name means the list was None."""
    try:
        with np.load(path, allow_pickle=False) as data:
            manifest = json.loads(bytes(data[_MANIFEST]).decode())
            arrays: dict[str, dict[int, np.ndarray]] = {}
            for key in data.files:
                if key == _MANIFEST:
                    continue
                name, _, index = key.rpartition("/")
                arrays.setdefault(name, {})[int(index)] = data[key]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); delete it to start the run afresh") from exc
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {manifest.get('format')}, this version reads {FORMAT}: "
                              "finish the run with the version that wrote it, or delete the run directory")
    return manifest, {name: [parts[i] for i in range(len(parts))] for name, parts in arrays.items()}


def save_json(path: Path, document: dict[str, Any]) -> None:
    """A small JSON file, replaced atomically and fsynced like the checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(document, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc}); delete the run directory to start afresh") from exc
