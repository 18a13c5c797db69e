/* Beat-versus-template features in integers: edge_runtime/template_features.py (TemplateTracker) and
 * edge_runtime/template_fixed.py bit for bit. The device keeps one running template of the lead's dominant
 * beat and compares every beat window with it: correlation of the QRS, P-wave and T-wave stretches, QRS
 * energy and width against the template's (natural logarithms of ratios), mean absolute difference.
 *
 * Numbers: the beat window in 1/64 R amplitudes (int16, PW_TM_WAVE_FRAC_BITS), the template with
 * PW_TM_EXTRA_BITS more fractional bits (int32), moments in int64, a floor square root, log2 by 16 squarings
 * of a Q30 mantissa, rounding half away from zero (pw_div_round). Each feature comes out in Q16 (its float
 * value in Python is exactly q16 / 2^16) and is quantized to the model's int8 input from Q16 constants.
 * Bounds: |window| <= 4 R amplitudes = 256, |template| <= 2^16, n <= PW_FE_WINDOW <= 256: every moment fits
 * in 2^47, cov x 2^16 in 2^56.
 *
 * The geometry and the tracking constants come from pw_frontend_config.h (`pulsewire firmware generate
 * --frontend` for a model trained with --features rr+template). Memory: the caller owns one pw_template_t
 * (4 x PW_FE_WINDOW + 8 bytes), no malloc. */
#ifndef PW_TEMPLATE_H
#define PW_TEMPLATE_H

#include <stdint.h>

#include "pw_frontend_config.h"

#define PW_TM_FEATURES 6 /* corr QRS, corr P, corr T, log energy QRS, log width QRS, mean |difference| */

typedef struct {
    int32_t t[PW_FE_WINDOW]; /* the template, Q(PW_TM_WAVE_FRAC_BITS + PW_TM_EXTRA_BITS) R amplitudes */
    uint32_t accepted;       /* beats averaged in since the last (re)start; 0: no template yet */
    uint32_t rejected;       /* beats in a row whose QRS did not match */
} pw_template_t;

void pw_template_init(pw_template_t *tp);

/* The six features (Q16) of the beat window `a` (PW_FE_WINDOW values in 1/64 R amplitudes) against the
 * template of the beats before it; then the template learns from the beat. */
void pw_template_features(pw_template_t *tp, const int16_t *a, int32_t *q16);

/* A Q16 feature -> the int8 input of model input feature `f` (pw_fe_rr_* constants of that feature). */
int8_t pw_template_quantize(int32_t q16, int f);

#endif
