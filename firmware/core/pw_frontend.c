/* Streaming fixed-point front-end: see pw_frontend.h for the pipeline and number formats. */
#include <string.h>

#include "pw_frontend.h"

#define Q_SAMPLE 16 /* samples carry 16 fractional bits */

static int32_t clamp8(int64_t v) { return v < -128 ? -128 : (v > 127 ? 127 : (int32_t)v); }

void pw_frontend_init(pw_frontend_t *fe) {
    memset(fe, 0, sizeof *fe);
#if PW_FE_TEMPLATE
    pw_template_init(&fe->tmpl);
#endif
}

static void sort_i32(int32_t *v, int n) {
    for (int i = 1; i < n; i++) {
        int32_t t = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > t) { v[j + 1] = v[j]; j--; }
        v[j + 1] = t;
    }
}

/* twice the median (exact for even counts, as numpy's mean of the two middle values) */
static int64_t median2(int32_t *v, int n) {
    sort_i32(v, n);
    return n % 2 ? 2 * (int64_t)v[n / 2] : (int64_t)v[n / 2 - 1] + v[n / 2];
}

static void cut_window(pw_frontend_t *fe, pw_fe_beat_t *b) {
    int32_t w[PW_FE_WINDOW], sorted[PW_FE_WINDOW];
    for (int k = 0; k < PW_FE_WINDOW; k++) {
        const uint32_t at = b->peak - PW_FE_WINDOW_BEFORE + (uint32_t)k * PW_FE_DECIMATION;
        w[k] = sorted[k] = fe->ring[at % PW_FE_RING];
    }
    const int64_t med2 = median2(sorted, PW_FE_WINDOW);
    const int64_t amp2 = b->amp2 > PW_FE_AMP_FLOOR2 ? b->amp2 : PW_FE_AMP_FLOOR2;
    const int64_t clip = PW_FE_WAVE_CLIP * amp2; /* |window| <= clip R amplitudes */
    for (int k = 0; k < PW_FE_WINDOW; k++) {
        int64_t v = 2 * (int64_t)w[k] - med2; /* twice (sample - median), like amp2 */
        if (v > clip) v = clip;
        if (v < -clip) v = -clip;
        /* (v / amp2) / wave_scale = v * (2^16 / wave_scale) / (amp2 * 2^16) */
        b->wave[k] = (int8_t)clamp8(pw_div_round(v * PW_FE_WAVE_INV_SCALE_Q16, amp2 << 16) + PW_FE_WAVE_ZERO_POINT);
#if PW_FE_TEMPLATE
        b->wq[k] = (int16_t)pw_div_round(v << PW_TM_WAVE_FRAC_BITS, amp2); /* |v / amp2| <= the clip */
#endif
    }
    b->has_window = 1;
}

/* Whether the band-pass starts again at this sample (filtering.py RestartRules), and the histories. */
static int restart(pw_frontend_t *fe, int32_t adc) {
    const uint32_t n = fe->samples;
    int again = 0;
    if (n >= 1) {
        const int64_t d = (int64_t)adc - fe->raw[(n - 1) % PW_FE_RAW_RING];
        const int still = (d < 0 ? -d : d) <= PW_FE_FLAT_TOL;
        if (!still && fe->still >= PW_FE_FLAT_RUN) again = 1; /* the end of a flat line */
        fe->still = still ? fe->still + 1 : 0;
    }
    if (n >= PW_FE_JUMP_LAG) {
        const int64_t d = (int64_t)adc - fe->raw[(n - PW_FE_JUMP_LAG) % PW_FE_RAW_RING];
        if ((d < 0 ? -d : d) > PW_FE_JUMP) again = 1; /* a step: an electrode re-attached */
    }
    fe->raw[n % PW_FE_RAW_RING] = adc;
    return again;
}

