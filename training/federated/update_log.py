"""The aggregator's append-only log of accepted updates, fsynced in batches.

Why: a full checkpoint fsynced per accepted update made the aggregator's cost per update grow with the
checkpoint and bound it by the disk's fsync rate (a few hundred per second). Here an accepted update is one
appended record (the message bytes as they arrived, after chunk reassembly, signature included), and the
file is fsynced once per ``fsync_every`` records or ``fsync_interval_s`` seconds, whichever comes first.

The durability rule, which the aggregator keeps: an update's MQTT acknowledgement is sent only after the
fsync that covers its record (``sync`` returns how many records it made durable; the caller acks that many
of its held messages). So a crash (SIGKILL, power loss) can lose only records that were not yet fsynced,
and those were not yet acknowledged: the broker redelivers them to the persistent session. An acknowledged
update is never lost. What a crash costs: at most one batch of redeliveries, and a torn last record, which
``open`` detects by its length and CRC-32 and cuts off.

A record: u32 length, u32 CRC-32 of the body, body = u16 device-name length, the name (UTF-8), u32 round,
the message bytes. Replaying the log (``records``) re-runs each message through the same screen, so
recovery is the last checkpoint (the round's start) plus the log of that round.
"""
from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")
_HEAD = struct.Struct("<H")
_ROUND = struct.Struct("<I")


@dataclass(frozen=True)
class LogPolicy:
    """When appended records are fsynced: after ``fsync_every`` records or ``fsync_interval_s`` seconds."""

    fsync_every: int = 256
    fsync_interval_s: float = 0.02

    def __post_init__(self) -> None:
        if self.fsync_every < 1 or not 0 <= self.fsync_interval_s <= 10:
            raise ValueError("fsync_every must be >= 1 and fsync_interval_s in [0, 10] seconds")


@dataclass(frozen=True)
class LogRecord:
    offset: int
    device: str
    round: int
    payload: bytes
    #: Where the next record starts.
    end: int


class UpdateLog:
    """One round's log file. ``append`` buffers, ``sync`` makes the buffered records durable."""

    def __init__(self, path: Path, policy: LogPolicy | None = None) -> None:
        self.path = Path(path)
        self.policy = policy or LogPolicy()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._end = self._valid_end()
        self._file = open(self.path, "ab")
        self._pending = 0
        self._oldest = 0.0
        self.records_synced = 0
        self.fsyncs = 0

    def _valid_end(self) -> int:
        """The length of the intact prefix; a torn tail (crash mid-write) is cut off."""
        if not self.path.exists():
            return 0
        end = 0
        for rec in scan(self.path):
            end = rec.end
        size = self.path.stat().st_size
        if end < size:
            log.warning("%s: cutting a torn tail of %d byte(s) (a crash during an append)", self.path, size - end)
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
        return end

    def records(self) -> list[LogRecord]:
        """Every intact record, in the order appended (what recovery replays)."""
        self._file.flush()
        return list(scan(self.path))

    def read(self, offset: int) -> LogRecord:
        """The record at ``offset`` (an outlier to subtract from the running sum)."""
        self._file.flush()
        return read_record(self.path, offset)

    def append(self, device: str, round_: int, payload: bytes) -> int:
        """Buffer one record; returns its offset. Not durable until ``sync``."""
        name = device.encode("utf-8")
        body = _HEAD.pack(len(name)) + name + _ROUND.pack(round_) + payload
        offset = self._end
        self._file.write(_FRAME.pack(len(body), zlib.crc32(body)) + body)
        self._end += _FRAME.size + len(body)
        if self._pending == 0:
            self._oldest = time.monotonic()
        self._pending += 1
        return offset

    @property
    def pending(self) -> int:
        return self._pending

    def due(self) -> bool:
        """True when the buffered records should be fsynced now (a full batch, or the oldest waited long enough)."""
        return self._pending > 0 and (self._pending >= self.policy.fsync_every
                                      or time.monotonic() - self._oldest >= self.policy.fsync_interval_s)

    def sync(self) -> int:
        """fsync the buffered records; returns how many became durable (the caller may now ack that many)."""
        if self._pending == 0:
            return 0
        self._file.flush()
        os.fsync(self._file.fileno())
        done, self._pending = self._pending, 0
        self.records_synced += done
        self.fsyncs += 1
        return done

    def close(self) -> None:
        self.sync()
        self._file.close()

    @property
    def size(self) -> int:
        return self._end


def scan(path: Path) -> Iterator[LogRecord]:
    """The intact records of a log file, read-only (a torn or damaged tail ends the scan)."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        body = data[pos + _FRAME.size:pos + _FRAME.size + length]
        if len(body) < length or zlib.crc32(body) != crc or length < _HEAD.size + _ROUND.size:
            return
        yield _record(pos, body)
        pos += _FRAME.size + length


def read_record(path: Path, offset: int) -> LogRecord:
    """The record at ``offset`` of a log file (ValueError if it is damaged)."""
    with open(path, "rb") as f:
        f.seek(offset)
        length, crc = _FRAME.unpack(f.read(_FRAME.size))
        body = f.read(length)
    if zlib.crc32(body) != crc:
        raise ValueError(f"{path}: record at {offset} is damaged")
    return _record(offset, body)


def _record(offset: int, body: bytes) -> LogRecord:
    (name_len,) = _HEAD.unpack_from(body, 0)
    name = body[_HEAD.size:_HEAD.size + name_len].decode("utf-8", "replace")
    (round_,) = _ROUND.unpack_from(body, _HEAD.size + name_len)
    return LogRecord(offset, name, round_, body[_HEAD.size + name_len + _ROUND.size:], offset + _FRAME.size + len(body))
