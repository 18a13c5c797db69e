"""The activation arena, planned at generation time by tensor liveness.

Tensors that only rename a buffer (RESHAPE, EXPAND_DIMS, SQUEEZE outputs) share their input's storage.
Every storage is live from the step that writes it (model inputs: before the first step) to the last step
that reads it (model outputs: after the last step); two storages whose lifetimes overlap never share
bytes, so a kernel's output never overlaps its inputs. Placement is greedy first-fit, largest first.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGN = 4


@dataclass(frozen=True)
class ArenaPlan:
    offsets: dict[int, int]     # tensor index -> byte offset (aliases included)
    size: int                   # arena bytes
    naive_size: int             # sum of all activation buffers (no reuse), for the report


def _root(t: int, aliases: dict[int, int]) -> int:
    while t in aliases:
        t = aliases[t]
    return t


def plan_arena(n_steps: int, step_io: list[tuple[list[int], list[int]]], graph_inputs: list[int],
               graph_outputs: list[int], nbytes: dict[int, int], aliases: dict[int, int]) -> ArenaPlan:
    """step_io: (inputs, outputs) tensor indices of each step, constants excluded."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    size: dict[int, int] = {}

    def touch(t: int, at: int) -> None:
        r = _root(t, aliases)
        first[r] = min(first.get(r, at), at)
        last[r] = max(last.get(r, at), at)
        size[r] = max(size.get(r, 0), nbytes[t])

    for t in graph_inputs:
        touch(t, -1)
    for k, (ins, outs) in enumerate(step_io):
        for t in ins + outs:
            touch(t, k)
    for t in graph_outputs:
        touch(t, n_steps)
    placed: list[tuple[int, int, int, int]] = []  # offset, end, first, last
    offsets: dict[int, int] = {}
    for r in sorted(size, key=lambda r: (-size[r], first[r])):
        conflicts = sorted((o, e) for o, e, f, l in placed if not (l < first[r] or last[r] < f))
        offset = 0
        for o, e in conflicts:
            if offset + size[r] <= o:
                break
            offset = max(offset, (e + ALIGN - 1) // ALIGN * ALIGN)
        placed.append((offset, offset + size[r], first[r], last[r]))
        offsets[r] = offset
    for t in nbytes:
        r = _root(t, aliases)
        if r in offsets:
            offsets[t] = offsets[r]
    total = max((e for _, e, _, _ in placed), default=0)
    return ArenaPlan(offsets, (total + ALIGN - 1) // ALIGN * ALIGN, sum(size.values()))
