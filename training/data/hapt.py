"""The HAPT raw inertial recordings (UCI HAR's raw-signal release) cut into labelled activity windows.

Each of the 30 subjects wore a smartphone on the waist (3-axis accelerometer in g, 3-axis gyroscope in rad/s,
50 Hz); ``RawData/labels.txt`` marks labelled segments (experiment, user, activity, first and last sample,
1-based, inclusive). A window is ``window`` consecutive samples taken with hop ``hop`` *inside one segment* of
one of the six basic activities, so every window has exactly one true label. Postural transitions (activities
7-12: stand-to-sit etc., 2-5 s long, about 6 % of labelled samples) and unlabelled stretches make no windows:
the six-class problem of UCI HAR. A device classifies them anyway (as the nearest of the six).

Windows are cut once per subject from the text files and cached as ``.npz`` under the cache folder, so a test
that needs two subjects reads only their files.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ATTRIBUTION = (
    "HAPT: Smartphone-Based Recognition of Human Activities and Postural Transitions (UCI ML Repository "
    "dataset 341, v2.1, CC BY 4.0): J.-L. Reyes-Ortiz, L. Oneto, A. Samà, X. Parra, D. Anguita. Transition-Aware "
    "Human Activity Recognition Using Smartphones. Neurocomputing 171:754-767 (2016)."
)
#: HAPT activity IDs 1-6 in order; IDs 7-12 are the postural transitions (no windows).
ACTIVITIES = ("walking", "upstairs", "downstairs", "sitting", "standing", "laying")
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
SAMPLE_RATE_HZ = 50.0
#: The published UCI HAR / HAPT test subjects (``Test/subject_id_test.txt``; ``published_test_subjects`` re-reads it).
TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
#: Training subjects held out to select epochs and rounds (three of the 21, spread over the ID range).
VAL_SUBJECTS = (7, 16, 25)
_CACHE_VERSION = 1


class HaptUnavailable(RuntimeError):
    """The HAPT folder is missing or incomplete; the message says how to point at a copy."""


@dataclass(frozen=True)
class WindowSpec:
    """How recordings are cut: ``window`` samples every ``hop`` samples (default 2.56 s, 50 % overlap)."""

    window: int = 128
    hop: int = 64

    def __post_init__(self) -> None:
        if self.window < 8 or not 1 <= self.hop <= self.window:
            raise ValueError(f"window must be >= 8 and 1 <= hop <= window; got window={self.window}, hop={self.hop}")


@dataclass(frozen=True)
class SubjectWindows:
    """All windows of one subject: ``x`` (n, window, 6) raw acc g / gyro rad/s, ``y`` activity index 0-5,
    ``experiment`` the HAPT experiment each window comes from."""

    subject: int
    x: np.ndarray
    y: np.ndarray
    experiment: np.ndarray


def locate_hapt(data_dir: str | Path | None = None) -> Path:
    """``data_dir``, else ``$HAPT_DIR``, else ``../shared/data/hapt`` beside the checkout."""
    candidates = [Path(p) for p in (data_dir, os.environ.get("HAPT_DIR")) if p]
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data" / "hapt")
    for path in candidates:
        if (path / "RawData" / "labels.txt").is_file():
            return path
    raise HaptUnavailable(f"HAPT data not found (looked in {', '.join(map(str, candidates))}); set HAPT_DIR to the "
                          "folder holding RawData/labels.txt (UCI dataset 341)")


def default_cache_dir() -> Path:
    return Path(os.environ.get("PULSEWIRE_CACHE", Path.home() / ".cache" / "pulsewire")) / "hapt"


def published_test_subjects(root: Path) -> tuple[int, ...]:
    """The published test subjects, read from ``Test/subject_id_test.txt`` (falls back to the constant)."""
    path = root / "Test" / "subject_id_test.txt"
    if not path.is_file():
        return TEST_SUBJECTS
    return tuple(int(s) for s in np.unique(np.loadtxt(path, dtype=int)))


def read_labels(root: Path) -> np.ndarray:
    """labels.txt as an int array (rows: experiment, user, activity, start, end; 1-based inclusive samples)."""
    labels = np.loadtxt(root / "RawData" / "labels.txt", dtype=np.int64, ndmin=2)
    if labels.shape[1] != 5:
        raise HaptUnavailable(f"{root}/RawData/labels.txt: expected 5 columns, got {labels.shape[1]}")
    return labels


def _read_signal(path: Path) -> np.ndarray:
    if not path.is_file():
        raise HaptUnavailable(f"{path} is missing; the HAPT RawData folder is incomplete")
    signal = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if signal.shape[1] != 3 or not np.isfinite(signal).all():
        raise HaptUnavailable(f"{path}: expected finite x y z columns, got shape {signal.shape}")
    return signal


def cut_subject(root: Path, labels: np.ndarray, subject: int, spec: WindowSpec) -> SubjectWindows:
    """Read one subject's recordings and cut the windows of the six basic activities."""
    xs, ys, exps = [], [], []
    rows = labels[labels[:, 1] == subject]
    if rows.size == 0:
        raise HaptUnavailable(f"subject {subject} has no labelled segment in {root}/RawData/labels.txt")
    for exp in np.unique(rows[:, 0]):
        stem = f"exp{exp:02d}_user{subject:02d}.txt"
        acc, gyro = _read_signal(root / "RawData" / f"acc_{stem}"), _read_signal(root / "RawData" / f"gyro_{stem}")
        if len(acc) != len(gyro):
            raise HaptUnavailable(f"{stem}: accelerometer has {len(acc)} rows, gyroscope {len(gyro)}")
        signal = np.concatenate([acc, gyro], axis=1).astype(np.float32)
        for _, _, activity, start, end in rows[rows[:, 0] == exp]:
            if not 1 <= activity <= len(ACTIVITIES):
                continue  # a postural transition
            segment = signal[start - 1:end]
            for first in range(0, len(segment) - spec.window + 1, spec.hop):
                xs.append(segment[first:first + spec.window])
                ys.append(activity - 1)
                exps.append(exp)
    return SubjectWindows(subject, np.stack(xs), np.asarray(ys, np.int64), np.asarray(exps, np.int64))


