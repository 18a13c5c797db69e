/* ADD int8 of two tensors of the same shape: TFLite reference_integer_ops::Add (AddElementwise). Both
 * inputs are moved to a common scale with 20 bits of headroom (left_shift), added, and requantized; the
 * multipliers are TFLite's Prepare values (each input / (2 * max input scale), and the output). */
#include "pw_fixedpoint.h"
#include "pw_kernels.h"

pw_status_t pw_add_s8(const pw_add_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output) {
    if (!p || !input1 || !input2 || !output) return PW_ERR_ARG;
    for (uint32_t i = 0; i < p->size; i++) {
        const int32_t a = (int32_t)((uint32_t)((int32_t)input1[i] - p->in1_zp) << p->left_shift);
        const int32_t b = (int32_t)((uint32_t)((int32_t)input2[i] - p->in2_zp) << p->left_shift);
        const int32_t sum = pw_mul_by_quantized_multiplier(a, p->in1_multiplier, p->in1_shift) +
                            pw_mul_by_quantized_multiplier(b, p->in2_multiplier, p->in2_shift);
        const int32_t v = pw_mul_by_quantized_multiplier(sum, p->out_multiplier, p->out_shift) + p->out_zp;
        output[i] = (int8_t)pw_clamp_i32(v, p->act_min, p->act_max);
    }
    return PW_OK;
}
