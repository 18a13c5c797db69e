"""Where samples come from: a WFDB record replayed, a text file or stdin, a serial ADC front-end.

Every source yields float64 chunks in millivolts at its ``fs_hz``; pacing (real time, 10x, as fast as
possible) is one wrapper for all of them. Text lines carry one sample each: ``<value>`` or
``<time>,<value>`` (the last comma-, semicolon- or whitespace-separated field is the sample, in mV).
A malformed line is logged, counted and skipped; the stream goes on.
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Iterable, Iterator, Protocol, TextIO

import numpy as np

log = logging.getLogger(__name__)
_FIELD_SPLIT = re.compile(r"[,;\s]+")


class SampleSource(Protocol):
    fs_hz: float

    def chunks(self) -> Iterator[np.ndarray]: ...


class WfdbReplay:
    """One lead of a WFDB record (any database wfdb reads), replayed in chunks."""

    def __init__(self, record_path: str | Path, lead: str | int = "MLII", chunk_s: float = 0.25) -> None:
        import wfdb  # part of the edge install; imported here so text and serial sources need nothing extra

        path = str(record_path)
        header = wfdb.rdheader(path)
        if isinstance(lead, str) and lead.isdigit():
            lead = int(lead)
        if isinstance(lead, int):
            if not 0 <= lead < header.n_sig:
                raise ValueError(f"{path}: no channel {lead}; the record has {header.sig_name}")
            channel = lead
        elif lead in header.sig_name:
            channel = header.sig_name.index(lead)
        else:
            raise ValueError(f"{path}: no lead {lead!r}; the record has {header.sig_name} (or pass an index)")
        self.lead = header.sig_name[channel]
        self.fs_hz = float(header.fs)
        self._signal = wfdb.rdrecord(path, channels=[channel], physical=True).p_signal[:, 0].astype(np.float64)
        self._chunk = max(1, int(round(chunk_s * self.fs_hz)))

    def chunks(self) -> Iterator[np.ndarray]:
        for i in range(0, self._signal.size, self._chunk):
            yield self._signal[i:i + self._chunk]


class TextSamples:
    """Samples from lines of text (a CSV file, stdin, or lines read from a serial port)."""

    def __init__(self, lines: Iterable[str], fs_hz: float, chunk: int = 90) -> None:
        if fs_hz <= 0:
            raise ValueError("--fs must be given and positive for text and serial input")
        self.fs_hz = fs_hz
        self._lines = lines
        self._chunk = chunk
        self.malformed = 0
        self.lines = 0

    def chunks(self) -> Iterator[np.ndarray]:
        buf: list[float] = []
        for line in self._lines:
            self.lines += 1
            value = self._parse(line)
            if value is not None:
                buf.append(value)
            if len(buf) >= self._chunk:
                yield np.asarray(buf)
                buf = []
        if buf:
            yield np.asarray(buf)

    def _parse(self, line: str) -> float | None:
        text = line.strip()
        if not text or text.startswith("#"):
            return None
        fields = [f for f in _FIELD_SPLIT.split(text) if f]
        try:
            value = float(fields[-1])
            if not np.isfinite(value):
                raise ValueError("not finite")
            return value
        except (ValueError, IndexError):
            if self.lines > 1 or not any(c.isalpha() for c in text):  # a CSV header line is not an error
                self.malformed += 1
                log.warning("line %d: %r is not a sample; skipped (%d so far)", self.lines, text[:40], self.malformed)
            return None


def text_file(path: str | Path, fs_hz: float) -> TextSamples:
    handle: TextIO = open(path, encoding="utf-8", errors="replace")
    return TextSamples(handle, fs_hz)


def serial_lines(port: str, baud: int) -> Iterator[str]:
    """Lines from a serial port (pyserial): e.g. an AD8232 front-end on a microcontroller printing samples."""
    try:
        import serial  # pyserial
    except ImportError as exc:
        raise RuntimeError("serial input needs pyserial: pip install pyserial") from exc
    with serial.Serial(port, baud, timeout=5) as conn:
        while True:
            raw = conn.readline()
            if raw:
                yield raw.decode("ascii", errors="replace")


def paced(source: SampleSource, speed: float | None) -> Iterator[np.ndarray]:
    """Chunks released no faster than ``speed`` x real time (None: as fast as they come)."""
    start = time.monotonic()
    sent = 0
    for chunk in source.chunks():
        if speed:
            due = start + sent / (source.fs_hz * speed)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sent += len(chunk)  # samples (rows: a multi-channel chunk is (n, channels))
        yield chunk
