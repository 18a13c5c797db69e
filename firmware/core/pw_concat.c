/* CONCATENATION int8 with shared quantization: TFLite reference_ops::Concatenation, a strided copy. */
#include <string.h>

#include "pw_kernels.h"

pw_status_t pw_concat_s8(const pw_concat_params_t *p, const int8_t *const *inputs, int8_t *output) {
    if (!p || !inputs || !output || p->n == 0 || p->n > PW_CONCAT_MAX_INPUTS) return PW_ERR_ARG;
    for (uint32_t o = 0; o < p->outer; o++) {
        for (int i = 0; i < p->n; i++) {
            memcpy(output, inputs[i] + (long)o * p->copy_bytes[i], p->copy_bytes[i]);
            output += p->copy_bytes[i];
        }
    }
    return PW_OK;
}
