"""Rotated and rescaled copies of IMU windows: how the same activity looks with the phone worn a little differently.

Why: HAR errors are person-to-person (sitting vs standing is a tilt of the waist phone of 10-30 degrees whose
baseline differs between persons, and the CNN learned the 18 training persons' own tilts: validation macro F1 peaked
after 3-5 epochs). A copy of every training window turned by a small random rotation (the same rotation for the
accelerometer and the gyroscope, both are vectors in the phone's frame) and scaled by a random gain (sensor
calibration) teaches the model the orientation *differences* between activities rather than each person's
absolute orientation. Copies are made on the raw signals (g, rad/s), before the contract's standardisation, and
only for training windows; validation, test and the device never see them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImuAugment:
    """``copies`` extra copies per window, rotated about a random axis by up to ``max_degrees`` and scaled by a
    gain in [1 - ``gain``, 1 + ``gain``]. ``copies`` 0: none."""

    copies: int = 1
    max_degrees: float = 15.0
    gain: float = 0.1

    def __post_init__(self) -> None:
        if self.copies < 0 or not 0 <= self.max_degrees <= 180 or not 0 <= self.gain < 1:
            raise ValueError(f"{self}: copies >= 0, 0 <= max_degrees <= 180 and 0 <= gain < 1 required")


def rotations(n: int, max_degrees: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotation matrices (n, 3, 3): a uniform random axis, an angle uniform in ±max_degrees (Rodrigues)."""
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, n))
    k = np.zeros((n, 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k -= np.transpose(k, (0, 2, 1))
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3)[None] + s * k + (1 - c) * (k @ k)


def augment_windows(x: np.ndarray, spec: ImuAugment, rng: np.random.Generator) -> np.ndarray:
    """``x`` (n, window, 6: acc xyz, gyro xyz) followed by ``spec.copies`` rotated, rescaled copies of it,
    (n·(1 + copies), window, 6) in that order."""
    if x.ndim != 3 or x.shape[2] != 6:
        raise ValueError(f"IMU windows must be (n, window, 6), got {x.shape}")
    out = [x]
    for _ in range(spec.copies):
        rot = rotations(len(x), spec.max_degrees, rng).astype(np.float32)
        gain = rng.uniform(1 - spec.gain, 1 + spec.gain, (len(x), 1, 1)).astype(np.float32)
        acc = np.einsum("ntc,ndc->ntd", x[:, :, :3], rot) * gain
        gyro = np.einsum("ntc,ndc->ntd", x[:, :, 3:], rot) * gain
        out.append(np.concatenate([acc, gyro], axis=2).astype(x.dtype))
    return np.concatenate(out)
