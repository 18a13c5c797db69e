/* QUANTIZE int8 -> int8: TFLite reference_ops::Requantize. */
#include "pw_fixedpoint.h"
#include "pw_kernels.h"

pw_status_t pw_requantize_s8(const pw_requantize_params_t *p, const int8_t *input, int8_t *output) {
    if (!p || !input || !output) return PW_ERR_ARG;
    for (uint32_t i = 0; i < p->size; i++) {
        const int32_t v = pw_mul_by_quantized_multiplier((int32_t)input[i] - p->in_zp, p->multiplier, p->shift);
        output[i] = (int8_t)pw_clamp_i32(v + p->out_zp, INT8_MIN, INT8_MAX);
    }
    return PW_OK;
}
