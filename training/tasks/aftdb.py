"""The AF Termination Challenge Database (PhysioNet aftdb 1.0.0): one-minute AF segments as R-peak times.

Every segment is AF. Learning-set records carry their class in the name: N = non-terminating AF, S = AF that
terminates one minute after the segment, T = AF that terminates immediately after it. Test sets A and B are
unlabelled here. Beats are the database's ``.qrs`` annotations (an unaudited automatic detector, like the
device's own), so RR intervals are what a wearable would measure.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ATTRIBUTION = (
    "AF Termination Challenge Database (PhysioNet aftdb 1.0.0, ODC-By 1.0): Moody GB. Spontaneous termination "
    "of atrial fibrillation: a challenge from PhysioNet and Computers in Cardiology 2004. Computers in "
    "Cardiology 31:101-104 (2004); Goldberger AL et al., Circulation 101(23):e215-e220 (2000). Copy obtained "
    "from the GitHub repository StormyPetrel99/PoToAF_SVM, byte-identical to the release (PROVENANCE.md)."
)
CLASSES = ("N", "S", "T")
LEARNING = tuple(f"learning-set/{c.lower()}{i:02d}" for c in CLASSES for i in range(1, 11))
UNLABELLED = tuple(f"test-set-a/a{i:02d}" for i in range(1, 31)) + tuple(f"test-set-b/b{i:02d}" for i in range(1, 21))


def locate_aftdb(data_dir: str | Path | None = None, mitdb_dir: str | Path | None = None) -> Path:
    """``data_dir``, else ``AFTDB_DIR``, else the shared copy next to MIT-BIH (``mitdb_dir`` or
    ``MITDB_DIR``, then ../aftdb)."""
    candidates = [data_dir, os.environ.get("AFTDB_DIR")]
    for mitdb in (mitdb_dir, os.environ.get("MITDB_DIR")):
        if mitdb:
            candidates.append(Path(mitdb).expanduser().parent / "aftdb")
    for c in candidates:
        if c and (Path(c) / "RECORDS").is_file():
            return Path(c)
    raise FileNotFoundError("AF Termination Challenge database not found: set AFTDB_DIR to the folder with "
                            "RECORDS and learning-set/ (PhysioNet aftdb 1.0.0)")


def beat_times(data_dir: Path, record: str) -> np.ndarray:
    """R-peak times in seconds of one record (``record`` as listed in RECORDS, e.g. "learning-set/n01")."""
    import wfdb

    base = Path(data_dir) / record
    if not base.with_suffix(".qrs").is_file():
        raise FileNotFoundError(f"{base}.qrs missing; is {data_dir} a complete aftdb copy?")
    ann = wfdb.rdann(str(base), "qrs")
    fs = float(ann.fs or wfdb.rdheader(str(base)).fs)
    samples = np.asarray(ann.sample, np.int64)
    if samples.size < 3 or np.any(np.diff(samples) <= 0):
        raise ValueError(f"{base}.qrs: need strictly increasing beats, got {samples.size}")
    return samples / fs


def first_lead(data_dir: Path, record: str) -> tuple[np.ndarray, float]:
    """The first ECG channel of one record in millivolts and its sampling rate (for the atrial-activity features)."""
    import wfdb

    rec = wfdb.rdrecord(str(Path(data_dir) / record), channels=[0])
    signal = np.asarray(rec.p_signal[:, 0], np.float64)
    if not np.all(np.isfinite(signal)):
        raise ValueError(f"{record}: the first channel holds NaN samples")
    return signal, float(rec.fs)


def label_of(record: str) -> int:
    """Class index (into CLASSES) from a learning-set record name."""
    letter = Path(record).name[:1].upper()
    if letter not in CLASSES:
        raise ValueError(f"{record}: not a learning-set record (n*, s*, t*)")
    return CLASSES.index(letter)
