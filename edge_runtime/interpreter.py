"""Loading a TFLite interpreter on whatever the device has: LiteRT, tflite-runtime, or TensorFlow."""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


class InterpreterUnavailable(RuntimeError):
    """No TFLite interpreter is installed; the message names the package to install."""


def _litert() -> tuple[Any, Any]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter, OpResolverType


def _tflite_runtime() -> tuple[Any, Any]:  # the 2023 package: works only with numpy < 2
    from tflite_runtime.interpreter import Interpreter, OpResolverType  # type: ignore

    return Interpreter, OpResolverType


def _tensorflow() -> tuple[Any, Any]:  # only where TensorFlow is installed anyway
    import tensorflow as tf

    return tf.lite.Interpreter, tf.lite.experimental.OpResolverType


#: Tried in this order; the first that imports wins.
_BACKENDS: tuple[tuple[str, Callable[[], tuple[Any, Any]]], ...] = (
    ("ai-edge-litert", _litert),
    ("tflite-runtime", _tflite_runtime),
    ("tensorflow", _tensorflow),
)


def available_backend() -> str:
    """The name of the interpreter package ``make_interpreter`` would use."""
    errors = []
    for name, load in _BACKENDS:
        try:
            load()
            return name
        except (ImportError, AttributeError) as exc:
            errors.append(f"{name}: {exc}")
    raise InterpreterUnavailable("no TFLite interpreter found; `pip install ai-edge-litert` "
                                 f"(tried: {'; '.join(errors)})")


def make_interpreter(model_content: bytes, reference_kernels: bool = True, preserve_all_tensors: bool = False) -> Any:
    """A ready (tensors allocated) interpreter for the flatbuffer ``model_content``.

    ``reference_kernels`` disables the default XNNPACK delegate, whose int8 arithmetic differs from
    TFLite-Micro by one LSB on a few percent of outputs. What remains are LiteRT's builtin kernels: they agree
    with TFLite-Micro (and the generated C code) on every op but FULLY_CONNECTED, whose requantization rounds
    ties differently (1 LSB at the logits on about 0.1-1 % of beats; firmware/README.md has the measurements).
    A beat costs tens of microseconds either way.
    ``preserve_all_tensors`` keeps intermediate activations readable (personalization reads the hidden layer).
    """
    errors = []
    for name, load in _BACKENDS:
        try:
            interpreter_cls, resolver_types = load()
        except (ImportError, AttributeError) as exc:
            errors.append(f"{name}: {exc}")
            continue
        resolver = (resolver_types.BUILTIN_WITHOUT_DEFAULT_DELEGATES if reference_kernels
                    else resolver_types.AUTO)
        interp = interpreter_cls(model_content=model_content, experimental_op_resolver_type=resolver,
                                 experimental_preserve_all_tensors=preserve_all_tensors)
        interp.allocate_tensors()
        log.debug("TFLite interpreter from %s", name)
        return interp
    raise InterpreterUnavailable(
        "no TFLite interpreter found; install one with `pip install ai-edge-litert` "
        f"(tried: {'; '.join(errors)})"
    )
