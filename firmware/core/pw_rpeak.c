/* Streaming R-peak detector: see pw_rpeak.h for the stages and number formats. Function names follow
 * edge_runtime/rpeak.py so the two can be read side by side. */
#include <string.h>

#include "pw_rpeak.h"

#define D_CLAMP (1l << 24) /* |derivative| in Q8: squares < 2^48, a window sum < 2^54 (54 samples) */

void pw_rpeak_init(pw_rpeak_t *det) {
    memset(det, 0, sizeof *det);
    det->learn_end = PW_RP_LEARNING;
}

/* ------------------------------------------------------------------ levels and thresholds
 * Heights h < 2^54 and levels (x 8) < 2^57, PW_RP_THR_DEN = 16: every product below stays under 2^62. */

/* h > threshold1 = npk + f (spk - npk), f = PW_RP_THR_NUM / PW_RP_THR_DEN (DEN <= 16), i.e.
 * 8 DEN h > (DEN - NUM) npk8 + NUM spk8 (Pan & Tompkins' f = 1/4: 32 h > 3 npk8 + spk8) */
static int above_threshold1(const pw_rpeak_t *det, int64_t h) {
    return 8 * PW_RP_THR_DEN * h > (PW_RP_THR_DEN - PW_RP_THR_NUM) * det->npk8 + PW_RP_THR_NUM * det->spk8;
}

/* h > threshold2 = threshold1 / 2 */
static int above_threshold2(const pw_rpeak_t *det, int64_t h) {
    return 16 * PW_RP_THR_DEN * h > (PW_RP_THR_DEN - PW_RP_THR_NUM) * det->npk8 + PW_RP_THR_NUM * det->spk8;
}

/* h > PW_RP_ARTEFACT x level (level8 / 8); a level above 2^57 / PW_RP_ARTEFACT exceeds any height x 8 */
static int is_artefact(int64_t h, int64_t level8) {
    if (level8 > (INT64_MAX / 8) / PW_RP_ARTEFACT) return 0;
    return 8 * h > PW_RP_ARTEFACT * level8;
}

/* level = h / 8 + 7 level / 8 (Pan & Tompkins' running estimate; 3 fractional bits) */
static int64_t follow(int64_t level8, int64_t h) { return h + pw_div_round(7 * level8, 8); }

/* The noise level after a noise peak: follow() below it; above it with weight PW_RP_NOISE_ATTACK / 8,
 * level = w h + (1 - w) level, i.e. level8 = A h + (8 - A) level8 / 8 (rpeak.py _Levels.noise) */
static int64_t follow_noise(int64_t level8, int64_t h) {
    if (8 * h <= level8) return follow(level8, h);
    return PW_RP_NOISE_ATTACK * h + pw_div_round((8 - PW_RP_NOISE_ATTACK) * level8, 8);
}

/* rpeak.py _blunt, the QRS-shape test in noise: while 16 npk8 > PW_RP_CREST_WHEN spk8, a candidate below the
 * signal level (8 h < spk8) whose crest factor N slope^2 / h (h: the window's sum of squared slopes) is
 * below PW_RP_CREST / 8 counts as noise. slope < 2^24, so 8 N slope^2 < 2^57; PW_RP_CREST h < 2^60. */
static int blunt(const pw_rpeak_t *det, const pw_rp_beat_t *beat) {
    if (PW_RP_CREST == 0) return 0;
    if (16 * det->npk8 <= PW_RP_CREST_WHEN * det->spk8 || 8 * beat->height >= det->spk8) return 0;
    const int64_t s = beat->slope;
    return 8 * (int64_t)PW_RP_INTEGRATION * s * s < PW_RP_CREST * beat->height;
}

/* ------------------------------------------------------------------ reporting */
static pw_status_t emit(pw_rpeak_t *det, uint32_t r) {
    if (det->queued == PW_RP_QUEUE) {
        det->dropped++;
        return PW_ERR_SPACE;
    }
    det->queue[(det->head + det->queued++) % PW_RP_QUEUE] = r;
    return PW_OK;
}

/* The pending QRS is final: report its R location unless it falls within the refractory period of the
 * last one reported (two energy peaks around one R wave, reported once). */
static pw_status_t settle(pw_rpeak_t *det) {
    pw_status_t st = PW_OK;
    const uint32_t r = det->last.r;
    if (!det->has_r || (int64_t)r - (int64_t)det->last_r >= (int64_t)PW_RP_REFRACTORY) {
        st = emit(det, r);
        det->last_r = r;
        det->has_r = 1;
    }
    det->reported = det->last;
    det->has_reported = 1;
    det->has_last = 0;
    return st;
}

