"""The microcontroller check of an int8 model: does TFLite-Micro run it, how much arena does it need,
and are its outputs byte-for-byte those of LiteRT's reference kernels (no delegates)?

TFLite-Micro is the interpreter a Cortex-M runs; the ``tflite-micro`` package runs the same C++ code
from Python. Agreement with LiteRT's reference kernels is the contract the generated C code (firmware
issue) is held to as well.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.classifier import BeatClassifier


@dataclass(frozen=True)
class TflmReport:
    arena_bytes: int
    beats: int
    identical_outputs: int

    @property
    def all_identical(self) -> bool:
        return self.identical_outputs == self.beats

    def to_dict(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "beats": self.beats, "identical_outputs": self.identical_outputs,
                "all_identical": self.all_identical}


def _interpreter(model: bytes, arena: int):
    from tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=arena)


def arena_bytes(model: bytes, low: int = 512, high: int = 512 * 1024) -> int:
    """The smallest arena (bytes, to 16-byte granularity) in which TFLite-Micro allocates and runs the model."""
    def fits(size: int) -> bool:
        try:
            interp = _interpreter(model, size)
            interp.invoke()
            return True
        except (RuntimeError, ValueError):
            return False

    if not fits(high):
        raise RuntimeError(f"TFLite-Micro cannot run this model even with {high} bytes of arena "
                           "(an unsupported op, or a model too large for a microcontroller)")
    while high - low > 16:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    return high


def check_model(model: bytes, classifier: BeatClassifier, waves: np.ndarray, rr: np.ndarray) -> TflmReport:
    """Arena size, and the int8 outputs of TFLite-Micro against LiteRT (reference kernels) beat by beat."""
    arena = arena_bytes(model)
    # the comparison runs with room to spare: the search's last fitting size can leave kernels short of
    # scratch space without an error, which is a finding about the search, not about the arithmetic
    interp = _interpreter(model, max(2 * arena, 16 * 1024))
    ranks = [len(interp.get_input_details(i)["shape"]) for i in range(2)]
    wave_idx, rr_idx = ranks.index(3), ranks.index(2)
    qw, qr = classifier.quantize_inputs(waves, rr)
    reference = classifier.raw_outputs(waves, rr)
    same = 0
    for i in range(len(qw)):
        interp.set_input(qw[i][None, :, None], wave_idx)
        interp.set_input(qr[i][None, :], rr_idx)
        interp.invoke()
        same += int(np.array_equal(interp.get_output(0)[0], reference[i]))
    return TflmReport(arena, len(qw), same)