pw_status_t pw_frontend_push_sample(pw_frontend_t *fe, int32_t adc) {
    if (!fe) return PW_ERR_ARG;
    if (adc == PW_FE_INVALID) { /* held at the last valid sample (0 before any), never filtered as a value */
        adc = fe->samples ? fe->raw[(fe->samples - 1) % PW_FE_RAW_RING] : 0;
        fe->invalid++;
    }
    const int64_t x = (int64_t)adc << Q_SAMPLE;
    if (restart(fe, adc)) {
        pw_biquad_start(fe->sos, pw_fe_sos_q30, PW_FE_SECTIONS, x);
        fe->restarts++;
    }
    if (fe->samples == 0) pw_biquad_start(fe->sos, pw_fe_sos_q30, PW_FE_SECTIONS, x);
    fe->ring[fe->samples % PW_FE_RING] = (int32_t)pw_biquad_step(fe->sos, pw_fe_sos_q30, PW_FE_SECTIONS, x);
    fe->samples++;
    for (uint32_t i = 0; i < fe->n_pending; i++) {
        pw_fe_beat_t *b = &fe->pending[i];
        if (!b->has_window && fe->samples >= b->peak + PW_FE_WINDOW_AFTER) cut_window(fe, b);
    }
    return PW_OK;
}

pw_status_t pw_frontend_push_peak(pw_frontend_t *fe, uint32_t peak) {
    if (!fe || peak >= fe->samples || (fe->n_peaks && peak <= fe->last_peak)) return PW_ERR_DATA;
    if (fe->samples - peak > PW_FE_RING - PW_FE_WINDOW_BEFORE - 1) return PW_ERR_DATA; /* left the ring */
    const int32_t r = fe->ring[peak % PW_FE_RING];
    fe->amps[fe->n_peaks % PW_FE_AMP_BEATS] = r < 0 ? -r : r;
    if (fe->n_peaks) {
        const uint32_t interval = peak - fe->last_peak;
        fe->rr[fe->n_rr % PW_FE_RR_RING] = (uint16_t)(interval > 65535u ? 65535u : interval);
        fe->n_rr++;
    }
    fe->n_peaks++;
    fe->last_peak = peak;
    if (fe->n_pending == PW_FE_PENDING) { /* the oldest never completed: drop it */
        memmove(&fe->pending[0], &fe->pending[1], (PW_FE_PENDING - 1) * sizeof fe->pending[0]);
        fe->n_pending--;
    }
    pw_fe_beat_t *b = &fe->pending[fe->n_pending++];
    b->peak = peak;
    b->has_window = 0;
    int32_t a[PW_FE_AMP_BEATS];
    const int n = fe->n_peaks < PW_FE_AMP_BEATS ? (int)fe->n_peaks : PW_FE_AMP_BEATS;
    for (int k = 0; k < n; k++) a[k] = fe->amps[(fe->n_peaks - 1 - (uint32_t)k) % PW_FE_AMP_BEATS];
    b->amp2 = (int32_t)median2(a, n);
    if (fe->samples >= peak + PW_FE_WINDOW_AFTER) cut_window(fe, b);
    return PW_OK;
}

/* (N / D - mean) / std / scale + zero point, with mean and 1 / (std * scale) as Q16 constants.
 * |N|, |D| < 2^28 (at most 300 x 10 intervals of at most 65,535 samples: local / long is
 * sum_local * n_long / (sum_long * n_local)), so (N - mean * D) * 2^16 < 2^62; the
 * difference is clamped to just past the clip before the multiply by 1 / (std * scale), which keeps that
 * product under 2^56. */
static int8_t rr_quantize(int64_t num, int64_t den, int f) {
    if (den <= 0) return (int8_t)PW_FE_RR_ZERO_POINT;
    const int64_t d = num * 65536 - pw_fe_rr_mean_q16[f] * den; /* (feature - mean) * den, Q16 */
    int64_t z = pw_div_round(d * 65536, den);                      /* feature - mean, Q32 */
    const int64_t lim = ((pw_fe_rr_clip_q[f] + 1) << 48) / pw_fe_rr_inv_q16[f];
    if (z > lim) z = lim;
    if (z < -lim) z = -lim;
    int64_t q = pw_div_round(z * pw_fe_rr_inv_q16[f], 1ll << 48);
    if (q > pw_fe_rr_clip_q[f]) q = pw_fe_rr_clip_q[f];
    if (q < -pw_fe_rr_clip_q[f]) q = -pw_fe_rr_clip_q[f];
    return (int8_t)clamp8(q + PW_FE_RR_ZERO_POINT);
}

