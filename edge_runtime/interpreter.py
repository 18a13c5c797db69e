"""Loading a TFLite interpreter on whatever the device has: LiteRT, tflite-runtime, or TensorFlow."""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class InterpreterUnavailable(RuntimeError):
    """No TFLite interpreter is installed; the message names the package to install."""


def make_interpreter(model_content: bytes, reference_kernels: bool = True) -> Any:
    """A ready (tensors allocated) interpreter for the flatbuffer ``model_content``.

    ``reference_kernels`` disables the default XNNPACK delegate: its int8 arithmetic differs from the
    TFLite reference kernels (and TFLite-Micro, and pulsewire's C code) by one LSB on a few percent of
    outputs, which would make device results unreproducible. A beat costs ~tens of microseconds either way.
    """
    errors = []
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if reference_kernels
                    else OpResolverType.AUTO)
        interp = Interpreter(model_content=model_content, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
        return interp
    except ImportError as exc:
        errors.append(f"ai-edge-litert: {exc}")
    try:  # the 2023 package: only works with numpy < 2 (ENVIRONMENT.md)
        from tflite_runtime.interpreter import Interpreter, OpResolverType  # type: ignore

        resolver = (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if reference_kernels
                    else OpResolverType.AUTO)
        interp = Interpreter(model_content=model_content, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
        return interp
    except (ImportError, AttributeError) as exc:
        errors.append(f"tflite-runtime: {exc}")
    try:
        import tensorflow as tf  # only where TensorFlow is installed anyway

        resolver = (tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if reference_kernels
                    else tf.lite.experimental.OpResolverType.AUTO)
        interp = tf.lite.Interpreter(model_content=model_content, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
        return interp
    except ImportError as exc:
        errors.append(f"tensorflow: {exc}")
    raise InterpreterUnavailable(
        "no TFLite interpreter found; install one with `pip install ai-edge-litert` "
        f"(tried: {'; '.join(errors)})"
    )
