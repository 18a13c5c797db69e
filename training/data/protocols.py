"""Evaluation protocols: which beats train, which select the model, which report results."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.beat_dataset import BeatDataset
from training.data.splits import DS1, DS2, NON_PACED

PROTOCOLS = ("inter", "intra")


@dataclass(frozen=True)
class Split:
    """Row indices into one BeatDataset; disjoint by construction (tests check it)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    description: str


def protocol_records(protocol: str) -> tuple[str, ...]:
    """Records a protocol needs loaded."""
    if protocol == "inter":
        return DS1 + DS2
    if protocol == "intra":
        return NON_PACED
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")


def validation_records(seed: int, min_s: int = 50, min_v: int = 200, min_records: int = 4,
                       max_share: float = 0.5) -> tuple[str, ...]:
    """Whole DS1 records held out for model selection, drawn by ``seed``.

    Beats of a held-out patient are never seen in training, so validation predicts the inter-patient
    result; random DS1 beats would share patients with training and make early stopping useless.
    Records are drawn until the held-out set has enough S and V beats to rank models by; a record is
    skipped if it would take more than ``max_share`` of DS1's S, V or F beats away from training
    (record 208 alone holds 373 of DS1's 415 F beats).
    """
    totals = np.sum(list(_DS1_SVF.values()), axis=0)
    order = np.random.default_rng(seed).permutation(len(DS1))
    chosen: list[str] = []
    held = np.zeros(3, int)
    for i in order:
        rec = DS1[i]
        if np.any(held + _DS1_SVF[rec] > max_share * totals):
            continue
        chosen.append(rec)
        held += _DS1_SVF[rec]
        if held[0] >= min_s and held[1] >= min_v and len(chosen) >= min_records:
            break
    return tuple(sorted(chosen))


# (S, V, F) beats per DS1 record, from the reference annotations (shared/data/mitdb/README.md).
_DS1_SVF: dict[str, tuple[int, int, int]] = {
    "101": (3, 0, 0), "106": (0, 520, 0), "108": (4, 17, 2), "109": (0, 38, 2), "112": (2, 0, 0),
    "114": (12, 43, 4), "115": (0, 0, 0), "116": (1, 109, 0), "118": (96, 16, 0), "119": (0, 444, 0),
    "122": (0, 0, 0), "124": (31, 47, 5), "201": (128, 198, 2), "203": (2, 444, 1), "205": (3, 71, 11),
    "207": (107, 210, 0), "208": (2, 992, 373), "209": (383, 1, 0), "215": (3, 164, 1), "220": (94, 0, 0),
    "223": (73, 473, 14), "230": (0, 1, 0),
}


def inter_patient_split(data: BeatDataset, seed: int) -> Split:
    """de Chazal 2004: train on DS1 minus held-out records, validate on those, test on DS2."""
    val_recs = validation_records(seed)
    in_ds1 = np.isin(data.record, DS1)
    is_val = np.isin(data.record, val_recs)
    return Split(
        train=np.flatnonzero(in_ds1 & ~is_val),
        val=np.flatnonzero(is_val),
        test=np.flatnonzero(np.isin(data.record, DS2)),
        description=f"inter-patient: DS1 train, DS1 records {','.join(val_recs)} validate, DS2 test",
    )


def intra_patient_split(data: BeatDataset, seed: int, test_fraction: float = 0.2,
                        val_fraction: float = 0.1) -> Split:
    """Stratified random beat split over the non-paced records (the optimistic, widely used protocol).

    Beats are drawn on MLII; a beat's rows on other leads (or perturbed copies) follow it into the same
    part, so no beat trains on one lead and tests on another."""
    rng = np.random.default_rng(seed)
    in_pool = np.isin(data.record, NON_PACED)
    pool = np.flatnonzero(in_pool & (data.lead == "MLII"))
    train, val, test = [], [], []
    for cls in np.unique(data.labels[pool]):
        idx = rng.permutation(pool[data.labels[pool] == cls])
        n_test = int(round(test_fraction * idx.size))
        n_val = int(round(val_fraction * idx.size))
        test.append(idx[:n_test])
        val.append(idx[n_test:n_test + n_val])
        train.append(idx[n_test + n_val:])
    parts = [np.sort(np.concatenate(p)) for p in (train, val, test)]
    followers = np.flatnonzero(in_pool & (data.lead != "MLII"))
    if followers.size:
        key = np.char.add(np.char.add(data.record.astype(str), ":"), data.sample.astype(str))
        part_of = {k: i for i, p in enumerate(parts) for k in key[p]}
        side = np.array([part_of.get(k, -1) for k in key[followers]])
        parts = [np.sort(np.concatenate([p, followers[side == i]])) for i, p in enumerate(parts)]
    return Split(
        train=parts[0],
        val=parts[1],
        test=parts[2],
        description=f"intra-patient: stratified random beats of 44 records, "
                    f"{1 - test_fraction - val_fraction:.0%}/{val_fraction:.0%}/{test_fraction:.0%}",
    )


def make_split(protocol: str, data: BeatDataset, seed: int) -> Split:
    if protocol == "inter":
        return inter_patient_split(data, seed)
    if protocol == "intra":
        return intra_patient_split(data, seed)
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")


def ds1_folds(seed: int, k: int, records: tuple[str, ...] = DS1) -> tuple[tuple[str, ...], ...]:
    """DS1 ``records`` in ``k`` disjoint folds of whole patients (leave-records-out cross-validation), drawn
    by ``seed``: records ordered by their S+V beats (in hundreds) with a seeded tie-break and dealt in snake
    order, so every fold holds some of DS1's ectopic-rich patients (at least ~500 S+V beats per fold for
    4 or 5 folds). S beats alone stay unbalanced (209 holds 383 of DS1's 944): the pooled report over all
    folds, not a single fold, is what a choice rests on."""
    unknown = set(records) - set(DS1)
    if unknown:
        raise ValueError(f"records {sorted(unknown)} are not DS1 records: cross-validation never sees DS2")
    if not 2 <= k <= len(records):
        raise ValueError(f"need 2 <= folds <= {len(records)} (the records), got {k}")
    jitter = np.random.default_rng(seed).permutation(len(records))
    order = sorted(range(len(records)), key=lambda i: (-(sum(_DS1_SVF[records[i]][:2]) // 100), jitter[i]))
    folds: list[list[str]] = [[] for _ in range(k)]
    for pos, i in enumerate(order):
        lap, step = divmod(pos, k)
        folds[step if lap % 2 == 0 else k - 1 - step].append(records[i])
    return tuple(tuple(sorted(f)) for f in folds)