/* ------------------------------------------------------------------ decisions */
static pw_status_t accept(pw_rpeak_t *det, const pw_rp_beat_t *beat, int quarter_weight) {
    pw_status_t st = PW_OK;
    /* spk = w h + (1 - w) spk, w = 1/8 for a beat above threshold1, 1/4 for one found by search-back */
    det->spk8 = quarter_weight ? 2 * beat->height + pw_div_round(3 * det->spk8, 4) : follow(det->spk8, beat->height);
    if (det->has_last) st = settle(det);
    if (det->has_reported) det->rr[det->n_rr++ % PW_RP_RR] = beat->index - det->reported.index;
    det->last = *beat;
    det->has_last = 1;
    det->last_event = beat->index;
    det->has_first = det->has_noise = 0;
    return st;
}

/* No QRS for searchback x the mean RR: the highest noise peak since the last QRS that lies a refractory
 * period or more after it, if above threshold2, was a beat after all. rpeak.py keeps up to 64 noise peaks;
 * two are enough. A candidate within the refractory period of the pending QRS replaces it or is dropped,
 * so a noise peak is always a refractory period after the pending QRS when it is added, and once one is,
 * no later candidate can replace that QRS. The one exception is the first noise peak after a search-back:
 * the candidate that triggered it is tested against the thresholds without the refractory test, and the
 * QRS it is tested against may still be replaced by a later, higher point of its energy. So the state
 * keeps that first noise peak (checked against the QRS here) and the highest of the others (the first of
 * equal heights, as Python's max). */
static pw_status_t search_back(pw_rpeak_t *det, uint32_t now) {
    const pw_rp_beat_t *previous = det->has_last ? &det->last : (det->has_reported ? &det->reported : 0);
    if (!previous || det->n_rr == 0) return PW_OK;
    const uint32_t n = det->n_rr < PW_RP_RR ? det->n_rr : PW_RP_RR;
    int64_t sum = 0;
    for (uint32_t k = 0; k < n; k++) sum += det->rr[k];
    /* now - previous <= (NUM / DEN) * sum / n: nothing missed yet */
    if ((int64_t)(now - previous->index) * n * PW_RP_SEARCHBACK_DEN <= PW_RP_SEARCHBACK_NUM * sum) return PW_OK;
    const pw_rp_beat_t *best = 0;
    if (det->has_first && (int64_t)det->first.index - (int64_t)previous->index >= (int64_t)PW_RP_REFRACTORY)
        best = &det->first;
    if (det->has_noise && (!best || det->noise.height > best->height)) best = &det->noise;
    if (best && above_threshold2(det, best->height)) {
        const pw_rp_beat_t beat = *best;
        return accept(det, &beat, 1);
    }
    return PW_OK;
}

static pw_status_t decide(pw_rpeak_t *det, const pw_rp_beat_t *beat);

/* Pan & Tompkins' learning phase: levels from the first candidates' heights, then those candidates are
 * decided in order with them. */
static pw_status_t finish_learning(pw_rpeak_t *det) {
    int64_t max = 0, sum = 0;
    const uint32_t n = det->n_learning;
    for (uint32_t k = 0; k < n; k++) {
        if (det->learning[k].height > max) max = det->learning[k].height;
        sum += det->learning[k].height; /* < 96 x 54 x 2^48 = 2^60.4 */
    }
    det->spk8 = 2 * max;                             /* 0.25 max */
    det->npk8 = n ? pw_div_round(4 * sum, n) : 0;    /* 0.5 mean; 4 x sum < 2^62.4 */
    det->learned = 1;
    det->has_artefact = 0;
    det->last_event = det->learn_end;
    det->n_learning = 0;
    pw_status_t st = PW_OK;
    for (uint32_t k = 0; k < n; k++) {
        const pw_rp_learn_t *l = &det->learning[k];
        pw_rp_beat_t beat;
        beat.height = l->height;
        beat.index = l->index;
        beat.slope = (int32_t)(l->slope_back & 0x1FFFFFFu);
        beat.r = l->index - (l->slope_back >> 25);
        const pw_status_t s = decide(det, &beat);
        if (s != PW_OK) st = s;
    }
    return st;
}

static void start_learning(pw_rpeak_t *det, uint32_t blank_until) {
    det->learned = 0;
    det->n_learning = 0;
    det->has_first = det->has_noise = 0;
    det->blank_until = blank_until;
    det->learn_end = blank_until + PW_RP_LEARNING;
}