int pw_frontend_next_beat(pw_frontend_t *fe, int8_t *wave, int8_t *rr, uint32_t *peak) {
    /* beat j of the stream (0-based) is pending[0] once peak j+1 is known; its pre-RR is rr[j-1], its
     * post-RR rr[j] (RR index k = interval between peak k and k+1) */
    while (fe->n_pending >= 2) {
        pw_fe_beat_t *b = &fe->pending[0];
        if (!b->has_window) return 0;
        const uint32_t j = fe->n_peaks - fe->n_pending; /* stream index of pending[0] */
        const int skip = j == 0 || b->peak < PW_FE_WINDOW_BEFORE;
        if (!skip) {
            const uint32_t pre = fe->rr[(j - 1) % PW_FE_RR_RING], post = fe->rr[j % PW_FE_RR_RING];
            /* history: rr[max(0, j - long) .. j - 1] */
            const uint32_t n_long = j < PW_FE_RR_LONG ? j : PW_FE_RR_LONG;
            const uint32_t n_local = n_long < PW_FE_RR_LOCAL ? n_long : PW_FE_RR_LOCAL;
            int64_t sum_long = 0, sum_local = 0;
            for (uint32_t k = 0; k < n_long; k++) {
                const int64_t v = fe->rr[(j - 1 - k) % PW_FE_RR_RING];
                sum_long += v;
                if (k < n_local) sum_local += v;
            }
            const int64_t fs = PW_FE_FS_HZ;
            rr[0] = rr_quantize(pre, fs, 0);                          /* pre-RR, s */
            rr[1] = rr_quantize(post, fs, 1);                         /* post-RR, s */
            rr[2] = rr_quantize(sum_local, fs * n_local, 2);          /* local mean, s */
            rr[3] = rr_quantize(sum_long, fs * n_long, 3);            /* long mean, s */
            rr[4] = rr_quantize((int64_t)pre * n_local, sum_local, 4); /* pre / local */
            rr[5] = rr_quantize(post, pre, 5);                        /* post / pre */
            rr[6] = rr_quantize((int64_t)pre * n_long, sum_long, 6);  /* pre / long */
#if PW_FE_TEMPLATE
            int32_t q16[PW_TM_FEATURES];
            pw_template_features(&fe->tmpl, b->wq, q16);
            for (int f = 0; f < PW_TM_FEATURES; f++) rr[PW_TM_FIRST + f] = pw_template_quantize(q16[f], PW_TM_FIRST + f);
            rr[PW_FE_I_POST_OVER_LOCAL] = rr_quantize((int64_t)post * n_local, sum_local, PW_FE_I_POST_OVER_LOCAL);
            rr[PW_FE_I_LOCAL_OVER_LONG] = rr_quantize(sum_local * n_long, sum_long * n_local, PW_FE_I_LOCAL_OVER_LONG);
#endif
            memcpy(wave, b->wave, PW_FE_WINDOW);
            *peak = b->peak;
        }
        memmove(&fe->pending[0], &fe->pending[1], (fe->n_pending - 1) * sizeof fe->pending[0]);
        fe->n_pending--;
        if (!skip) return 1;
    }
    return 0;
}

pw_status_t pw_frontend_push_adc(pw_frontend_t *fe, pw_rpeak_t *det, int32_t adc) {
    if (!det) return PW_ERR_ARG;
    pw_status_t st = pw_frontend_push_sample(fe, adc);
    if (st != PW_OK) return st;
    st = pw_rpeak_push(det, fe->ring[(fe->samples - 1) % PW_FE_RING]);
    uint32_t r;
    while (pw_rpeak_next(det, &r)) {
        if (pw_frontend_push_peak(fe, r) != PW_OK) fe->late_peaks++;
    }
    return st;
}

pw_status_t pw_frontend_flush(pw_frontend_t *fe, pw_rpeak_t *det) {
    if (!fe || !det) return PW_ERR_ARG;
    const pw_status_t st = pw_rpeak_flush(det);
    uint32_t r;
    while (pw_rpeak_next(det, &r)) {
        if (pw_frontend_push_peak(fe, r) != PW_OK) fe->late_peaks++;
    }
    return st;
}
