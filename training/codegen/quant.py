"""Quantization parameters exactly as TFLite's Prepare functions compute them (quantization_util.cc,
kernel_util.cc), so that the generated constants are the ones TFLite-Micro would compute at start-up."""
from __future__ import annotations

import math

import numpy as np

from edge_runtime.int8_io import round_half_away

# fused activation codes of the TFLite schema
ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3
ACT_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


def quantize_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier: real = m * 2^(shift - 31) with m in [2^30, 2^31) (double rounding build)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_half_away(q * float(1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(q_fixed), int(shift)


def per_channel_multipliers(input_scale: float, filter_scales: np.ndarray, output_scale: float,
                            channels: int) -> tuple[list[int], list[int]]:
    """PopulateConvolutionQuantizationParams: input * filter / output per channel, in double."""
    scales = np.asarray(filter_scales, np.float32)
    if scales.size == 1:
        scales = np.repeat(scales, channels)
    mult, shift = [], []
    for s in scales:
        m, e = quantize_multiplier(float(np.float32(input_scale)) * float(s) / float(np.float32(output_scale)))
        mult.append(m)
        shift.append(e)
    return mult, shift


def per_tensor_multiplier(input_scale: float, filter_scale: float, output_scale: float) -> tuple[int, int]:
    """GetQuantizedConvolutionMultipler: the input * filter product is a float (float32) before the
    division in double."""
    product = float(np.float32(input_scale) * np.float32(filter_scale))
    return quantize_multiplier(product / float(np.float32(output_scale)))


def activation_range(activation: int, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8 (the quantized bounds computed in float32)."""
    def q(x: float) -> int:
        return int(zero_point) + round_half_away(float(np.float32(x) / np.float32(scale)))

    lo, hi = -128, 127
    if activation == ACT_NONE:
        return lo, hi
    if activation == ACT_RELU:
        return max(lo, q(0.0)), hi
    if activation == ACT_RELU6:
        return max(lo, q(0.0)), min(hi, q(6.0))
    if activation == ACT_RELU_N1_TO_1:
        return max(lo, q(-1.0)), min(hi, q(1.0))
    raise ValueError(ACT_NAMES.get(activation, str(activation)))


def padding_before(stride: int, dilation: int, in_size: int, filter_size: int, out_size: int) -> int:
    """ComputePaddingWithOffset: the padding before the first row/column (the odd one goes after)."""
    effective = (filter_size - 1) * dilation + 1
    total = max((out_size - 1) * stride + effective - in_size, 0)
    return total // 2


def softmax_params(beta: float, input_scale: float) -> tuple[int, int, int]:
    """PreprocessSoftmaxScaling + CalculateInputRadius with 5 integer bits for the scaled differences:
    (input_multiplier, input_left_shift, diff_min)."""
    int_bits = 5
    real = min(float(np.float32(beta)) * float(np.float32(input_scale)) * float(1 << (31 - int_bits)),
               float((1 << 31) - 1))
    mult, shift = quantize_multiplier(real)
    if shift < 0:
        raise ValueError("softmax input scale too small for the fixed-point reference")
    max_rescaled = 1.0 * ((1 << int_bits) - 1) * (1 << (31 - int_bits)) / (1 << shift)
    return mult, shift, -math.floor(max_rescaled)


def mean_multiplier(input_scale: float, output_scale: float, reduce: int) -> tuple[int, int]:
    """QuantizedMeanOrSum: input/output scale, then 1/reduce folded into the multiplier the way the
    reference does it at run time (shift by floor(log2 n), clamped to 32 and to 31 + shift)."""
    m, shift = quantize_multiplier(float(np.float32(input_scale)) / float(np.float32(output_scale)))
    s = reduce.bit_length() - 1
    s = min(s, 32, 31 + shift)
    return int((m << s) // reduce), shift - s
