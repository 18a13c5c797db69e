"""IMU samples from lines of text: a CSV file, stdin, or a serial port (``sources.serial_lines``).

A line is one sample of 3 accelerometer (g) and 3 gyroscope (rad/s) channels: ``ax ay az gx gy gz``, or
``t ax ay az gx gy gz`` with the time in seconds first (comma, semicolon or whitespace separated; ``#`` comments
and a header line are skipped). The first data line fixes the layout: any other count of values is a clear
``ImuFormatError`` (a 5-column file is not silently read as something else). Later lines with the wrong count or
an unparsable field are logged, counted (``malformed``) and skipped. NaN / infinite values are passed on as NaN
and counted (``invalid``): the activity runner holds the last valid sample and refuses windows that are mostly
invalid, so the time base stays intact. With a time column the rate the timestamps show is checked against
``fs_hz`` (``ImuRateError``: a 100 Hz file given as 50 Hz would shift every window's meaning).

The HAPT recordings ship accelerometer and gyroscope as two files of 3 columns; ``imu_text_file`` pastes an
``acc_*.txt`` with its ``gyro_*.txt`` sibling so a raw HAPT recording can be replayed as it is.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
_FIELD_SPLIT = re.compile(r"[,;\s]+")
IMU_CHANNELS = 6
#: Timestamps may wander this much (relative) from ``1 / fs_hz`` before the rate is called wrong.
RATE_TOLERANCE = 0.05


class ImuFormatError(ValueError):
    """The input does not carry 3 + 3 channels; the message says what was found and what is expected."""


class ImuRateError(ValueError):
    """The timestamps disagree with ``--fs``; the message gives both rates."""


class ImuTextSamples:
    """Samples (rows of 6 floats) from text lines; ``chunks`` yields float64 arrays of shape (n, 6)."""

    def __init__(self, lines: Iterable[str], fs_hz: float, chunk: int = 50, check_rate_after: int = 50) -> None:
        if not fs_hz or fs_hz <= 0:
            raise ValueError("--fs must be given and positive for IMU input (the HAPT model expects 50 Hz)")
        self.fs_hz = float(fs_hz)
        self.channels = IMU_CHANNELS
        self._lines = lines
        self._chunk = chunk
        self._check_after = check_rate_after
        self._timed: bool | None = None  # decided by the first data line
        self._times: list[float] = []
        self.lines = 0
        self.samples = 0
        self.malformed = 0
        self.invalid = 0

    def chunks(self) -> Iterator[np.ndarray]:
        buf: list[list[float]] = []
        for line in self._lines:
            self.lines += 1
            row = self._parse(line)
            if row is None:
                continue
            buf.append(row)
            self.samples += 1
            if len(buf) >= self._chunk:
                yield np.asarray(buf, np.float64)
                buf = []
        if buf:
            yield np.asarray(buf, np.float64)
        if self._timed and len(self._times) >= 3:
            self._check_rate()  # a short timed file is checked at its end

    def _parse(self, line: str) -> list[float] | None:
        text = line.strip()
        if not text or text.startswith("#"):
            return None
        fields = [f for f in _FIELD_SPLIT.split(text) if f]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if self._timed is None and any(c.isalpha() for c in text):
                return None  # a CSV header line
            return self._drop(f"{text[:40]!r} has a field that is not a number")
        if self._timed is None:
            if len(values) not in (IMU_CHANNELS, IMU_CHANNELS + 1):
                raise ImuFormatError(
                    f"line {self.lines}: {len(values)} values; IMU input needs 6 per line (acc x y z in g, gyro "
                    f"x y z in rad/s), optionally after a time column in seconds (7)")
            self._timed = len(values) == IMU_CHANNELS + 1
        if len(values) != IMU_CHANNELS + int(self._timed):
            return self._drop(f"{len(values)} values where the first line had {IMU_CHANNELS + int(self._timed)}")
        if self._timed:
            self._note_time(values[0])
            values = values[1:]
        if not all(np.isfinite(values)):
            self.invalid += 1
            values = [v if np.isfinite(v) else float("nan") for v in values]
        return values

    def _drop(self, why: str) -> None:
        self.malformed += 1
        log.warning("line %d: %s; skipped (%d so far)", self.lines, why, self.malformed)

    def _note_time(self, t: float) -> None:
        if len(self._times) < self._check_after and np.isfinite(t):
            self._times.append(t)
            if len(self._times) == self._check_after:
                self._check_rate()

    def _check_rate(self) -> None:
        steps = np.diff(np.asarray(self._times))
        steps = steps[steps > 0]
        if steps.size == 0:
            raise ImuRateError("the time column does not increase; give time in seconds or drop the column")
        seen = 1.0 / float(np.median(steps))
        if abs(seen - self.fs_hz) > RATE_TOLERANCE * self.fs_hz:
            raise ImuRateError(f"the time column shows {seen:.4g} Hz but --fs is {self.fs_hz:g} Hz; give the "
                               "right --fs (the model runs at its training rate: resample the file to it)")
        self._times.append(float("nan"))  # checked once


def _pasted(acc: Path, gyro: Path) -> Iterator[str]:
    with open(acc, encoding="utf-8", errors="replace") as a, open(gyro, encoding="utf-8", errors="replace") as g:
        for left, right in zip(a, g):
            yield f"{left.strip()} {right.strip()}"


def imu_text_file(path: str | Path, fs_hz: float) -> ImuTextSamples:
    """A text file of 6 (or time + 6) columns, or a HAPT ``acc_expXX_userYY.txt`` joined with its gyro file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IMU file {path} does not exist")
    gyro = path.with_name(path.name.replace("acc_", "gyro_", 1))
    if path.name.startswith("acc_") and gyro.is_file():
        return ImuTextSamples(_pasted(path, gyro), fs_hz)
    return ImuTextSamples(_lines(path), fs_hz)


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield from handle
