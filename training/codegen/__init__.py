"""The firmware generator: an int8 ``.tflite`` becomes C99 source for the pulsewire C core.

``generate_c(model_bytes)`` reads the flatbuffer (``reader``), lowers every operator to one call into the
int8 kernels of ``firmware/core`` with its quantization parameters computed here once (``lower``, same
formulas as TFLite's Prepare), plans one static activation arena by tensor liveness (``arena``), and writes
``<prefix>.h`` / ``<prefix>.c`` (``emit``). An operator or option the kernels do not cover raises
``UnsupportedModel`` naming it and what to do.
"""
from training.codegen.emit import GENERATOR_VERSION, GeneratedModel, generate_c, write_sources
from training.codegen.lower import UnsupportedModel

__all__ = ["GENERATOR_VERSION", "GeneratedModel", "UnsupportedModel", "generate_c", "write_sources"]
