/* Beat-versus-template features in integers: see pw_template.h. */
#include <string.h>

#include "pw_template.h"

#if PW_FE_TEMPLATE /* compiled in for a model with template features (pw_frontend_config.h) */
#include "pw_biquad.h"

#define Q16 65536
#define LN2_Q16 45426          /* round(ln 2 x 2^16) */
#define ENERGY_EPS_Q12 4       /* 1e-3 R amplitude^2 in Q12 */

void pw_template_init(pw_template_t *tp) { memset(tp, 0, sizeof *tp); }

static uint64_t isqrt64(uint64_t x) { /* floor(sqrt(x)), bit by bit */
    uint64_t r = 0, bit = 1ull << 62;
    while (bit > x) bit >>= 2;
    while (bit) {
        if (x >= r + bit) { x -= r + bit; r = (r >> 1) + bit; } else { r >>= 1; }
        bit >>= 2;
    }
    return r;
}

/* 2^16 log2(max(x, 1)): integer part from the top bit, 16 fraction bits by squaring a Q30 mantissa */
static int64_t log2_q16(uint64_t x) {
    if (x < 1) x = 1;
    int e = 63;
    while (!(x >> e)) e--;
    uint64_t m = e >= 30 ? x >> (e - 30) : x << (30 - e);
    int64_t frac = 0;
    for (int bit = 15; bit >= 0; bit--) {
        m = (m * m) >> 30; /* m < 2^31: the square fits */
        if (m >= (1ull << 31)) { m >>= 1; frac |= 1 << bit; }
    }
    return ((int64_t)e << 16) | frac;
}

static int64_t ln_ratio_q16(uint64_t num, uint64_t den) {
    return pw_div_round((log2_q16(num) - log2_q16(den)) * LN2_Q16, Q16);
}

static int64_t abs64(int64_t v) { return v < 0 ? -v : v; }

/* Pearson correlation of a[begin, end) with t[begin, end) in Q16, clamped to [-1, 1]; 0 if either is flat */
static int32_t corr_q16(const int16_t *a, const int32_t *t, int begin, int end) {
    int64_t sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
    const int64_t n = end - begin;
    for (int k = begin; k < end; k++) {
        sa += a[k]; sb += t[k];
        saa += (int64_t)a[k] * a[k]; sbb += (int64_t)t[k] * t[k]; sab += (int64_t)a[k] * t[k];
    }
    const int64_t cov = n * sab - sa * sb;
    const int64_t den = (int64_t)(isqrt64((uint64_t)(n * saa - sa * sa)) * isqrt64((uint64_t)(n * sbb - sb * sb)));
    if (den == 0) return 0;
    const int64_t c = pw_div_round(cov * Q16, den);
    return (int32_t)(c > Q16 ? Q16 : (c < -Q16 ? -Q16 : c));
}

/* log2 of the area over the peak of |v| on [begin, end), Q16 (t with its extra bits: the ratio cancels them) */
static int64_t width_log2_a(const int16_t *a, int begin, int end) {
    int64_t sum = 0, peak = 0;
    for (int k = begin; k < end; k++) { const int64_t m = abs64(a[k]); sum += m; if (m > peak) peak = m; }
    return log2_q16((uint64_t)sum) - log2_q16((uint64_t)peak);
}

static int64_t width_log2_t(const int32_t *t, int begin, int end) {
    int64_t sum = 0, peak = 0;
    for (int k = begin; k < end; k++) { const int64_t m = abs64(t[k]); sum += m; if (m > peak) peak = m; }
    return log2_q16((uint64_t)sum) - log2_q16((uint64_t)peak);
}

static void learn(pw_template_t *tp, const int16_t *a, int32_t corr_qrs) {
    if (corr_qrs >= PW_TM_ACCEPT_Q16 || tp->accepted == 0) {
        tp->accepted++;
        const int64_t rate = tp->accepted < PW_TM_BEATS ? tp->accepted : PW_TM_BEATS;
        for (int k = 0; k < PW_FE_WINDOW; k++) {
            const int64_t step = ((int64_t)a[k] << PW_TM_EXTRA_BITS) - tp->t[k];
            tp->t[k] += (int32_t)pw_div_round(step, rate);
        }
        tp->rejected = 0;
        return;
    }
    if (++tp->rejected >= PW_TM_RESTART) {
        for (int k = 0; k < PW_FE_WINDOW; k++) tp->t[k] = (int32_t)a[k] << PW_TM_EXTRA_BITS;
        tp->accepted = 1;
        tp->rejected = 0;
    }
}

void pw_template_features(pw_template_t *tp, const int16_t *a, int32_t *q16) {
    int32_t *t = tp->t;
    if (tp->accepted == 0) {
        for (int k = 0; k < PW_FE_WINDOW; k++) t[k] = (int32_t)a[k] << PW_TM_EXTRA_BITS;
    }
    const int32_t corr_qrs = corr_q16(a, t, PW_TM_QRS_BEGIN, PW_TM_QRS_END);
    int64_t ea = 0, et = 0, diff = 0;
    for (int k = PW_TM_QRS_BEGIN; k < PW_TM_QRS_END; k++) {
        ea += (int64_t)a[k] * a[k];
        et += (int64_t)t[k] * t[k];
    }
    et = pw_div_round(et, 1ll << (2 * PW_TM_EXTRA_BITS)); /* Q12, as the beat's energy */
    for (int k = 0; k < PW_FE_WINDOW; k++) diff += abs64(((int64_t)a[k] << PW_TM_EXTRA_BITS) - t[k]);
    q16[0] = corr_qrs;
    q16[1] = corr_q16(a, t, 0, PW_TM_P_END);
    q16[2] = corr_q16(a, t, PW_TM_T_BEGIN, PW_FE_WINDOW);
    q16[3] = (int32_t)ln_ratio_q16((uint64_t)(ea + ENERGY_EPS_Q12), (uint64_t)(et + ENERGY_EPS_Q12));
    q16[4] = (int32_t)pw_div_round((width_log2_a(a, PW_TM_QRS_BEGIN, PW_TM_QRS_END) -
                                    width_log2_t(t, PW_TM_QRS_BEGIN, PW_TM_QRS_END)) * LN2_Q16, Q16);
    q16[5] = (int32_t)pw_div_round(diff << (16 - PW_TM_WAVE_FRAC_BITS - PW_TM_EXTRA_BITS), PW_FE_WINDOW);
    learn(tp, a, corr_qrs);
}

int8_t pw_template_quantize(int32_t q16, int f) {
    const int64_t clip = pw_fe_rr_clip_q[f], inv = pw_fe_rr_inv_q16[f];
    const int64_t lim = ((clip + 1) << 32) / inv; /* |z x inv| <= (clip + 1) 2^32 < 2^40 */
    int64_t z = (int64_t)q16 - pw_fe_rr_mean_q16[f];
    if (z > lim) z = lim;
    if (z < -lim) z = -lim;
    int64_t q = pw_div_round(z * inv, 1ll << 32);
    if (q > clip) q = clip;
    if (q < -clip) q = -clip;
    q += PW_FE_RR_ZERO_POINT;
    return (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
}
#else
typedef int pw_template_off_t; /* an RR-only model: nothing to compile here */
#endif
