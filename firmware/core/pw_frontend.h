/* The streaming front-end in fixed point, mirroring edge_runtime (filtering.py, beat_windows.py,
 * rr_features.py): raw ADC samples -> causal Butterworth band-pass -> for each R-peak the caller reports,
 * a decimated beat window (median removed, divided by the median |R| of the last beats, clipped) and the
 * seven RR features, standardised and quantized straight into the model's int8 inputs.
 *
 * The constants (filter sections, window geometry, RR statistics, input quantization) come from
 * pw_frontend_config.h, generated from the model's metadata (`pulsewire firmware generate --frontend`). R-peaks
 * come from the C detector (pw_rpeak.h) on the filtered samples with pw_frontend_push_adc, or from the
 * caller with pw_frontend_push_sample + pw_frontend_push_peak (an analog front-end with its own detector).
 *
 * Start-up and recovery, as filtering.py: the band-pass starts at the steady state of the first sample and
 * starts again so after a step (more than PW_FE_JUMP ADC units within PW_FE_JUMP_LAG samples) or at the
 * first change after a flat line (PW_FE_FLAT_RUN unchanged samples). An invalid sample (PW_FE_INVALID: lead
 * off, ADC fault; NaN in Python) is replaced by the last valid one and counted, so it never reaches the filter.
 *
 * Template features (a model trained with --features rr+template, PW_FE_TEMPLATE 1): each window is also
 * kept in 1/64 R amplitudes and compared with the running template of the lead (pw_template.h); the two
 * RR ratios of that set (post / local, local / long) are exact fractions like the other RR features.
 *
 * Arithmetic: samples in Q16 ADC units (int32), biquads in Q30 coefficients with 64-bit accumulators,
 * medians and RR ratios exact in integers, standardisation and quantization with Q16 constants. Memory:
 * the caller owns one pw_frontend_t (no malloc): 5,352 B on a Cortex-M4 with the default ring (about
 * 1.2 KB more with template features: the template and the pending windows in 16 bits), whose 1,024
 * samples cover the detector's latency (at most 743 samples on 46 MIT-BIH records: the first beats,
 * reported when the two-second learning phase ends). */
#ifndef PW_FRONTEND_H
#define PW_FRONTEND_H

#include <stdint.h>

#include "pw_biquad.h"
#include "pw_frontend_config.h"
#include "pw_rpeak.h"
#include "pw_status.h"

#ifndef PW_FE_TEMPLATE
#define PW_FE_TEMPLATE 0 /* a configuration written before template features existed: the RR features only */
#endif
#ifndef PW_FE_FEATURES
#define PW_FE_FEATURES 7
#endif
#if PW_FE_TEMPLATE
#include "pw_template.h"
#endif

#ifndef PW_FE_RING
#define PW_FE_RING 1024u /* filtered samples kept (power of two): detector latency + window (2.8 s at 360 Hz) */
#endif
#define PW_FE_PENDING 4u  /* beats waiting for their window to complete or their successor */
#define PW_FE_RR_FEATURES 7 /* the RR features, the first model input features of every set */
#define PW_FE_RR_RING (PW_FE_RR_LONG + PW_FE_PENDING + 1u) /* the long history plus peaks reported ahead */
#define PW_FE_RAW_RING 16u /* raw samples kept for the step test (power of two, > PW_FE_JUMP_LAG) */
#define PW_FE_INVALID INT32_MIN /* the sample a board pushes when its ADC has none (lead off, fault) */
#if PW_FE_JUMP_LAG >= PW_FE_RAW_RING
#error "pw_frontend_config.h: the step test looks further back than PW_FE_RAW_RING samples"
#endif

typedef struct {
    uint32_t peak;
    int32_t amp2;                 /* 2 x median |R| of this beat and the ones before (Q16) */
    uint8_t has_window;
    int8_t wave[PW_FE_WINDOW];
#if PW_FE_TEMPLATE
    int16_t wq[PW_FE_WINDOW];     /* the window in 1/64 R amplitudes, what the template features compare */
#endif
} pw_fe_beat_t;

typedef struct {
    pw_biquad_t sos[PW_FE_SECTIONS];
    int32_t ring[PW_FE_RING];     /* filtered samples, Q16 ADC units */
    uint32_t samples;             /* samples pushed so far */
    int32_t amps[PW_FE_AMP_BEATS];/* |filtered| at the last R-peaks */
    uint32_t n_peaks;
    uint32_t last_peak;
    uint16_t rr[PW_FE_RR_RING];   /* RR intervals in samples, ring */
    uint32_t n_rr;
    pw_fe_beat_t pending[PW_FE_PENDING];
    uint32_t n_pending;           /* beats in pending[], oldest first */
    uint32_t late_peaks;          /* detected peaks refused because their window had left the ring */
    int32_t raw[PW_FE_RAW_RING];  /* the last raw samples (ADC units, invalid ones replaced) */
    uint32_t still;               /* consecutive samples within PW_FE_FLAT_TOL of their predecessor */
    uint32_t invalid;             /* PW_FE_INVALID samples replaced by the last valid one */
    uint32_t restarts;            /* band-pass restarts after a step or a flat line */
#if PW_FE_TEMPLATE
    pw_template_t tmpl;           /* the running template of the beats taken so far */
#endif
} pw_frontend_t;

void pw_frontend_init(pw_frontend_t *fe);

/* One raw sample (ADC units, the record's own gain PW_FE_ADC_GAIN per mV), or PW_FE_INVALID. */
pw_status_t pw_frontend_push_sample(pw_frontend_t *fe, int32_t adc);

/* An R-peak at absolute sample index `peak` (increasing, already pushed). PW_ERR_DATA if it is not newer
 * than the last one or its sample has left the ring. */
pw_status_t pw_frontend_push_peak(pw_frontend_t *fe, uint32_t peak);

/* The next complete beat (window cut, previous and next R-peak known): writes PW_FE_WINDOW int8 wave values
 * and the PW_FE_FEATURES int8 input features (the 7 RR features, then with PW_FE_TEMPLATE the template
 * features in the model's order, PW_FE_I_* / PW_TM_FIRST) and the beat's R-peak sample; returns 1, or 0 if
 * no beat is ready. The first beat (no previous RR) and beats whose window starts before the stream are
 * skipped, as in training; the template learns from every beat returned, in order. */
/* A board's one call per ADC sample: the band-pass, the R-peak detector `det` (caller-owned, initialised
 * with pw_rpeak_init) on the filtered sample, and the peaks it settles into the beat windows; then take
 * beats with pw_frontend_next_beat. A detected peak whose window has already left the ring (detector
 * latency beyond PW_FE_RING - PW_FE_WINDOW_BEFORE samples) is counted in fe->late_peaks. */
pw_status_t pw_frontend_push_adc(pw_frontend_t *fe, pw_rpeak_t *det, int32_t adc);

/* End of stream: the detector's last peak (its beat still needs a successor to be complete). */
pw_status_t pw_frontend_flush(pw_frontend_t *fe, pw_rpeak_t *det);

int pw_frontend_next_beat(pw_frontend_t *fe, int8_t *wave, int8_t *rr, uint32_t *peak);

#endif
