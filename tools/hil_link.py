"""The host side of the hardware-in-the-loop protocol (docs/hil.md, firmware/core/pw_hil.h): paces raw ADC
samples into a device over a serial line in numbered batches, at real time or faster, and collects what it
answers: beat lines, acknowledgements, counters. Every line carries an XOR checksum (``*HH``); a device
line with a wrong one is counted, not trusted.

Flow control: at most ``window`` batches are unacknowledged at any time, so a device whose receive buffer
holds ``window`` lines never loses bytes however fast the host may send (``--speed max``)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

log = logging.getLogger("pulsewire.hil")
TERMINAL = "ADCITE"  # the one reply every host line gets
LINE_MAX = 399  # longest line the device accepts, checksum included (PW_HIL_LINE - 1 in pw_hil.h)


class HilError(RuntimeError):
    """The device did not speak the protocol (no answer, wrong version): the message says what to check."""


class SerialPort(Protocol):
    """What pyserial's Serial offers and the link uses."""

    timeout: float | None

    def write(self, data: bytes) -> int | None: ...

    def read(self, size: int = 1) -> bytes: ...

    @property
    def in_waiting(self) -> int: ...


def checksum(text: str) -> str:
    x = 0
    for b in text.encode("ascii"):
        x ^= b
    return f"{x:02X}"


def with_checksum(text: str) -> bytes:
    return f"{text}*{checksum(text)}\n".encode("ascii")


def strip_checksum(line: str) -> str | None:
    """The line without its ``*HH``; None if the checksum is missing or wrong."""
    if len(line) < 3 or line[-3] != "*" or checksum(line[:-3]) != line[-2:].upper():
        return None
    return line[:-3]


def batch_line(x: np.ndarray, first: int, batch: int, hex_lines: bool) -> tuple[str, int]:
    """The S (decimal) or X (hex) line for samples from ``first``: up to ``batch`` of them, fewer if the line
    with its checksum would be longer than the device accepts. Returns the line and its sample count."""
    n = min(batch, x.size - first)
    while True:
        chunk = x[first:first + n]
        body = (f"X {first} " + "".join(f"{int(v) & 0xFFFF:04X}" for v in chunk) if hex_lines
                else f"S {first} " + " ".join(str(int(v)) for v in chunk))
        if len(body) + 3 <= LINE_MAX or n == 1:
            return body, n
        n -= 1


@dataclass(frozen=True)
class DeviceBeat:
    n: int                  # beat number on the device
    sample: int             # R-peak sample index
    cls: int
    logits: tuple[int, ...]
    arrived_s: float        # host clock (time.monotonic) when its line arrived
    samples_acked: int      # samples the device had taken when it sent the beat (its next acknowledgement)
    inputs: bytes | None = None  # its int8 model inputs (wave, then RR) when the device echoes them (`R 1`)


@dataclass
class HilSession:
    """Everything the device said during one run."""

    info: dict[str, str]
    beats: list[DeviceBeat] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)     # E lines
    comments: list[str] = field(default_factory=list)   # # lines
    bad_checksums: int = 0
    foreign_lines: int = 0  # lines without a checksum (boot messages, logs): ignored
    malformed_lines: int = 0  # checksummed lines that do not parse
    batches_sent: int = 0
    sent_at: list[tuple[int, int, float]] = field(default_factory=list)  # (first sample, count, host time)
    samples_acked: int = 0
    seconds: float = 0.0


