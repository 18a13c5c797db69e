"""The secure-aggregation part of a round plan (``local["secagg"]``): what every device needs to know before it
advertises its keys. Its own module because it travels in the (JSON) round plan, not as a SECAGG step body."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SecAggPlan:
    """The secure-aggregation settings of one round, carried in the round plan's ``local["secagg"]``.

    Devices clip their flattened update to L2 norm ``clip`` (when set), add N(0, noise_sd²) per coordinate
    (distributed DP; 0 without), clip each coordinate to ±``bound``, and encode round(x · ``scale``) mod 2^32;
    ``bound · scale · devices`` stays below 2^31 so that the sum decodes unambiguously.
    """

    session: int
    threshold: int
    devices: int
    bound: float
    scale: float
    clip: float | None = None
    noise_sd: float = 0.0
    #: SecAgg+: each device's neighbours on the round's masking graph (0: every other device).
    degree: int = 0
    #: Signatures over one survivor list a device needs before it unmasks (0: no consistency round).
    consistency: int = 0
    #: Device-side Poisson sampling: each device's update enters the sum with this probability, decided on the
    #: device with private randomness (otherwise it sends a masked zero with its noise); 1.0: always.
    sampling_rate: float = 1.0
    #: SecAgg+: the wire ids of the round's selection, the masking graph's vertices. Published in the signed
    #: round plan, so every device and the aggregator derive the same graph from public round data before
    #: anyone advertises (a selected device that never advertises is a dropout, not a change of graph).
    members: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (0 <= self.session < 2**64 and 2 <= self.threshold <= self.devices and self.bound > 0
                and self.scale > 0 and self.noise_sd >= 0 and (self.clip is None or self.clip > 0)
                and 0 <= self.degree < self.devices and 0 <= self.consistency <= self.devices
                and 0 < self.sampling_rate <= 1):
            raise ValueError(f"secure-aggregation plan out of range: {self}")
        if self.bound * self.scale * self.devices >= 2**31:
            raise ValueError("bound x scale x devices must stay below 2^31 for the sum to decode")
        if self.degree and (len(self.members) != self.devices or len(set(self.members)) != self.devices):
            raise ValueError("a SecAgg+ plan (degree > 0) lists its devices' distinct wire ids (members)")

    def to_dict(self) -> dict:
        return {**self.__dict__, "members": list(self.members)}

    @classmethod
    def from_dict(cls, d: dict) -> SecAggPlan:
        try:
            return cls(int(d["session"]), int(d["threshold"]), int(d["devices"]), float(d["bound"]),
                       float(d["scale"]), None if d.get("clip") is None else float(d["clip"]),
                       float(d.get("noise_sd", 0.0)), int(d.get("degree", 0)), int(d.get("consistency", 0)),
                       float(d.get("sampling_rate", 1.0)), tuple(int(m) for m in d.get("members", ())))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"secure-aggregation plan not understood: {exc}") from None
