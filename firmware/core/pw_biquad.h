/* Cascaded second-order IIR sections in fixed point, shared by the front-end's band-pass (pw_frontend.c,
 * 0.5-40 Hz) and the R-peak detector's QRS band-pass (pw_rpeak.c, 5-15 Hz): coefficients b0 b1 b2 a0 a1 a2
 * in Q30 (generated, a0 = 2^30), samples in any fixed-point format (the output has the input's), direct
 * form I with 64-bit histories and accumulators, each product rounded half away from zero to Q0. */
#ifndef PW_BIQUAD_H
#define PW_BIQUAD_H

#include <stdint.h>

typedef struct {
    int64_t x1, x2, y1, y2; /* the section's last two inputs and outputs */
} pw_biquad_t;

/* round(num / den) for den > 0, ties away from zero */
static inline int64_t pw_div_round(int64_t num, int64_t den) {
    return num >= 0 ? (num + den / 2) / den : -((-num + den / 2) / den);
}

/* The steady state of a constant input x (as scipy's sosfilt_zi * x[0]): each section's input and output
 * histories start at its DC response, so a signal with an offset starts without a transient. */
static inline void pw_biquad_start(pw_biquad_t *st, const int64_t (*c)[6], int sections, int64_t x) {
    for (int s = 0; s < sections; s++) {
        const int64_t num = c[s][0] + c[s][1] + c[s][2], den = c[s][3] + c[s][4] + c[s][5];
        const int64_t y = den ? pw_div_round(x * num, den) : 0;
        st[s].x1 = st[s].x2 = x;
        st[s].y1 = st[s].y2 = y;
        x = y;
    }
}

/* One sample through all sections. |x|, |y| < 2^28 (a 12-bit ADC in Q16, times the filter's gain) and
 * |c| < 2^31 keep the five products under 2^61.4. */
static inline int64_t pw_biquad_step(pw_biquad_t *st, const int64_t (*c)[6], int sections, int64_t x) {
    for (int s = 0; s < sections; s++) {
        const int64_t *k = c[s];
        const int64_t acc = k[0] * x + k[1] * st[s].x1 + k[2] * st[s].x2 - k[4] * st[s].y1 - k[5] * st[s].y2;
        const int64_t y = acc >= 0 ? (acc + (1ll << 29)) >> 30 : -((-acc + (1ll << 29)) >> 30);
        st[s].x2 = st[s].x1;
        st[s].x1 = x;
        st[s].y2 = st[s].y1;
        st[s].y1 = y;
        x = y;
    }
    return x;
}

#endif
