"""The microcontroller check of an int8 model: does TFLite-Micro run it, how much arena does it need,
and are its outputs byte-for-byte those of LiteRT without delegates?

TFLite-Micro is the interpreter a Cortex-M runs; the ``tflite-micro`` package runs the same C++ code from
Python. "LiteRT without delegates" is two things, and both are compared beat by beat:

- ``reference``: ``OpResolverType.BUILTIN_REF``, TFLite's reference kernels — the arithmetic TFLite-Micro
  and the firmware's generated C code implement. This is the exactness contract.
- ``builtin``: ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (no XNNPACK), what
  ``edge_runtime.classifier`` runs. Its optimized kernels send FULLY_CONNECTED and 1x1 convolutions through
  a GEMM (ruy) whose requantization computes the high product with a floor and rounds ties of the final
  shift towards +inf, where TFLite-Micro (gemmlowp) rounds ties away from zero. Measured tensor by tensor on
  the foundation export: the results differ only on negative ties, which a fused ReLU hides, so only the
  last layer (the logits, no ReLU) shows them — on about 1 % of beats, by one LSB.

Diagnosis for FULLY_CONNECTED under ``reference``: LiteRT's reference FULLY_CONNECTED requantizes with a
single rounding shift, TFLite-Micro's with gemmlowp's double rounding, so they differ on a few percent of
beats even at the hidden layer; ``training.optimize.deploy.conv_head`` exports the head as 1x1 CONV_2D,
whose reference kernel is the same in both.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from edge_runtime.classifier import BeatClassifier


@dataclass(frozen=True)
class TflmReport:
    arena_bytes: int
    beats: int
    #: beats whose TFLite-Micro output bytes equal LiteRT's without the default delegate (the classifier's)
    identical_outputs: int
    #: beats whose TFLite-Micro output bytes equal LiteRT's reference kernels (BUILTIN_REF)
    identical_reference: int = -1

    @property
    def all_identical(self) -> bool:
        return self.identical_outputs == self.beats

    @property
    def all_identical_reference(self) -> bool:
        return self.identical_reference == self.beats

    def to_dict(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "beats": self.beats, "identical_outputs": self.identical_outputs,
                "all_identical": self.all_identical, "identical_reference": self.identical_reference,
                "all_identical_reference": self.all_identical_reference}


def _interpreter(model: bytes, arena: int):
    from tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=arena)


@contextlib.contextmanager
def _silenced_c_output():
    """TFLite-Micro reports every failed allocation from C to fds 1 and 2; the search expects failures."""
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)


def arena_bytes(model: bytes, low: int = 512, high: int = 512 * 1024) -> int:
    """The smallest arena (bytes, to 16-byte granularity) in which TFLite-Micro allocates and runs the model."""
    def fits(size: int) -> bool:
        try:
            with _silenced_c_output():
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


def litert_reference_outputs(model: bytes, qwaves: np.ndarray, qrr: np.ndarray) -> np.ndarray:
    """Output bytes of LiteRT's reference kernels (``BUILTIN_REF``) for already-quantized inputs, batch 1."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    by_rank = {len(d["shape"]): d["index"] for d in interp.get_input_details()}
    out_index = interp.get_output_details()[0]["index"]
    rows = []
    for i in range(len(qwaves)):
        interp.set_tensor(by_rank[3], qwaves[i][None, :, None])
        interp.set_tensor(by_rank[2], qrr[i][None, :])
        interp.invoke()
        rows.append(interp.get_tensor(out_index)[0].copy())
    return np.asarray(rows)


def check_model(model: bytes, classifier: BeatClassifier, waves: np.ndarray, rr: np.ndarray) -> TflmReport:
    """Arena size, and the int8 outputs of TFLite-Micro against LiteRT (both resolvers) beat by beat."""
    arena = arena_bytes(model)
    # the comparison runs with room to spare: the search's last fitting size can leave kernels short of
    # scratch space without an error, which is a finding about the search, not about the arithmetic
    interp = _interpreter(model, max(2 * arena, 16 * 1024))
    ranks = [len(interp.get_input_details(i)["shape"]) for i in range(2)]
    wave_idx, rr_idx = ranks.index(3), ranks.index(2)
    qw, qr = classifier.quantize_inputs(waves, rr)
    builtin = classifier.raw_outputs(waves, rr)
    reference = litert_reference_outputs(model, qw, qr)
    same = same_ref = 0
    for i in range(len(qw)):
        interp.set_input(qw[i][None, :, None], wave_idx)
        interp.set_input(qr[i][None, :], rr_idx)
        interp.invoke()
        out = interp.get_output(0)[0]
        same += int(np.array_equal(out, builtin[i]))
        same_ref += int(np.array_equal(out, reference[i]))
    return TflmReport(arena, len(qw), same, same_ref)
