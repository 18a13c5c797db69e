"""Bit-exactness of a generated model: the same int8 inputs through the generated C (host gcc or a
Cortex-M4 under QEMU) and through the reference interpreters, compared output byte by output byte."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.codegen import toolchain
from training.codegen.emit import GeneratedModel, generate_c, write_sources
from training.codegen.references import BACKENDS, model_io, run_reference

#: which interpreter each FC rounding mode is meant to match
TARGET_OF_ROUNDING = {"tflm": "tflm", "litert": "litert_builtin", "litert_ref": "litert_ref"}


@dataclass(frozen=True)
class Agreement:
    beats: int
    identical: dict[str, int]        # backend -> beats whose every output byte is identical
    max_abs_diff: dict[str, int]     # backend -> largest |difference| in LSB

    def to_dict(self) -> dict:
        return {"beats": self.beats, "identical_beats": self.identical, "max_abs_diff_lsb": self.max_abs_diff}


def agreement(c_outputs: list[np.ndarray], refs: dict[str, list[np.ndarray]]) -> Agreement:
    beats = len(c_outputs[0])
    same, diff = {}, {}
    for name, outs in refs.items():
        ok = np.ones(beats, bool)
        worst = 0
        for c, r in zip(c_outputs, outs):
            d = np.abs(c.astype(np.int32) - r.astype(np.int32)).reshape(beats, -1)
            ok &= (d == 0).all(axis=1)
            worst = max(worst, int(d.max()))
        same[name], diff[name] = int(ok.sum()), worst
    return Agreement(beats, same, diff)


def generate_into(model: bytes, out_dir: Path, fc_rounding: str = "tflm") -> GeneratedModel:
    gen = generate_c(model, fc_rounding=fc_rounding)
    write_sources(gen, out_dir)
    return gen


def run_generated_host(model: bytes, inputs: list[np.ndarray], workdir: Path, fc_rounding: str = "tflm"
                       ) -> tuple[GeneratedModel, list[np.ndarray], Path]:
    """Generate, build with the host gcc, run on every beat; returns (generated, outputs, executable)."""
    workdir = Path(workdir)
    gen_dir = workdir / f"gen_{fc_rounding}"
    gen = generate_into(model, gen_dir, fc_rounding)
    exe = toolchain.build_host(gen_dir, gen.kernels, workdir / f"run_model_{fc_rounding}")
    beats = toolchain.write_inputs(workdir / "inputs.bin", inputs)
    toolchain.run_host(exe, workdir / "inputs.bin", workdir / f"outputs_{fc_rounding}.bin")
    _, outs = model_io(model)
    return gen, split_outputs(workdir / f"outputs_{fc_rounding}.bin", beats, outs), exe


def split_outputs(path: Path, beats: int, outs: list[tuple[int, tuple[int, ...]]]) -> list[np.ndarray]:
    raw = np.fromfile(path, np.int8).reshape(beats, -1)
    result, col = [], 0
    for _, shape in outs:
        n = int(np.prod(shape[1:]))
        result.append(raw[:, col:col + n].reshape((beats,) + tuple(shape[1:])))
        col += n
    return result


def reference_outputs(model: bytes, inputs: list[np.ndarray], backends: tuple[str, ...] = BACKENDS
                      ) -> dict[str, list[np.ndarray]]:
    return {b: run_reference(model, inputs, b) for b in backends}
