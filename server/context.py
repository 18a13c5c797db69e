"""What every web route needs, handed to the app once (no globals): store, live hub, throttle, settings."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable

from server.auth import LoginThrottle
from server.events import EventHub
from server.fleet_actions import FleetActions
from server.repository import Store


@dataclass
class WebContext:
    store: Store
    hub: EventHub
    fleet: str
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    session_lifetime: dt.timedelta = dt.timedelta(hours=12)
    #: Set the cookie's Secure flag (behind a TLS proxy); plain http on loopback needs it off.
    secure_cookies: bool = False
    #: Publishes a stored consent record on the bus (retained); None when the server has no bus.
    publish_consent: Callable[[str, bool, bool, int], None] | None = None
    #: Rollback and clinician labels, signed and published; None when the server has no bus.
    actions: FleetActions | None = None
