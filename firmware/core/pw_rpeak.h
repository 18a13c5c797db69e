/* Streaming R-peak detector in integers: edge_runtime/rpeak.py (Pan & Tompkins 1985) sample by sample.
 *
 * Input: the front-end's 0.5-40 Hz band-passed samples (Q16 ADC units, what pw_frontend keeps in its ring),
 * the same signal the Python detector is fed. Stages, as rpeak.py: 5-15 Hz band-pass (one Q30 section,
 * pw_biquad.h), five-point derivative, squaring, 150 ms moving integration, local maxima of the integrated
 * signal as candidates, adaptive signal / noise levels with thresholds between them, a two-second learning
 * phase, 200 ms refractory period, T-wave slope test within 360 ms, search-back after 1.66 mean RR, and
 * each QRS reported at its R location: the largest |x| in the 250 ms before its energy peak. The QRS band-pass
 * carries the mains notches (50 and 60 Hz) as further sections. Start-up and recovery as rpeak.py: a
 * candidate above PW_RP_ARTEFACT times the signal level is an artefact (blank PW_RP_BLANK samples, then
 * learn again, restarting on further artefacts at most PW_RP_RESTARTS times); a candidate more than
 * PW_RP_FLAT samples after the previous one ends a flat line (learn again after it); no QRS for
 * PW_RP_RELEARN samples, search-back included, learns again from that candidate on.
 *
 * Numbers: the derivative is taken of the Q16 QRS band and rounded to Q8 (clamped to +-2^24, far beyond
 * any ECG: 2^16 ADC units per sample step), its squares summed over the window in int64 (the fs / 8 and 1 / N
 * scale factors of the Python code are dropped: every decision compares heights with heights); the levels
 * carry 3 fractional bits; thresholds are compared exactly by cross-multiplying. Each candidate's slope
 * and R location are computed the moment it is seen (the Python detector keeps the samples until it
 * decides, the same numbers), so the state needs only the last 92 input samples.
 *
 * Every decision depends only on samples already pushed, one at a time: the peaks do not depend on how a
 * caller chunks the stream (pw_rpeak_process is the chunk form). The constants come from
 * pw_frontend_config.h (`pulsewire firmware generate --frontend`, DetectorConfig at the model's rate).
 * Memory: the caller owns one pw_rpeak_t (no malloc). */
#ifndef PW_RPEAK_H
#define PW_RPEAK_H

#include <stdint.h>

#include "pw_biquad.h"
#include "pw_frontend_config.h"
#include "pw_status.h"

#ifndef PW_RP_LEARN
#define PW_RP_LEARN 96u /* candidates held in the learning phase (46 MIT-BIH records: at most 60 in 2 s) */
#endif
#ifndef PW_RP_QUEUE
#define PW_RP_QUEUE 16u /* settled R peaks waiting for pw_rpeak_next (power of two) */
#endif
#define PW_RP_RR 8u     /* RR intervals in the search-back average */
#define PW_RP_D_RING 64u  /* derivative history (power of two, > PW_RP_INTEGRATION + 1) */
#define PW_RP_X_RING 128u /* input history (power of two, > PW_RP_R_BEFORE + 1) */
#if PW_RP_INTEGRATION + 2u > PW_RP_D_RING || PW_RP_R_BEFORE + 2u > PW_RP_X_RING || PW_RP_R_AFTER > PW_RP_R_BEFORE
#error "pw_frontend_config.h: the detector's windows do not fit its histories"
#endif

typedef struct {
    int64_t height;   /* integrated signal at the candidate: sum of PW_RP_INTEGRATION squared derivatives (Q16) */
    uint32_t index;   /* sample of the integrated-signal maximum */
    uint32_t r;       /* its R location: sample of the largest |input| in [index - R_BEFORE, index - R_AFTER] */
    int32_t slope;    /* largest |derivative| (Q8) in [index - PW_RP_INTEGRATION, index] */
} pw_rp_beat_t;

/* A learning-phase candidate in 16 bytes: the slope (< 2^25, the derivative is clamped to 2^24) and the
 * R location's distance before the energy peak (< 128: PW_RP_R_BEFORE + 2 <= PW_RP_X_RING) share a word. */
typedef struct {
    int64_t height;
    uint32_t index;
    uint32_t slope_back; /* slope | (index - r) << 25 */
} pw_rp_learn_t;

typedef struct {
    /* linear stage */
    pw_biquad_t qrs[PW_RP_SECTIONS];
    int64_t q[4];                  /* the last four QRS-band samples (Q16), newest first */
    int32_t d[PW_RP_D_RING];       /* derivative (Q8), by sample index */
    int32_t x[PW_RP_X_RING];       /* input (Q16), by sample index */
    int64_t mwi, mwi1;             /* integrated signal at the newest sample and the one before */
    uint32_t samples;              /* samples pushed */
    /* decisions */
    int64_t spk8, npk8;            /* signal and noise peak levels, 3 fractional bits */
    pw_rp_learn_t learning[PW_RP_LEARN];
    uint32_t n_learning;
    pw_rp_beat_t last, reported;   /* the latest QRS (not yet reported), the last one reported */
    pw_rp_beat_t first, noise;     /* since that QRS: the first noise peak, the highest of the others */
    uint8_t learned, has_last, has_reported, has_first, has_noise, has_r, has_candidate, has_artefact;
    uint32_t learn_end;            /* the learning phase ends at the first candidate from this sample */
    uint32_t blank_until;          /* candidates before this sample are ignored (an artefact's tail) */
    uint32_t last_event;           /* the last accepted QRS or the end of learning: the re-learning clock */
    uint32_t last_candidate;       /* the previous candidate's sample (a long gap: the input was flat) */
    int64_t artefact_spk8;         /* the signal level before an artefact, while re-learning */
    uint32_t artefacts_seen;       /* artefacts met during this re-learning */
    uint32_t artefacts, flat_lines, relearned; /* how often each recovery rule fired */
    uint32_t last_r;               /* last R location reported */
    uint32_t rr[PW_RP_RR];         /* intervals between accepted QRS, ring */
    uint32_t n_rr;
    uint32_t queue[PW_RP_QUEUE];   /* settled R peaks, oldest at queue[head] */
    uint32_t head, queued, dropped;
} pw_rpeak_t;

void pw_rpeak_init(pw_rpeak_t *det);

/* One band-passed sample (Q16 ADC units). PW_ERR_SPACE if a settled peak found the queue full (it is
 * dropped and counted in det->dropped): call pw_rpeak_next after every push. */
pw_status_t pw_rpeak_push(pw_rpeak_t *det, int32_t x);

/* The oldest settled R peak not yet taken (absolute sample index, increasing): 1, or 0 if none. */
int pw_rpeak_next(pw_rpeak_t *det, uint32_t *peak);

/* End of stream: settles the beat still inside its T-wave interval (take it with pw_rpeak_next). */
pw_status_t pw_rpeak_flush(pw_rpeak_t *det);

/* A chunk: pushes x[0..n), writes the peaks it settles to peaks[] (at most cap; any more stay queued for
 * pw_rpeak_next) and their count to *n_peaks. The same peaks as pushing one sample at a time. */
pw_status_t pw_rpeak_process(pw_rpeak_t *det, const int32_t *x, uint32_t n, uint32_t *peaks, uint32_t cap,
                             uint32_t *n_peaks);

#endif
