/* DEPTHWISE_CONV_2D int8, per-channel: TFLite reference_integer_ops::DepthwiseConvPerChannel. Output
 * channel oc = ic * depth_multiplier + m reads input channel ic only. Accumulator bound as in pw_conv2d.c
 * with k_h * k_w terms. */
#include "pw_fixedpoint.h"
#include "pw_kernels.h"

pw_status_t pw_depthwise_conv2d_s8(const pw_conv_params_t *p, uint16_t depth_multiplier, const int8_t *input,
                                   const int8_t *filter, const int32_t *bias, int8_t *output) {
    if (!p || !input || !filter || !output || depth_multiplier == 0) return PW_ERR_ARG;
    if (p->out_c != p->in_c * depth_multiplier || (p->rq.n != p->out_c && p->rq.n != 1)) return PW_ERR_SHAPE;
    const int32_t in_offset = -p->in_zp;
    for (int b = 0; b < p->batches; b++) {
        for (int oy = 0; oy < p->out_h; oy++) {
            const int y0 = oy * p->stride_h - p->pad_h;
            for (int ox = 0; ox < p->out_w; ox++) {
                const int x0 = ox * p->stride_w - p->pad_w;
                for (int ic = 0; ic < p->in_c; ic++) {
                    for (int m = 0; m < depth_multiplier; m++) {
                        const int oc = ic * depth_multiplier + m;
                        int32_t acc = 0;
                        for (int ky = 0; ky < p->k_h; ky++) {
                            const int iy = y0 + p->dilation_h * ky;
                            if (iy < 0 || iy >= p->in_h) continue;
                            for (int kx = 0; kx < p->k_w; kx++) {
                                const int ix = x0 + p->dilation_w * kx;
                                if (ix < 0 || ix >= p->in_w) continue;
                                const int32_t in = input[(((long)b * p->in_h + iy) * p->in_w + ix) * p->in_c + ic];
                                const int32_t w = filter[((long)ky * p->k_w + kx) * p->out_c + oc];
                                acc += w * (in + in_offset);
                            }
                        }
                        if (bias) acc += bias[oc];
                        const int q = p->rq.n == 1 ? 0 : oc;
                        acc = pw_mul_by_quantized_multiplier(acc, p->rq.multiplier[q], p->rq.shift[q]) + p->out_zp;
                        output[(((long)b * p->out_h + oy) * p->out_w + ox) * p->out_c + oc] =
                            (int8_t)pw_clamp_i32(acc, p->act_min, p->act_max);
                    }
                }
            }
        }
    }
    return PW_OK;
}
