/* FULLY_CONNECTED int8 as LiteRT's reference kernels (OpResolverType.BUILTIN_REF) compute it: the int32
 * accumulator times input_scale * filter_scale / output_scale in double, rounded half away from zero
 * (TFLite's reference_integer_ops::FullyConnectedPerChannel with float scales), instead of the fixed-point
 * multiplier. Same signature as pw_fully_connected_s8; p->rounding is PW_FC_ROUND_LITERT_REF and
 * p->ideal_scale holds the rq.n effective scales. Costs the soft-float double routines on an M4. */
#include "pw_fixedpoint.h"
#include "pw_kernels.h"

/* round(v) with ties away from zero (std::round) without libm: a - trunc(a) is exact for |a| < 2^52. */
static int32_t round_half_away(double v) {
    double a = v < 0 ? -v : v;
    if (a > 2147483647.0) a = 2147483647.0; /* saturate: the clamp to int8 follows anyway */
    int64_t t = (int64_t)a;
    if (a - (double)t >= 0.5) t++;
    return (int32_t)(v < 0 ? -t : t);
}

pw_status_t pw_fully_connected_ideal_s8(const pw_fc_params_t *p, const int8_t *input, const int8_t *filter,
                                        const int32_t *bias, int8_t *output) {
    if (!p || !input || !filter || !output || !p->ideal_scale) return PW_ERR_ARG;
    if (p->rq.n != p->out_depth && p->rq.n != 1) return PW_ERR_SHAPE;
    const int32_t in_offset = -p->in_zp, filter_offset = -p->filter_zp;
    for (int b = 0; b < p->batches; b++) {
        const int8_t *in = input + (long)b * p->in_depth;
        for (int o = 0; o < p->out_depth; o++) {
            const int8_t *w = filter + (long)o * p->in_depth;
            int32_t acc = 0;
            for (int d = 0; d < p->in_depth; d++) acc += ((int32_t)w[d] + filter_offset) * ((int32_t)in[d] + in_offset);
            if (bias) acc += bias[o];
            acc = round_half_away((double)acc * p->ideal_scale[p->rq.n == 1 ? 0 : o]) + p->out_zp;
            output[(long)b * p->out_depth + o] = (int8_t)pw_clamp_i32(acc, p->act_min, p->act_max);
        }
    }
    return PW_OK;
}
