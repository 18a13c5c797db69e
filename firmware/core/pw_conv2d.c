/* CONV_2D int8, per-channel: TFLite reference_integer_ops::ConvPerChannel (same sums, same order of the
 * requantization; the taps of a row are summed as one contiguous dot product, which integer addition allows).
 *
 * Why the int32 accumulator cannot overflow: each term is filter (|w| <= 127, symmetric int8 weights) times
 * (input - zero point) (|.| <= 255), at most 32,385; a pulsewire layer sums k_h * k_w * in_c <= 5 * 32 = 160
 * terms (the generator checks k_h * k_w * in_c <= 65,000, i.e. < 2^31 / 32,385), plus an int32 bias. */
#include "pw_dot.h"
#include "pw_fixedpoint.h"
#include "pw_kernels.h"

pw_status_t pw_conv2d_s8(const pw_conv_params_t *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                         int8_t *output) {
    if (!p || !input || !filter || !output) return PW_ERR_ARG;
    if (p->rq.n != p->out_c && p->rq.n != 1) return PW_ERR_SHAPE;
    const int32_t in_offset = -p->in_zp;
    for (int b = 0; b < p->batches; b++) {
        for (int oy = 0; oy < p->out_h; oy++) {
            const int y0 = oy * p->stride_h - p->pad_h;
            for (int ox = 0; ox < p->out_w; ox++) {
                const int x0 = ox * p->stride_w - p->pad_w;
                /* the filter taps that land inside the input (zero padding contributes nothing); with
                 * dilation 1 they and their input pixels are contiguous in NHWC: one dot product per row */
                int kx0 = 0, kx1 = p->k_w;
                if (p->dilation_w == 1) {
                    if (x0 < 0) kx0 = -x0;
                    if (x0 + kx1 > p->in_w) kx1 = p->in_w - x0;
                }
                int8_t *out = output + (((long)b * p->out_h + oy) * p->out_w + ox) * p->out_c;
                for (int oc = 0; oc < p->out_c; oc++) {
                    int32_t acc = 0;
                    for (int ky = 0; ky < p->k_h; ky++) {
                        const int iy = y0 + p->dilation_h * ky;
                        if (iy < 0 || iy >= p->in_h) continue;
                        const int8_t *in_row = input + ((long)b * p->in_h + iy) * p->in_w * p->in_c;
                        const int8_t *w_row = filter + ((long)oc * p->k_h + ky) * p->k_w * p->in_c;
                        if (p->dilation_w == 1) {
                            const int8_t *in = in_row + (long)(x0 + kx0) * p->in_c;
                            const int8_t *w = w_row + (long)kx0 * p->in_c;
                            acc += pw_dot_s8(w, in, (kx1 - kx0) * p->in_c, in_offset);
                            continue;
                        }
                        for (int kx = 0; kx < p->k_w; kx++) {
                            const int ix = x0 + p->dilation_w * kx;
                            if (ix < 0 || ix >= p->in_w) continue;
                            const int8_t *in = in_row + (long)ix * p->in_c;
                            const int8_t *w = w_row + (long)kx * p->in_c;
                            acc += pw_dot_s8(w, in, p->in_c, in_offset);
                        }
                    }
                    if (bias) acc += bias[oc];
                    const int q = p->rq.n == 1 ? 0 : oc;
                    acc = pw_mul_by_quantized_multiplier(acc, p->rq.multiplier[q], p->rq.shift[q]) + p->out_zp;
                    out[oc] = (int8_t)pw_clamp_i32(acc, p->act_min, p->act_max);
                }
            }
        }
    }
    return PW_OK;
}
