"""Size and cost of a Keras beat classifier, counted from its layers (no profiler guesses)."""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np


@dataclass(frozen=True)
class ModelStats:
    parameters: int
    macs_per_beat: int
    #: Largest (input + output) int8 activation bytes of one layer: a lower bound on the arena any
    #: interpreter needs; the TFLite-Micro arena itself is measured by the optimization stage.
    peak_activation_bytes: int


def _elements(shape) -> int:
    return int(np.prod([d for d in shape if d is not None]))


def model_stats(model: keras.Model) -> ModelStats:
    macs = 0
    peak = 0
    for layer in model.layers:
        in_shapes = layer.input if isinstance(layer.input, list) else [layer.input]
        in_elems = sum(_elements(t.shape) for t in in_shapes)
        out_elems = _elements(layer.output.shape)
        if isinstance(layer, keras.layers.Conv1D):
            length, filters = layer.output.shape[1], layer.output.shape[2]
            cin = layer.input.shape[-1]
            macs += length * filters * cin * layer.kernel_size[0]
        elif isinstance(layer, keras.layers.Dense):
            macs += layer.input.shape[-1] * layer.units
        if not isinstance(layer, keras.layers.InputLayer):
            peak = max(peak, in_elems + out_elems)
    return ModelStats(parameters=int(model.count_params()), macs_per_beat=int(macs), peak_activation_bytes=peak)
