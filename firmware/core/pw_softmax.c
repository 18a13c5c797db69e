/* SOFTMAX int8 -> int8: TFLite reference_ops::Softmax (the kernel TFLite-Micro runs and LiteRT's
 * BUILTIN_REF resolver picks), with gemmlowp's fixed-point exp and reciprocal written out in C99.
 *
 * Fixed-point formats (Qm.n = m integer bits): scaled differences are Q5.26, exp results Q0.31, the sum of
 * exps Q12.19 (up to 4096 terms without overflow), the reciprocal Newton-Raphson runs in Q2.29. */
#include "pw_fixedpoint.h"
#include "pw_kernels.h"

#define PW_SCALED_DIFF_INT_BITS 5
#define PW_ACCUM_INT_BITS 12

/* Q0.31 product (gemmlowp FixedPoint<int32, 0> operator*). */
static int32_t q_mul(int32_t a, int32_t b) { return pw_sat_rounding_doubling_high_mul(a, b); }

/* exp(a) for a in [-1/4, 0), a in Q0.31: Taylor expansion around -1/8 (gemmlowp
 * exp_on_interval_between_negative_one_quarter_and_0_excl). Additions wrap as gemmlowp's int32 adds. */
static int32_t exp_quarter(int32_t a) {
    const int32_t constant_term = 1895147668;    /* exp(-1/8) in Q0.31 */
    const int32_t constant_1_over_3 = 715827883; /* 1/3 */
    const int32_t x = (int32_t)((uint32_t)a + (1u << 28)); /* a + 1/8 */
    const int32_t x2 = q_mul(x, x), x3 = q_mul(x2, x), x4 = q_mul(x2, x2);
    const int32_t x4_over_4 = pw_rounding_divide_by_pot(x4, 2);
    const int32_t poly = pw_rounding_divide_by_pot(
        (int32_t)((uint32_t)q_mul((int32_t)((uint32_t)x4_over_4 + (uint32_t)x3), constant_1_over_3) + (uint32_t)x2), 1);
    return (int32_t)((uint32_t)constant_term + (uint32_t)q_mul(constant_term, (int32_t)((uint32_t)x + (uint32_t)poly)));
}

/* exp(a) for a <= 0 in Q5.26, result Q0.31 (gemmlowp exp_on_negative_values): exp of a mod 1/4 times a
 * barrel of exp(-2^k) constants for the bits of the rest. */
static int32_t exp_on_negative_values(int32_t a) {
    const int frac_bits = 31 - PW_SCALED_DIFF_INT_BITS; /* 26 */
    const int32_t one_quarter = 1 << (frac_bits - 2);
    const int32_t mask = one_quarter - 1;
    const int32_t a_mod_quarter_minus_quarter = (int32_t)((uint32_t)(a & mask) - (uint32_t)one_quarter);
    int32_t result = exp_quarter(pw_sat_shift_left(a_mod_quarter_minus_quarter, PW_SCALED_DIFF_INT_BITS));
    const int32_t remainder = (int32_t)((uint32_t)a_mod_quarter_minus_quarter - (uint32_t)a);
    /* exp(-2^k) in Q0.31 for k = -2 .. 4 (k < PW_SCALED_DIFF_INT_BITS) */
    static const int32_t barrel[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    for (int k = -2; k <= 4; k++) {
        if (remainder & (1 << (frac_bits + k))) result = q_mul(result, barrel[k + 2]);
    }
    return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + x) for x in [0, 1) in Q0.31 (gemmlowp one_over_one_plus_x_for_x_in_0_1). */
static int32_t one_over_one_plus_x(int32_t a) {
    /* half_denominator = (a + 1) / 2, rounded (gemmlowp RoundingHalfSum) */
    const int64_t sum = (int64_t)a + INT32_MAX;
    const int32_t half_den = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    const int32_t c48_17 = 1515870810, cneg32_17 = -1010580540; /* 48/17, -32/17 in Q2.29 */
    int32_t x = (int32_t)((uint32_t)c48_17 + (uint32_t)q_mul(half_den, cneg32_17));
    for (int i = 0; i < 3; i++) {
        const int32_t hd_x = q_mul(half_den, x);                                /* Q2.29 */
        const int32_t one_minus = (int32_t)((uint32_t)(1 << 29) - (uint32_t)hd_x); /* Q2.29 */
        x = (int32_t)((uint32_t)x + (uint32_t)pw_sat_shift_left(q_mul(x, one_minus), 2)); /* Q4.27 -> Q2.29 */
    }
    return pw_sat_shift_left(x, 1); /* x / 2 in Q1.30 read as Q0.31 */
}

static int32_t reciprocal(int32_t x, int x_int_bits, int *num_bits_over_unit) {
    const int headroom_plus_one = pw_count_leading_zeros((uint32_t)x);
    *num_bits_over_unit = x_int_bits - headroom_plus_one;
    const int32_t shifted_minus_one = (int32_t)(((uint32_t)x << headroom_plus_one) - (1u << 31));
    return one_over_one_plus_x(shifted_minus_one);
}

static int32_t scaled_diff(int32_t diff, const pw_softmax_params_t *p) {
    /* MultiplyByQuantizedMultiplierGreaterThanOne */
    return pw_sat_rounding_doubling_high_mul((int32_t)((uint32_t)diff << p->input_left_shift), p->input_multiplier);
}

pw_status_t pw_softmax_s8(const pw_softmax_params_t *p, const int8_t *input, int8_t *output) {
    if (!p || !input || !output || p->depth == 0) return PW_ERR_ARG;
    for (uint32_t r = 0; r < p->rows; r++) {
        const int8_t *in = input + (long)r * p->depth;
        int8_t *out = output + (long)r * p->depth;
        int32_t max_in = INT8_MIN;
        for (uint32_t c = 0; c < p->depth; c++) if (in[c] > max_in) max_in = in[c];
        int32_t sum_of_exps = 0; /* Q12.19 */
        for (uint32_t c = 0; c < p->depth; c++) {
            const int32_t diff = (int32_t)in[c] - max_in;
            if (diff >= p->diff_min) {
                const int32_t e = exp_on_negative_values(scaled_diff(diff, p));
                sum_of_exps += pw_rounding_divide_by_pot(e, PW_ACCUM_INT_BITS);
            }
        }
        int num_bits_over_unit;
        const int32_t shifted_scale = reciprocal(sum_of_exps, PW_ACCUM_INT_BITS, &num_bits_over_unit);
        for (uint32_t c = 0; c < p->depth; c++) {
            const int32_t diff = (int32_t)in[c] - max_in;
            if (diff >= p->diff_min) {
                const int32_t e = exp_on_negative_values(scaled_diff(diff, p));
                const int32_t unsat = pw_rounding_divide_by_pot(q_mul(shifted_scale, e), num_bits_over_unit + 31 - 8);
                out[c] = (int8_t)pw_clamp_i32(unsat + INT8_MIN, INT8_MIN, INT8_MAX);
            } else {
                out[c] = INT8_MIN;
            }
        }
    }
    return PW_OK;
}