/* A candidate of the learning phase; artefacts while re-learning after one restart the phase. */
static pw_status_t learn(pw_rpeak_t *det, const pw_rp_beat_t *beat) {
    if (beat->index < det->blank_until) return PW_OK;
    if (det->has_artefact && is_artefact(beat->height, det->artefact_spk8)) {
        if (++det->artefacts_seen < PW_RP_RESTARTS) {
            start_learning(det, beat->index + PW_RP_BLANK);
            return PW_OK;
        }
        det->has_artefact = 0; /* they keep coming: the signal itself has grown */
    }
    pw_rp_learn_t *l = &det->learning[det->n_learning++];
    l->height = beat->height;
    l->index = beat->index;
    l->slope_back = (uint32_t)beat->slope | (beat->index - beat->r) << 25;
    /* a full list ends the phase early (more than PW_RP_LEARN candidates in 2 s: noise, not ECG) */
    if (beat->index >= det->learn_end || det->n_learning == PW_RP_LEARN) return finish_learning(det);
    return PW_OK;
}

static pw_status_t decide(pw_rpeak_t *det, const pw_rp_beat_t *beat) {
    pw_status_t st = PW_OK, s;
    /* signed: candidates replayed after learning lie before the newest one */
    const int quiet = det->has_candidate && (int64_t)beat->index - (int64_t)det->last_candidate > (int64_t)PW_RP_FLAT;
    det->last_candidate = beat->index;
    det->has_candidate = 1;
    if (quiet) { /* the input moves again after a flat stretch: this candidate is the step back */
        if (det->has_last) st = settle(det);
        det->flat_lines++;
        if (det->learned) {
            det->artefact_spk8 = det->spk8;
            det->has_artefact = 1;
            det->artefacts_seen = 0;
        }
        start_learning(det, beat->index + PW_RP_BLANK);
        return st;
    }
    if (!det->learned) return learn(det, beat);
    if (is_artefact(beat->height, det->spk8)) { /* a step, a saturation, a knock: blank it, learn again */
        if (det->has_last) {
            if (beat->index - det->last.index < PW_RP_REFRACTORY) det->has_last = 0; /* its leading edge */
            else st = settle(det);
        }
        det->artefacts++;
        det->artefact_spk8 = det->spk8;
        det->has_artefact = 1;
        det->artefacts_seen = 0;
        start_learning(det, beat->index + PW_RP_BLANK);
        return st;
    }
    if (det->has_last && beat->index - det->last.index >= PW_RP_T_WAVE) st = settle(det); /* report_settled */
    if (det->has_last && beat->index - det->last.index < PW_RP_REFRACTORY) {
        if (beat->height > det->last.height) det->last = *beat; /* the same QRS, a higher point of its energy */
        return st;
    }
    if ((s = search_back(det, beat->index)) != PW_OK) st = s;
    if ((int64_t)beat->index - (int64_t)det->last_event > (int64_t)PW_RP_RELEARN) { /* no QRS for too long: learn again from here */
        if (det->has_last && (s = settle(det)) != PW_OK) st = s;
        det->relearned++;
        det->has_artefact = 0;
        start_learning(det, beat->index);
        if ((s = learn(det, beat)) != PW_OK) st = s;
        return st;
    }
    const pw_rp_beat_t *previous = det->has_last ? &det->last : (det->has_reported ? &det->reported : 0);
    if (above_threshold1(det, beat->height)) {
        if (previous && beat->index - previous->index < PW_RP_T_WAVE && 2 * (int64_t)beat->slope < previous->slope) {
            det->npk8 = follow_noise(det->npk8, beat->height); /* a T wave */
            return st;
        }
        if (!blunt(det, beat)) {
            if ((s = accept(det, beat, 0)) != PW_OK) st = s;
            return st;
        }
    }
    det->npk8 = follow_noise(det->npk8, beat->height); /* a noise peak (or a blunt one): search-back may take it */
    if (!det->has_first) {
        det->first = *beat;
        det->has_first = 1;
    } else if (!det->has_noise || beat->height > det->noise.height) {
        det->noise = *beat;
        det->has_noise = 1;
    }
    return st;
}

/* ------------------------------------------------------------------ linear stage */