class HilLink:
    def __init__(self, port: SerialPort, reply_timeout_s: float = 10.0) -> None:
        self.port = port
        self.reply_timeout_s = reply_timeout_s
        self._buf = b""
        self._pending_beats: list[tuple[int, int, int, tuple[int, ...], float]] = []
        self._pending_inputs: dict[int, bytes] = {}

    # ---- lines ----
    def _send(self, text: str) -> None:
        self.port.write(with_checksum(text))

    def _read_line(self, deadline: float) -> str | None:
        """The next complete line before ``deadline`` (host monotonic clock), or None."""
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.port.timeout = min(left, 0.05)
            self._buf += self.port.read(max(1, min(self.port.in_waiting, 4096)))
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("ascii", "replace").rstrip("\r")

    def _handle(self, raw: str, session: HilSession | None) -> str | None:
        """Parses one device line; returns it (checksum stripped) if it is a terminal reply."""
        if not raw.strip():
            return None
        line = strip_checksum(raw)
        if line is None:
            if len(raw) >= 3 and raw[-3] == "*":
                if session is not None:
                    session.bad_checksums += 1
                log.warning("device line with a bad checksum: %r", raw[:80])
            else:  # no checksum at all: the board's own log output on a shared console (ESP-IDF), not ours
                if session is not None:
                    session.foreign_lines += 1
                log.debug("console line outside the protocol: %r", raw[:80])
            return None
        try:
            return self._parse(line, session)
        except (ValueError, IndexError):  # a checksummed line that does not parse: a firmware bug, not noise
            if session is not None:
                session.malformed_lines += 1
            log.warning("malformed device line: %r", line[:80])
            return None

    def _parse(self, line: str, session: HilSession | None) -> str | None:
        kind = line[0]
        if kind == "B" and session is not None:
            f = line.split()
            self._pending_beats.append((int(f[1]), int(f[2]), int(f[3]), tuple(int(v) for v in f[4:]),
                                        time.monotonic()))
            return None
        if kind == "W" and session is not None:
            f = line.split()
            self._pending_inputs[int(f[1])] = bytes.fromhex(f[2])
            return None
        if kind == "#":
            if session is not None:
                session.comments.append(line)
            return None
        if kind in TERMINAL:
            if session is not None:
                if kind in "AD" or line.startswith("E dup") or line.startswith("E bad"):
                    session.samples_acked = int(line.split()[-1])
                    for n, sample, cls, logits, t in self._pending_beats:
                        session.beats.append(DeviceBeat(n, sample, cls, logits, t, session.samples_acked,
                                                        self._pending_inputs.pop(n, None)))
                    self._pending_beats.clear()
                    self._pending_inputs.clear()
                if kind == "E":
                    session.errors.append(line)
            return line
        log.warning("unknown device line %r", line[:80])
        return None

    def _request(self, text: str, session: HilSession | None = None, expect: str = TERMINAL) -> str:
        self._send(text)
        deadline = time.monotonic() + self.reply_timeout_s
        while True:
            raw = self._read_line(deadline)
            if raw is None:
                raise HilError(f"no answer to {text!r} within {self.reply_timeout_s:g} s: is the device running "
                               "the pulsewire HIL firmware, on this port, at this baud rate?")
            reply = self._handle(raw, session)
            if reply is not None and reply[0] in expect:
                return reply

    # ---- commands ----
    def hello(self, echo: bool = False) -> dict[str, str]:
        """Resets the device's stream and returns its I line as a dict (fs, gain, window, classes, model...);
        ``echo``: the device also sends each beat's int8 inputs. Retries every 0.5 s for the reply timeout: a
        pty or a USB-serial adapter may drop the first bytes after the port opens, an ESP32 reboots."""
        self.port.write(b"\n")
        for _ in range(max(1, int(self.reply_timeout_s / 0.5))):
            self._send("R 1" if echo else "R")
            deadline = time.monotonic() + 0.5
            while (raw := self._read_line(deadline)) is not None:
                reply = self._handle(raw, None)
                if reply is not None and reply.startswith("I pulsewire-hil "):
                    fields = reply.split()
                    if fields[2] != "1":
                        raise HilError(f"device speaks HIL protocol version {fields[2]}; this host speaks 1")
                    return dict(f.split("=", 1) for f in fields[3:] if "=" in f)
        raise HilError(f"the device did not answer `R` with an `I pulsewire-hil` line within {self.reply_timeout_s:g} s: "
                       "check the port, the baud rate and that the board runs the HIL firmware (docs/hil.md)")

    def selftest(self) -> tuple[bool, str]:
        reply = self._request("T", expect="TE")
        return reply.startswith("T ok"), reply

    def stream(self, samples: np.ndarray, fs_hz: float, speed: float | None, batch: int, window: int,
               info: dict[str, str], hex_lines: bool = False) -> HilSession:
        """Sends ``samples`` (integers the device's ADC would give) in batches of ``batch``; a batch leaves when
        its last sample is due at ``speed`` times real time (None: as fast as the window allows); then flushes
        and reads the counters."""
        session = HilSession(info=info)
        x = np.asarray(samples, np.int64)
        if x.min(initial=0) < -32768 or x.max(initial=0) > 32767:
            raise ValueError("the protocol carries 16-bit samples")
        outstanding = 0
        start = time.monotonic()
        last_reply = start
        i = 0
        pending: tuple[str, int] | None = None  # the next line and its sample count
        while i < x.size or outstanding:
            now = time.monotonic()
            if i < x.size and pending is None:
                pending = batch_line(x, i, batch, hex_lines)
            due = start + (i + pending[1]) / fs_hz / speed if speed and pending else now
            if pending and outstanding < window and now >= due:
                body, n = pending
                if outstanding == 0:
                    last_reply = now  # the reply timeout runs from the oldest unanswered line
                self._send(body)
                session.sent_at.append((i, n, time.monotonic()))
                session.batches_sent += 1
                outstanding += 1
                i += n
                pending = None
                continue
            wait_until = due if pending and outstanding < window else now + 0.05
            raw = self._read_line(max(wait_until, now + 0.001))
            if raw is None:
                if outstanding and time.monotonic() - last_reply > self.reply_timeout_s:
                    raise HilError(f"the device stopped acknowledging batches at sample {session.samples_acked} "
                                   f"({outstanding} outstanding for {self.reply_timeout_s:g} s)")
                continue
            if self._handle(raw, session) is not None:
                outstanding -= 1
                last_reply = time.monotonic()
        self._request("F", session, expect="D")
        reply = self._request("Q", session, expect="C")
        session.counters = {k: int(v) for k, v in (f.split("=", 1) for f in reply.split()[1:])}
        session.seconds = time.monotonic() - start
        return session
