/* MEAN int8 over one contiguous run of axes: TFLite reference_ops::QuantizedMeanOrSum. TFLite-Micro and
 * both LiteRT resolvers take this path even when input and output share scale and zero point (measured on
 * a QAT export whose MEAN keeps its quantization: the truncating integer mean matched 0 % of beats, this
 * one 100 %).
 *
 * The requantizing path folds 1/reduce into the multiplier at generation time, exactly as the reference
 * does at run time (multiplier << s / reduce, shift - s, s = floor(log2(reduce)) clamped), so p->multiplier
 * and p->shift are already the adjusted ones. |sum| <= 255 * reduce fits int32 for reduce < 8 million. */
#include "pw_fixedpoint.h"
#include "pw_kernels.h"

pw_status_t pw_mean_s8(const pw_mean_params_t *p, const int8_t *input, int8_t *output) {
    if (!p || !input || !output || p->reduce == 0) return PW_ERR_ARG;
    for (uint32_t o = 0; o < p->outer; o++) {
        for (uint32_t i = 0; i < p->inner; i++) {
            int32_t sum = 0;
            const int8_t *in = input + (long)o * p->reduce * p->inner + i;
            for (uint32_t r = 0; r < p->reduce; r++) sum += in[(long)r * p->inner];
            const int32_t shifted = sum - p->in_zp * (int32_t)p->reduce;
            const int32_t v = pw_mul_by_quantized_multiplier(shifted, p->multiplier, p->shift) + p->out_zp;
            output[(long)o * p->inner + i] = (int8_t)pw_clamp_i32(v, INT8_MIN, INT8_MAX);
        }
    }
    return PW_OK;
}
