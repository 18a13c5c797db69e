"""What a simulated fleet does: one frozen configuration, validated where it is built (the CLI's flags)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FleetSimConfig:
    """A fleet of light devices. Rates are fleet-wide; workers share them in proportion to their devices.

    ``churn_online_s``/``churn_offline_s``: mean seconds a device stays connected / away (exponential);
    None keeps every device connected for the whole run (the bench's "held" setting).
    ``slow_fraction`` of devices upload at ``slow_link_bytes_per_s`` (a BLE-through-phone or NB-IoT link),
    which delays each of their messages by its size over that rate.
    ``round_every_s`` > 0 starts a transport round that often: ``round_devices`` connected devices each
    publish one int8 update of ``update_shapes`` (the classifier head by default: 32 x 5 + 5).
    ``aggregator_key`` (the raw Ed25519 public key of a real aggregator, ``tools.fleet_sim.aggregator_rounds``):
    every device subscribes to the global models and answers the rounds that select it
    (``tools.fleet_sim.round_member``); ``dropout`` of the selected devices leave instead of answering (the
    wearer walks out of range: offline for ``churn_offline_s``). ``overtime_s``: how long past ``duration_s``
    the devices may keep running until the coordinator stops them (the aggregator's last round).
    """

    broker_url: str
    fleet: str = "sim"
    devices: int = 1000
    workers: int = 2
    status_every_s: float = 60.0
    alerts_per_second: float = 5.0
    duration_s: float = 60.0
    connect_rate: float = 500.0  # new connections per second, fleet-wide (a reconnect storm has no limit)
    churn_online_s: float | None = None
    churn_offline_s: float = 30.0
    slow_fraction: float = 0.0
    slow_link_bytes_per_s: float = 2000.0
    round_every_s: float = 0.0
    round_devices: int = 0
    update_shapes: tuple[tuple[int, ...], ...] = ((32, 5), (5,))
    keepalive_s: int = 120
    seed: int = 0
    first_device: int = 0  # index of this fleet's first device (several simulators on one broker)
    aggregator_key: bytes | None = None
    dropout: float = 0.0
    overtime_s: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.devices < 1:
            problems.append("--devices must be at least 1")
        if not 1 <= self.workers <= 64:
            problems.append("--workers must be 1..64")
        if self.devices / self.workers > 15000:
            problems.append("more than 15,000 devices per worker would exceed the 20,000 file descriptors of a "
                            "process: raise --workers")
        if self.status_every_s <= 0 or self.duration_s <= 0 or self.connect_rate <= 0:
            problems.append("--status-every, --duration and --connect-rate must be > 0")
        if self.alerts_per_second < 0 or self.round_every_s < 0 or self.round_devices < 0:
            problems.append("--alerts-per-second, --round-every and --round-devices must be >= 0")
        if self.round_devices > self.devices:
            problems.append("--round-devices cannot exceed --devices")
        if self.churn_online_s is not None and (self.churn_online_s <= 0 or self.churn_offline_s <= 0):
            problems.append("churn times must be > 0 seconds")
        if not 0 <= self.slow_fraction <= 1 or self.slow_link_bytes_per_s <= 0:
            problems.append("--slow-fraction must be in [0, 1] and --slow-link-bps > 0")
        if not 0 <= self.dropout < 1 or self.overtime_s < 0:
            problems.append("--dropout must be in [0, 1)")
        if problems:
            raise ValueError("; ".join(problems))

    def worker_share(self, worker: int) -> range:
        """The device indices worker ``worker`` runs: contiguous blocks, sizes differing by at most one."""
        base, rest = divmod(self.devices, self.workers)
        start = worker * base + min(worker, rest)
        return range(start, start + base + (1 if worker < rest else 0))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["aggregator_key"] = self.aggregator_key.hex() if self.aggregator_key else None
        return out
