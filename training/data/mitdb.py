"""Reading MIT-BIH records with wfdb: locate the database, load one lead, fail loudly on bad files."""
from __future__ import annotations

import logging
import os
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.scoring import flutter_episodes

log = logging.getLogger(__name__)

ATTRIBUTION = (
    "MIT-BIH Arrhythmia Database (PhysioNet, ODC-By 1.0): Moody GB, Mark RG. The impact of the MIT-BIH "
    "Arrhythmia Database. IEEE Eng in Med and Biol 20(3):45-50 (2001). Goldberger AL et al. PhysioBank, "
    "PhysioToolkit, and PhysioNet. Circulation 101(23):e215-e220 (2000)."
)


#: ``load_record(..., lead=OTHER_LEAD)``: the record's first channel that is not MLII (V1, V2, V4 or V5 in
#: MIT-BIH): a different electrode placement than training's, for lead-invariance training and tests.
OTHER_LEAD = "other"


class RecordError(RuntimeError):
    """A record is missing, truncated or unreadable; the message names the file and what to do."""


class DataUnavailable(RuntimeError):
    """The database is neither on disk nor downloadable; the message says how to point at a copy."""


@dataclass(frozen=True)
class EcgRecord:
    name: str
    signal_mv: np.ndarray  # one lead, float64 millivolts
    fs_hz: float
    lead: str
    ann_sample: np.ndarray  # annotation sample indices
    ann_symbol: np.ndarray  # annotation symbols (str)
    ann_aux: np.ndarray  # annotation aux notes (rhythm changes such as "(VFL"), "" where none

    def flutter_episodes(self) -> list[tuple[int, int]]:
        """Ventricular flutter/fibrillation ranges, left out of beat-by-beat scoring (EC57)."""
        return flutter_episodes(self.ann_sample, self.ann_symbol, self.ann_aux, self.signal_mv.size)


def default_cache_root() -> Path:
    """The cache folder every loader shares: $PULSEWIRE_CACHE, else ~/.cache/pulsewire."""
    return Path(os.environ.get("PULSEWIRE_CACHE", Path.home() / ".cache" / "pulsewire"))


def locate_mitdb(data_dir: str | Path | None, cache_root: Path, allow_download: bool = True) -> Path:
    """The directory holding the database: the given one, else a cached copy, else a fresh download.

    ``data_dir`` comes from ``--data-dir`` or ``MITDB_DIR`` (the entry point reads those).
    """
    if data_dir:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataUnavailable(f"MIT-BIH directory {path} does not exist; fix --data-dir / MITDB_DIR")
        return path
    cached = cache_root / "mitdb"
    if (cached / "RECORDS").is_file():
        return cached
    if not allow_download:
        raise DataUnavailable(
            "no MIT-BIH copy given: pass --data-dir DIR or set MITDB_DIR to a folder with the WFDB files"
        )
    return _download(cached)


def _download(target: Path) -> Path:
    import wfdb

    log.info("downloading the MIT-BIH Arrhythmia Database to %s (~100 MB)", target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        wfdb.dl_database("mitdb", str(target))
        (target / "RECORDS").write_text("\n".join(_listed_records(target)) + "\n")
    except Exception as exc:  # wfdb raises requests/OS errors of many kinds when offline
        raise DataUnavailable(
            f"could not download MIT-BIH from PhysioNet ({exc.__class__.__name__}: {exc}). Offline? Copy the "
            "database (https://physionet.org/content/mitdb/1.0.0/) to a folder and pass --data-dir DIR "
            "or set MITDB_DIR=DIR."
        ) from exc
    return target


def _listed_records(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.hea"))


def _expected_dat_bytes(fmt: str, n_samples: int, n_signals: int) -> int | None:
    bits = {"212": 12, "16": 16, "80": 8, "310": 10, "311": 10}.get(fmt)
    if bits is None:
        return None
    return math.ceil(n_samples * n_signals * bits / 8)


def load_record(data_dir: Path, name: str, lead: str | int = "MLII") -> EcgRecord:
    """One lead of one record in millivolts, with its reference beat annotations.

    The lead is chosen by name (channel order differs between MIT-BIH records: 114 has MLII second),
    by channel index, or as ``OTHER_LEAD`` (the first channel not named MLII).
    """
    import wfdb

    base = Path(data_dir) / name
    for ext in ("hea", "dat", "atr"):
        f = base.with_suffix(f".{ext}")
        if not f.is_file():
            raise RecordError(f"{f}: missing; is {data_dir} a complete MIT-BIH copy?")
    try:
        header = wfdb.rdheader(str(base))
    except Exception as exc:
        raise RecordError(f"{base}.hea: unreadable WFDB header ({exc})") from exc
    if lead == OTHER_LEAD:
        others = [n for n in header.sig_name if n != "MLII"]
        if not others:
            raise RecordError(f"{base}.hea: no lead besides MLII; the record has {header.sig_name}")
        lead = others[0]
    if isinstance(lead, int):
        if not 0 <= lead < header.n_sig:
            raise RecordError(f"{base}.hea: no channel {lead}; the record has {header.n_sig} ({header.sig_name})")
        lead = header.sig_name[lead]
    if lead not in header.sig_name:
        raise RecordError(f"{base}.hea: no lead {lead!r}; the record has {header.sig_name}")
    expected = _expected_dat_bytes(str(header.fmt[0]), header.sig_len, header.n_sig)
    actual = base.with_suffix(".dat").stat().st_size
    if expected is not None and actual < expected:
        raise RecordError(
            f"{base}.dat: truncated ({actual} bytes, the header promises {expected}); copy the file again"
        )
    channel = header.sig_name.index(lead)
    try:
        rec = wfdb.rdrecord(str(base), channels=[channel], physical=True)
        ann = wfdb.rdann(str(base), "atr")
    except Exception as exc:
        raise RecordError(f"{base}: wfdb could not read the record ({exc.__class__.__name__}: {exc})") from exc
    signal = np.asarray(rec.p_signal[:, 0], dtype=np.float64)
    if signal.size != header.sig_len:
        raise RecordError(f"{base}.dat: {signal.size} samples read, header says {header.sig_len}")
    if not np.all(np.isfinite(signal)):
        bad = int(np.sum(~np.isfinite(signal)))
        raise RecordError(f"{base}.dat: {bad} invalid samples in lead {lead}; not filling them with zeros")
    return EcgRecord(
        name=name,
        signal_mv=signal,
        fs_hz=float(header.fs),
        lead=lead,
        ann_sample=np.asarray(ann.sample, dtype=np.int64),
        ann_symbol=np.asarray(ann.symbol),
        ann_aux=np.asarray([a or "" for a in ann.aux_note]),
    )
