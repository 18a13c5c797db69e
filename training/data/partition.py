"""Federated partitions: which training beats live on which simulated device."""
from __future__ import annotations

import numpy as np


def partition_by_patient(records: np.ndarray) -> list[np.ndarray]:
    """One device per record: the natural non-IID split (each patient has their own rhythm mix)."""
    return [np.flatnonzero(records == r) for r in np.unique(records)]


def partition_iid(n: int, n_devices: int, seed: int) -> list[np.ndarray]:
    """Beats shuffled and dealt evenly: the optimistic baseline."""
    if n_devices < 1 or n_devices > n:
        raise ValueError(f"need 1 <= n_devices <= {n}, got {n_devices}")
    idx = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(idx, n_devices)]


def partition_dirichlet(labels: np.ndarray, n_devices: int, alpha: float, seed: int,
                        min_size: int = 10, max_tries: int = 100) -> list[np.ndarray]:
    """Label skew: each class is spread over devices with Dirichlet(alpha) proportions.

    Small alpha (0.1) gives devices dominated by one class; large alpha approaches IID. Draws are
    repeated until every device holds at least ``min_size`` beats.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if n_devices < 1 or n_devices * min_size > labels.size:
        raise ValueError(f"cannot give {n_devices} devices {min_size} beats each from {labels.size}")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_devices)]
        for cls in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_devices, alpha))) * idx.size).astype(int)[:-1]
            for dev, chunk in enumerate(np.split(idx, cuts)):
                parts[dev].append(chunk)
        devices = [np.sort(np.concatenate(p)) for p in parts]
        if min(d.size for d in devices) >= min_size:
            return devices
    raise ValueError(f"Dirichlet(alpha={alpha}) left a device under {min_size} beats in {max_tries} draws; "
                     "raise alpha or lower the device count")
