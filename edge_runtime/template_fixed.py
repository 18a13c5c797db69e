"""The integer arithmetic of the template features and of their int8 quantization, written once here and
once in C (firmware/core/pw_template.c) so a device computes the same int8 model inputs bit for bit.

Floating point cannot be shared: numpy sums in another order than a C loop, ``log`` and ``sqrt`` differ in
the last bit between libms, and a Cortex-M4 has no double-precision unit. So the features are defined on
integers: the beat window in 1/64 R amplitudes (``WAVE_FRAC_BITS``), the template with 8 more fractional
bits, sums in 64 bits, a floor square root, a base-2 logarithm by repeated squaring, rounding half away
from zero; each feature is a Q16 integer (its float value is exactly ``q16 / 2**16``), and its int8 model
input comes from Q16 constants (training mean, 1 / (std * input scale), clip) in integers too.
"""
from __future__ import annotations

import math

import numpy as np

from edge_runtime.int8_io import round_half_away

WAVE_FRAC_BITS = 6  # the template sees the beat window in 1/64 R amplitudes
TEMPLATE_EXTRA_BITS = 8  # the running template keeps 8 more fractional bits
Q16 = 1 << 16
LN2_Q16 = 45426  # round(ln 2 * 2^16)
ENERGY_EPS_Q12 = 4  # 1e-3 R amplitude^2 (the float design's guard) in Q12, rounded
CLIP_SIGMAS = 6.0  # inputs are clipped at 6 training standard deviations (rr_features.standardise_rr)


def div_round(num: int, den: int) -> int:
    """round(num / den) for den > 0, ties away from zero (pw_div_round in firmware/core/pw_biquad.h)."""
    return (num + den // 2) // den if num >= 0 else -((-num + den // 2) // den)


def wave_fixed(wave: np.ndarray) -> np.ndarray:
    """A beat window in R amplitudes -> int64 in 1/64 R amplitudes, rounded half away from zero."""
    x = np.asarray(wave, np.float64) * (1 << WAVE_FRAC_BITS)
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


def log2_q16(x: int) -> int:
    """floor(2^16 log2(max(x, 1))) up to the last bit of 16 squarings of a Q30 mantissa (exact in integers)."""
    x = max(int(x), 1)
    e = x.bit_length() - 1
    m = x >> (e - 30) if e >= 30 else x << (30 - e)  # mantissa in [2^30, 2^31)
    frac = 0
    for bit in range(15, -1, -1):
        m = (m * m) >> 30
        if m >= 1 << 31:
            m >>= 1
            frac |= 1 << bit
    return (e << 16) | frac


def ln_ratio_q16(num: int, den: int) -> int:
    """ln(num / den) in Q16 through the integer base-2 logarithm."""
    return div_round((log2_q16(num) - log2_q16(den)) * LN2_Q16, Q16)


def corr_q16(a: np.ndarray, b: np.ndarray) -> int:
    """Pearson correlation of integer vectors in Q16 (0 when either is flat), clamped to [-1, 1]:
    cov / (isqrt(var_a) * isqrt(var_b)) with n-scaled integer moments."""
    n = a.size
    sa, sb = int(a.sum()), int(b.sum())
    cov = n * int(np.dot(a, b)) - sa * sb
    den = math.isqrt(n * int(np.dot(a, a)) - sa * sa) * math.isqrt(n * int(np.dot(b, b)) - sb * sb)
    if den == 0:
        return 0
    return max(-Q16, min(Q16, div_round(cov * Q16, den)))


def width_log2_q16(v: np.ndarray) -> int:
    """log2 of the area over the peak of |v| (a smooth QRS width, in samples), Q16."""
    mag = np.abs(v)
    return log2_q16(int(mag.sum())) - log2_q16(int(mag.max()))


def quant_constants(mean: float, std: float, scale: float) -> tuple[int, int, int]:
    """(mean in Q16, 1 / (std * scale) in Q16, clip in int8 steps) of one model input feature, from the
    float32 training statistics and the int8 input scale (the C front-end's constants)."""
    return (round_half_away(float(np.float32(mean)) * Q16),
            round_half_away(Q16 / (float(np.float32(std)) * scale)),
            round_half_away(CLIP_SIGMAS / scale))


def div_round_array(num: np.ndarray, den: int) -> np.ndarray:
    """``div_round`` elementwise on int64 arrays."""
    num = np.asarray(num, np.int64)
    return np.sign(num) * ((np.abs(num) + den // 2) // den)


def quantize_q16(values_q16: np.ndarray, consts: tuple[int, int, int], zero_point: int) -> np.ndarray:
    """Q16 features -> their int8 model inputs: (value - mean) / (std * scale), clipped, plus the zero point
    (pw_template_quantize in C). The difference is clamped first so the product stays within 64 bits."""
    mean_q16, inv_q16, clip = consts
    lim = ((clip + 1) << 32) // inv_q16
    z = np.clip(np.asarray(values_q16, np.int64) - mean_q16, -lim, lim)
    q = np.clip(div_round_array(z * inv_q16, 1 << 32), -clip, clip)
    return np.clip(q + zero_point, -128, 127).astype(np.int8)


def quantize_fixed_columns(features: np.ndarray, quantized: np.ndarray, columns: list[int], mean: np.ndarray,
                           std: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``quantized`` (float-path int8 inputs) with the ``columns`` of integer-defined features re-quantized
    in integers from their exact Q16 values: the int8 inputs a device computes."""
    out = quantized.copy()
    for c in columns:
        q16 = np.rint(np.asarray(features[:, c], np.float64) * Q16).astype(np.int64)  # exact: q16 / 2^16
        out[:, c] = quantize_q16(q16, quant_constants(mean[c], std[c], scale), zero_point)
    return out
