"""The device's installed model: accept a release only when it is safe, swap atomically, roll back.

A release is installed only if it is signed by the aggregator's key, meant for this fleet, newer than
the running model, built for the same input pipeline (signal config, RR features, classes) and passes
a smoke inference. The files land under ``<dir>/v<version>/`` and the ``current`` pointer is replaced
with ``os.replace`` (atomic on POSIX): a power cut leaves the old model or the new one, never a mix.
Any refusal keeps the running model and says why.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.model_pin import Pin, verify_pin
from broker.model_release import Release, ReleaseError, verify_release
from edge_runtime.classifier import BeatClassifier, ModelMismatch
from edge_runtime.model_metadata import ModelMetadata

log = logging.getLogger(__name__)
POINTER = "current"
#: The last applied rollback pin (its sequence and every revoked version), kept across restarts.
PIN_STATE = "pin.json"


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    version: int | None
    reason: str

    def to_dict(self) -> dict:
        return {"accepted": self.accepted, "version": self.version, "reason": self.reason}


class ModelStore:
    def __init__(self, root: Path, public_key: Ed25519PublicKey, fleet: str) -> None:
        self.root, self.public_key, self.fleet = Path(root), public_key, fleet
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.last_verdict: Verdict | None = None

    # ------------------------------------------------------------------ what runs
    def current_version(self) -> int | None:
        pointer = self.root / POINTER
        return int(pointer.read_text().strip()) if pointer.is_file() else None

    def load_current(self) -> BeatClassifier:
        version = self.current_version()
        if version is None:
            raise FileNotFoundError(f"no model installed in {self.root}; install one with `pulsewire edge install`")
        folder = self.root / f"v{version}"
        return BeatClassifier((folder / "model.tflite").read_bytes(), ModelMetadata.load(folder / "model.json"))

    # ------------------------------------------------------------------ updates
    def consider(self, data: bytes) -> Verdict:
        """Verify and, when every check passes, install ``data``; the verdict says what happened."""
        with self._lock:
            try:
                release = verify_release(data, self.public_key)
                self._check(release)
                self._install(release)
                verdict = Verdict(True, release.version, "installed")
            except ReleaseError as exc:
                verdict = Verdict(False, getattr(exc, "version", None), exc.reason)
                log.warning("model release refused (%s); keeping version %s", exc, self.current_version())
            self.last_verdict = verdict
            return verdict

    def revoked(self) -> set[int]:
        state = self._pin_state()
        return set(state.get("revoked", []))

    def _pin_state(self) -> dict:
        path = self.root / PIN_STATE
        return json.loads(path.read_text()) if path.is_file() else {}

    def apply_pin(self, data: bytes) -> Verdict:
        """A signed rollback: remember the revocations, then run the pinned version (or, when it was never
        installed here, the newest installed version that is not revoked)."""
        with self._lock:
            try:
                pin = verify_pin(data, self.public_key)
                if pin.fleet != self.fleet:
                    raise ReleaseError("wrong_fleet", f"pin for fleet {pin.fleet!r}, this device is in {self.fleet!r}")
                verdict = self._apply(pin)
            except ReleaseError as exc:
                verdict = Verdict(False, None, exc.reason)
                log.warning("rollback pin refused (%s); keeping version %s", exc, self.current_version())
            self.last_verdict = verdict
            return verdict

    def _apply(self, pin: Pin) -> Verdict:
        state = self._pin_state()
        if pin.sequence <= state.get("sequence", -1):
            return Verdict(True, self.current_version(), "pin_already_applied")
        revoked = sorted(set(state.get("revoked", [])) | set(pin.revoked))
        tmp = self.root / (PIN_STATE + ".tmp")
        tmp.write_text(json.dumps({"sequence": pin.sequence, "version": pin.version, "revoked": revoked}) + "\n")
        os.replace(tmp, self.root / PIN_STATE)
        installed = [v for v in self._installed() if v not in revoked]
        target = pin.version if pin.version in installed else max((v for v in installed if v <= pin.version),
                                                                  default=None)
        if target is None:
            log.warning("pinned version %d is not installed here and no older one is; keeping %s", pin.version,
                        self.current_version())
            return Verdict(False, pin.version, "pin_target_missing")
        if target != self.current_version():
            self._point_to(target)
            log.info("rolled back to model version %d (revoked: %s)", target, revoked)
        return Verdict(True, target, "pinned")

    def _installed(self) -> list[int]:
        return sorted(int(p.name[1:]) for p in self.root.glob("v*") if p.name[1:].isdigit() and p.is_dir())

    def rollback(self) -> int | None:
        """Back to the previously installed version (e.g. when the new one misbehaves in service)."""
        with self._lock:
            versions = self._installed()
            current = self.current_version()
            older = [v for v in versions if current is None or v < current]
            if not older:
                return current
            self._point_to(older[-1])
            return older[-1]

    def _check(self, release: Release) -> None:
        def refuse(reason: str, detail: str) -> None:
            err = ReleaseError(reason, detail)
            err.version = release.version
            raise err

        if release.fleet != self.fleet:
            refuse("wrong_fleet", f"release for fleet {release.fleet!r}, this device is in {self.fleet!r}")
        if release.version in self.revoked():
            refuse("revoked", f"version {release.version} was revoked by a signed rollback")
        current = self.current_version()
        if current is not None and release.version <= current:
            refuse("not_newer", f"version {release.version} is not newer than the running {current}")
        try:
            metadata = ModelMetadata.from_json(release.metadata.decode("utf-8"))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            refuse("bad_metadata", f"metadata unreadable ({exc})")
        if metadata.signal.digest() != release.signal_digest:
            refuse("bad_metadata", "manifest and metadata disagree on the signal pipeline")
        if current is not None:
            running = ModelMetadata.load(self.root / f"v{current}" / "model.json")
            same = (running.signal.digest(), tuple(running.rr_feature_names), tuple(running.class_names)) == \
                (metadata.signal.digest(), tuple(metadata.rr_feature_names), tuple(metadata.class_names))
            if not same:
                refuse("pipeline_mismatch", "the release expects another input pipeline or classes than this device")
        try:
            clf = BeatClassifier(release.model, metadata)
            probs = clf.predict_proba(_smoke_waves(metadata), _smoke_rr(metadata))
        except (ModelMismatch, ValueError, RuntimeError) as exc:
            refuse("smoke_failed", f"the model does not run: {exc}")
        if not (np.all(np.isfinite(probs)) and np.allclose(probs.sum(axis=1), 1.0, atol=0.05)):
            refuse("smoke_failed", "the model's outputs are not probabilities")

    def _install(self, release: Release) -> None:
        folder = self.root / f"v{release.version}"
        tmp = self.root / f".incoming-v{release.version}"
        tmp.mkdir(exist_ok=True)
        for name, data in (("model.tflite", release.model), ("model.json", release.metadata)):
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if folder.exists():  # left from an earlier install of this version: the verified bytes replace it
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        self._point_to(release.version)
        log.info("installed model version %d", release.version)

    def _point_to(self, version: int) -> None:
        tmp = self.root / (POINTER + ".tmp")
        tmp.write_text(f"{version}\n")
        os.replace(tmp, self.root / POINTER)


def _smoke_waves(metadata: ModelMetadata) -> np.ndarray:
    """A synthetic normal-looking beat and a flat line: a working model must return probabilities."""
    n = metadata.signal.window_length
    t = np.linspace(-1, 1, n)
    beat = np.exp(-(t / 0.05) ** 2) - 0.2 * np.exp(-((t - 0.4) / 0.1) ** 2)
    return np.stack([beat, np.zeros(n)]).astype(np.float32)


def _smoke_rr(metadata: ModelMetadata) -> np.ndarray:
    return np.tile(np.asarray(metadata.rr_mean, np.float32), (2, 1))
