/* MAX_POOL_2D int8: TFLite reference_integer_ops::MaxPool. Padded positions are skipped (never count as
 * a value), the fused activation is a clamp. */
#include "pw_fixedpoint.h"
#include "pw_kernels.h"

pw_status_t pw_max_pool2d_s8(const pw_pool_params_t *p, const int8_t *input, int8_t *output) {
    if (!p || !input || !output) return PW_ERR_ARG;
    for (int b = 0; b < p->batches; b++) {
        for (int oy = 0; oy < p->out_h; oy++) {
            const int y0 = oy * p->stride_h - p->pad_h;
            const int ky0 = y0 < 0 ? -y0 : 0;
            const int ky1 = p->k_h < p->in_h - y0 ? p->k_h : p->in_h - y0;
            for (int ox = 0; ox < p->out_w; ox++) {
                const int x0 = ox * p->stride_w - p->pad_w;
                const int kx0 = x0 < 0 ? -x0 : 0;
                const int kx1 = p->k_w < p->in_w - x0 ? p->k_w : p->in_w - x0;
                for (int c = 0; c < p->channels; c++) {
                    int32_t m = INT8_MIN;
                    for (int ky = ky0; ky < ky1; ky++) {
                        for (int kx = kx0; kx < kx1; kx++) {
                            const int32_t v = input[(((long)b * p->in_h + y0 + ky) * p->in_w + x0 + kx) * p->channels + c];
                            if (v > m) m = v;
                        }
                    }
                    output[(((long)b * p->out_h + oy) * p->out_w + ox) * p->channels + c] =
                        (int8_t)pw_clamp_i32(m, p->act_min, p->act_max);
                }
            }
        }
    }
    return PW_OK;
}
