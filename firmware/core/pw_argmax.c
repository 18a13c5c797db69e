/* The class of a beat: index of the largest int8 output (the first one on ties, as numpy's argmax). */
#include "pw_kernels.h"

uint16_t pw_argmax_s8(const int8_t *values, uint16_t n) {
    uint16_t best = 0;
    for (uint16_t i = 1; i < n; i++) {
        if (values[i] > values[best]) best = i;
    }
    return best;
}
