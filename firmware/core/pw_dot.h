/* The inner product of the convolution and fully connected kernels: sum of w[i] * (x[i] + x_offset).
 *
 * Reference loop first; on cores with the DSP extension (Cortex-M4/M7/M33: __ARM_FEATURE_DSP) four terms
 * at a time with SXTB16 / SXTAB16 (sign-extend byte pairs, adding the offset) and SMLAD (two 16x16
 * multiply-accumulates), as CMSIS-NN does. The products and the int32 sum are the same integers either way
 * (|w * (x + offset)| <= 127 * 255 fits the 16-bit lanes' product; the sum is bounded by the kernels'
 * accumulator argument), so both paths give identical results; the QEMU test compares the M4 build (this
 * path) with the host build (the reference loop) byte for byte. */
#ifndef PW_DOT_H
#define PW_DOT_H

#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#endif

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
static inline uint32_t pw_ror8(uint32_t v) { return (v >> 8) | (v << 24); } /* compiles to ROR (or SXTB16's rotate) */
#endif

static inline int32_t pw_dot_s8(const int8_t *w, const int8_t *x, int n, int32_t x_offset) {
    int32_t acc = 0;
    int i = 0;
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    /* x_offset is in [-127, 128] (minus an int8 zero point): it fits both 16-bit lanes */
    const uint32_t off2 = ((uint32_t)(uint16_t)(int16_t)x_offset) * 0x00010001u;
    for (; i + 4 <= n; i += 4) {
        uint32_t w4, x4;
        memcpy(&w4, w + i, 4); /* one unaligned word load on the M4 */
        memcpy(&x4, x + i, 4);
        const uint32_t w02 = __sxtb16(w4), w13 = __sxtb16(pw_ror8(w4));
        const uint32_t x02 = __sxtab16(off2, x4), x13 = __sxtab16(off2, pw_ror8(x4));
        acc = (int32_t)__smlad(w02, x02, (uint32_t)acc);
        acc = (int32_t)__smlad(w13, x13, (uint32_t)acc);
    }
#endif
    for (; i < n; i++) acc += (int32_t)w[i] * ((int32_t)x[i] + x_offset);
    return acc;
}

#endif
