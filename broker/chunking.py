"""Splitting messages into CHUNK frames that fit a small MQTT buffer, and putting them back together.

An ESP32 with a 4 KB MQTT buffer cannot take a 20 KB model in one publish. Reassembly tolerates
duplicates and any order (QoS 1 redelivers), and bounds memory: a flood of first chunks from devices
that never finish cannot exhaust the aggregator.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from broker.wire import CHUNK_HEADER, HEADER, MAX_BODY_BYTES, Header, Kind, WireError, frame_message, decode_header

log = logging.getLogger(__name__)


def split_message(message: bytes, message_id: int, chunk_size: int) -> list[bytes]:
    """CHUNK frames of at most ``chunk_size`` bytes each (header included) carrying ``message``."""
    inner, _ = decode_header(message, allow_signed=True)  # a signed message travels in chunks as it is
    room = chunk_size - HEADER.size - CHUNK_HEADER.size
    if room < 1:
        raise ValueError(f"chunk_size {chunk_size} leaves no room for data (overhead "
                         f"{HEADER.size + CHUNK_HEADER.size} bytes)")
    pieces = [message[i:i + room] for i in range(0, len(message), room)]
    if len(pieces) > 0xFFFF:
        raise ValueError(f"{len(pieces)} chunks exceed the u16 count; raise chunk_size")
    header = Header(Kind.CHUNK, inner.fleet_id, inner.round, inner.device_id)
    return [frame_message(header, CHUNK_HEADER.pack(message_id, i, len(pieces)) + piece)
            for i, piece in enumerate(pieces)]


@dataclass
class _Pending:
    count: int
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0
    first_seen: float = 0.0


class Reassembler:
    """Feed CHUNK frames; get each complete inner message back exactly once."""

    def __init__(self, max_pending: int = 256, max_age_s: float = 300.0, clock=time.monotonic) -> None:
        self._pending: OrderedDict[tuple[int, int, int], _Pending] = OrderedDict()
        self._done: OrderedDict[tuple[int, int, int], None] = OrderedDict()
        self._max_pending = max_pending
        self._max_age_s = max_age_s
        self._clock = clock
        self.dropped = 0  # incomplete messages evicted for age or room

    def feed(self, frame: bytes) -> bytes | None:
        """The inner message when ``frame`` completes it, else None. Raises WireError on bad frames."""
        header, body = decode_header(frame)
        if header.kind != Kind.CHUNK:
            raise WireError("bad_kind", f"expected CHUNK, got {header.kind.name}")
        if len(body) < CHUNK_HEADER.size:
            raise WireError("truncated", "chunk body shorter than its chunk header")
        message_id, index, count = CHUNK_HEADER.unpack_from(body)
        if count == 0 or index >= count:
            raise WireError("bad_chunk", f"chunk {index} of {count}")
        key = (header.fleet_id, header.device_id, message_id)
        if key in self._done:
            return None  # a redelivered chunk of a message already handed out
        self._expire()
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(count=count, first_seen=self._clock())
            while len(self._pending) > self._max_pending:
                self._pending.popitem(last=False)
                self.dropped += 1
        if pending.count != count:
            raise WireError("bad_chunk", f"chunk count changed from {pending.count} to {count}")
        piece = body[CHUNK_HEADER.size:]
        if index not in pending.parts:
            pending.size += len(piece)
            if pending.size > MAX_BODY_BYTES + HEADER.size:
                del self._pending[key]
                raise WireError("oversized", "reassembled message exceeds the size limit")
            pending.parts[index] = piece
        if len(pending.parts) < count:
            return None
        del self._pending[key]
        self._done[key] = None
        while len(self._done) > 4 * self._max_pending:
            self._done.popitem(last=False)
        return b"".join(pending.parts[i] for i in range(count))

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, p in self._pending.items() if now - p.first_seen > self._max_age_s]:
            del self._pending[key]
            self.dropped += 1
            log.warning("dropped incomplete chunked message %s after %.0f s", key, self._max_age_s)