class HaptWindows:
    """Windows per subject, cut on first use and cached (one ``.npz`` per subject and window spec)."""

    def __init__(self, data_dir: str | Path | None = None, cache_dir: Path | None = None,
                 spec: WindowSpec = WindowSpec()) -> None:
        self.root = locate_hapt(data_dir)
        self.spec = spec
        self._labels = read_labels(self.root)
        digest = hashlib.sha256(self._labels.tobytes()).hexdigest()[:10]
        self.cache_dir = (cache_dir or default_cache_dir()) / f"v{_CACHE_VERSION}-w{spec.window}-h{spec.hop}-{digest}"

    @property
    def subjects(self) -> tuple[int, ...]:
        return tuple(int(s) for s in np.unique(self._labels[:, 1]))

    def split_subjects(self) -> dict[str, tuple[int, ...]]:
        """train / val / test subjects: the published test subjects, ``VAL_SUBJECTS`` out of the rest."""
        test = published_test_subjects(self.root)
        val = tuple(s for s in VAL_SUBJECTS if s not in test)
        train = tuple(s for s in self.subjects if s not in test and s not in val)
        return {"train": train, "val": val, "test": test}

    def subject(self, subject: int) -> SubjectWindows:
        path = self.cache_dir / f"user{subject:02d}.npz"
        if path.is_file():
            with np.load(path) as z:
                return SubjectWindows(subject, z["x"], z["y"], z["experiment"])
        windows = cut_subject(self.root, self._labels, subject, self.spec)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # one per process: parallel runs cut the same subject
        np.savez(tmp, x=windows.x, y=windows.y, experiment=windows.experiment)
        tmp.replace(path)  # atomic: a concurrent reader never sees half a file
        log.info("HAPT subject %d: %d windows cached in %s", subject, len(windows.y), path)
        return windows

    def load(self, subjects: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, subject) of the given subjects' windows, concatenated in subject order."""
        parts = [self.subject(s) for s in subjects]
        return (np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                np.concatenate([np.full(len(p.y), p.subject) for p in parts]))


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every sample of ``x`` (n, window, channels): the device's scaler."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    std = flat.std(axis=0)
    return flat.mean(axis=0), np.where(std > 1e-8, std, 1.0)
