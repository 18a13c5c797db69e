"""Live push: the ingest thread publishes what it just committed, every open SSE stream receives it.

Subscribers are asyncio queues living on the web server's loop; the ingest runs in its own thread, so
publishing hands items over with ``call_soon_threadsafe``. A client too slow to keep up loses the
oldest items (its page reloads lists from the REST API on reconnect), never the ingest's time.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any

QUEUE_SIZE = 2000


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = set()

    def subscribe(self) -> asyncio.Queue:
        """A queue of (kind, data) on the calling (running) loop."""
        q: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
        with self._lock:
            self._subs.add((asyncio.get_running_loop(), q))
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        with self._lock:
            self._subs = {(loop, sq) for loop, sq in self._subs if sq is not q}

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subs)
        for loop, q in subs:
            try:
                loop.call_soon_threadsafe(_offer, q, (kind, data))
            except RuntimeError:  # that loop has closed
                self.unsubscribe(q)


def _offer(q: asyncio.Queue, item: tuple[str, dict]) -> None:
    if q.full():
        q.get_nowait()
    q.put_nowait(item)
