/* FULLY_CONNECTED int8: TFLite reference_integer_ops::FullyConnected (per tensor) and
 * FullyConnectedPerChannel (one multiplier per output), with the fixed-point rounding of TFLite-Micro or of
 * LiteRT's optimized kernels (pw_fc_rounding_t in pw_kernels.h; LiteRT's double-precision reference
 * rounding is pw_fully_connected_ideal.c, so that double arithmetic is linked only where it is used). Accumulator: in_depth terms of at most 255 * 255 (the filter
 * zero point may be non-zero in per-tensor models), < 2^31 for in_depth < 33,000 (checked by the
 * generator). */
#include "pw_dot.h"
#include "pw_fixedpoint.h"
#include "pw_kernels.h"

static int32_t requantize(const pw_fc_params_t *p, int32_t acc, int q) {
    switch (p->rounding) {
    case PW_FC_ROUND_LITERT_OPT: {
        const int shift = p->rq.shift[q];
        const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
        const int32_t high = pw_sat_rounding_doubling_high_mul((int32_t)((uint32_t)acc << left), p->rq.multiplier[q]);
        if (right == 0) return high;
        return (int32_t)(((int64_t)high + (1ll << (right - 1))) >> right); /* ties toward +infinity */
    }
    default:
        return pw_mul_by_quantized_multiplier(acc, p->rq.multiplier[q], p->rq.shift[q]);
    }
}

pw_status_t pw_fully_connected_s8(const pw_fc_params_t *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output) {
    if (!p || !input || !filter || !output) return PW_ERR_ARG;
    if (p->rq.n != p->out_depth && p->rq.n != 1) return PW_ERR_SHAPE;
    if (p->rounding == PW_FC_ROUND_LITERT_REF) return PW_ERR_ARG; /* that one is pw_fully_connected_ideal_s8 */
    const int32_t in_offset = -p->in_zp, filter_offset = -p->filter_zp;
    for (int b = 0; b < p->batches; b++) {
        const int8_t *in = input + (long)b * p->in_depth;
        for (int o = 0; o < p->out_depth; o++) {
            const int8_t *w = filter + (long)o * p->in_depth;
            int32_t acc;
            if (filter_offset == 0) { /* symmetric weights (per-channel models always) */
                acc = pw_dot_s8(w, in, p->in_depth, in_offset);
            } else {
                acc = 0;
                for (int d = 0; d < p->in_depth; d++) acc += ((int32_t)w[d] + filter_offset) * ((int32_t)in[d] + in_offset);
            }
            if (bias) acc += bias[o];
            acc = requantize(p, acc, p->rq.n == 1 ? 0 : o) + p->out_zp;
            output[(long)b * p->out_depth + o] = (int8_t)pw_clamp_i32(acc, p->act_min, p->act_max);
        }
    }
    return PW_OK;
}