/* The candidate at sample k (its successor just arrived): slope and R location from the histories. */
static pw_rp_beat_t candidate(const pw_rpeak_t *det, uint32_t k, int64_t height) {
    pw_rp_beat_t b;
    b.height = height;
    b.index = k;
    b.slope = 0;
    const uint32_t s0 = k >= PW_RP_INTEGRATION ? k - PW_RP_INTEGRATION : 0;
    for (uint32_t i = s0; i <= k; i++) {
        const int32_t v = det->d[i % PW_RP_D_RING];
        const int32_t a = v < 0 ? -v : v;
        if (a > b.slope) b.slope = a;
    }
    const uint32_t lo = k >= PW_RP_R_BEFORE ? k - PW_RP_R_BEFORE : 0;
    const int64_t end = (int64_t)k - (int64_t)PW_RP_R_AFTER;
    const uint32_t hi = end < (int64_t)lo ? lo : (uint32_t)end;
    int32_t best = -1;
    b.r = lo;
    for (uint32_t i = lo; i <= hi; i++) { /* the first of equal maxima, as np.argmax */
        const int32_t v = det->x[i % PW_RP_X_RING];
        const int32_t a = v < 0 ? (v == INT32_MIN ? INT32_MAX : -v) : v;
        if (a > best) {
            best = a;
            b.r = i;
        }
    }
    return b;
}

pw_status_t pw_rpeak_push(pw_rpeak_t *det, int32_t x) {
    if (!det) return PW_ERR_ARG;
    const uint32_t n = det->samples;
    if (n == 0) pw_biquad_start(det->qrs, pw_rp_sos_q30, PW_RP_SECTIONS, x);
    const int64_t q = pw_biquad_step(det->qrs, pw_rp_sos_q30, PW_RP_SECTIONS, x);
    /* five-point derivative q[n] + 2 q[n-1] - 2 q[n-3] - q[n-4] (zero before the stream), Q16 -> Q8 */
    const int64_t deriv = q + 2 * det->q[0] - 2 * det->q[2] - det->q[3];
    int64_t d = deriv >= 0 ? (deriv + 128) >> 8 : -((-deriv + 128) >> 8);
    if (d > D_CLAMP) d = D_CLAMP;
    if (d < -D_CLAMP) d = -D_CLAMP;
    det->q[3] = det->q[2];
    det->q[2] = det->q[1];
    det->q[1] = det->q[0];
    det->q[0] = q;
    /* moving integration: the window sum gains d[n]^2 and loses d[n - N]^2 (zero before the stream) */
    const int32_t old = n >= PW_RP_INTEGRATION ? det->d[(n - PW_RP_INTEGRATION) % PW_RP_D_RING] : 0;
    det->d[n % PW_RP_D_RING] = (int32_t)d;
    det->x[n % PW_RP_X_RING] = x;
    const int64_t mwi = det->mwi + d * d - (int64_t)old * old;
    det->samples = n + 1;
    pw_status_t st = PW_OK;
    /* sample n - 1 is a candidate if the integrated signal rose into it and does not rise out of it */
    if (n >= 2 && det->mwi > det->mwi1 && det->mwi >= mwi && det->mwi >= PW_RP_MIN_HEIGHT) {
        const pw_rp_beat_t beat = candidate(det, n - 1, det->mwi);
        st = decide(det, &beat);
    }
    det->mwi1 = det->mwi;
    det->mwi = mwi;
    return st;
}

int pw_rpeak_next(pw_rpeak_t *det, uint32_t *peak) {
    if (!det || det->queued == 0) return 0;
    *peak = det->queue[det->head];
    det->head = (det->head + 1) % PW_RP_QUEUE;
    det->queued--;
    return 1;
}

pw_status_t pw_rpeak_flush(pw_rpeak_t *det) {
    if (!det) return PW_ERR_ARG;
    pw_status_t st = PW_OK;
    if (!det->learned && det->n_learning) st = finish_learning(det);
    if (det->has_last) {
        const pw_status_t s = settle(det);
        if (s != PW_OK) st = s;
    }
    return st;
}

pw_status_t pw_rpeak_process(pw_rpeak_t *det, const int32_t *x, uint32_t n, uint32_t *peaks, uint32_t cap,
                             uint32_t *n_peaks) {
    if (!det || (n && !x) || (cap && !peaks) || !n_peaks) return PW_ERR_ARG;
    pw_status_t st = PW_OK;
    *n_peaks = 0;
    for (uint32_t i = 0; i < n; i++) {
        const pw_status_t s = pw_rpeak_push(det, x[i]);
        if (s != PW_OK) st = s;
        while (*n_peaks < cap && pw_rpeak_next(det, &peaks[*n_peaks])) (*n_peaks)++;
    }
    return st;
}
