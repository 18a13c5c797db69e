/* Fixed-point arithmetic of TFLite's int8 reference kernels (tensorflow/lite/kernels/internal/common.h and
 * gemmlowp/fixedpoint), rewritten in C99 so the generated model rounds exactly as TFLite-Micro does.
 *
 * A real multiplier M (e.g. input_scale * filter_scale / output_scale) is stored as a Q0.31 integer m in
 * [2^30, 2^31) and a power-of-two shift s, M = m * 2^(s - 31). Applying it rounds twice, as the reference
 * does (TFLITE_SINGLE_ROUNDING off, the default): once in the doubling high multiply (round half away
 * from zero) and once in the rounding right shift (round half away from zero). */
#ifndef PW_FIXEDPOINT_H
#define PW_FIXEDPOINT_H

#include <stdint.h>

/* (a * b * 2) >> 32 with rounding; the one overflow case (INT32_MIN * INT32_MIN) saturates. */
static inline int32_t pw_sat_rounding_doubling_high_mul(int32_t a, int32_t b) {
    if (a == b && a == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1ll << 30) : (1 - (1ll << 30));
    /* C99 division truncates toward zero, like the reference's int64 division */
    return (int32_t)((ab + nudge) / (1ll << 31));
}

/* x / 2^exponent rounded half away from zero (exponent 0..31). */
static inline int32_t pw_rounding_divide_by_pot(int32_t x, int exponent) {
    const int32_t mask = (int32_t)((1ll << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    /* arithmetic right shift of a negative value: implementation-defined in C99, arithmetic on every
     * compiler this core targets (gcc, clang, arm-none-eabi-gcc, xtensa-gcc) */
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * m * 2^(shift - 31), TFLite's MultiplyByQuantizedMultiplier. A left shift wraps as the reference's
 * int32 multiply does on two's-complement machines (defined here by going through uint32_t). */
static inline int32_t pw_mul_by_quantized_multiplier(int32_t x, int32_t m, int shift) {
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    const int32_t shifted = (int32_t)((uint32_t)x << left);
    return pw_rounding_divide_by_pot(pw_sat_rounding_doubling_high_mul(shifted, m), right);
}

static inline int32_t pw_clamp_i32(int32_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

/* gemmlowp SaturatingRoundingMultiplyByPOT<exponent> for exponent > 0: a saturating left shift. */
static inline int32_t pw_sat_shift_left(int32_t x, int exponent) {
    const int32_t threshold = (int32_t)((1u << (31 - exponent)) - 1u);
    if (x > threshold) return INT32_MAX;
    if (x < -threshold) return INT32_MIN;
    return (int32_t)((uint32_t)x << exponent);
}

static inline int pw_count_leading_zeros(uint32_t x) {
    int n = 0;
    if (x == 0) return 32;
    while (!(x & 0x80000000u)) { x <<= 1; n++; }
    return n;
}

#endif
