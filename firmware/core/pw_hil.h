/* The hardware-in-the-loop protocol (docs/hil.md), implemented once for every board: a host paces raw ADC
 * samples into the device over a serial line, one text line per batch with the index of its first sample;
 * the device runs them through the same path as its own ADC (pw_frontend_push_adc: band-pass, the R-peak
 * detector, beat windows and RR features, then the generated int8 model) and answers with one line per
 * classified beat (`B <n> <sample> <class> <logits...>`) and one acknowledgement per batch.
 *
 * Every line the device receives gets exactly one terminal reply (A, D, C, I, T or E); B lines and
 * comment lines (#) come before it. Every line either side sends may end with `*HH`, the XOR of its bytes
 * before the `*` in two hex digits; the device checks it when present and always sends it.
 *
 * The board glue owns one pw_hil_t (no malloc: 8,376 B on a Cortex-M4 with the default front-end ring; the
 * code with the self-test beat is 3.4 kB of flash at -Os),
 * gives it a write function for its serial port, passes every received byte to pw_hil_feed, and may push
 * its own ADC samples through pw_hil_push (the same path, for the board's live mode). Needs the generated
 * pw_model.h, pw_frontend_config.h and pw_selftest_beat.h (`pulsewire firmware generate --frontend`). */
#ifndef PW_HIL_H
#define PW_HIL_H

#include <stddef.h>
#include <stdint.h>

#include "pw_frontend.h"
#include "pw_rpeak.h"
#include "pw_status.h"

#define PW_HIL_VERSION 1
#ifndef PW_HIL_LINE
#define PW_HIL_LINE 400u /* longest line accepted (64 decimal samples of up to 6 characters) */
#endif
#define PW_HIL_MAX_BATCH 64u /* samples per S or X line */

/* Writes n bytes to the host (blocking until they are queued); ctx is the board's. */
typedef void (*pw_hil_write_fn)(const char *bytes, size_t n, void *ctx);

typedef struct {
    uint32_t n;            /* beat number since the last reset */
    uint32_t sample;       /* its R-peak sample index */
    uint16_t cls;          /* argmax of the logits */
    const int8_t *logits;  /* the model's int8 outputs (valid during the call) */
    uint16_t n_logits;
} pw_hil_beat_t;

/* Called for every classified beat (the board's alerts); may be NULL. */
typedef void (*pw_hil_beat_fn)(const pw_hil_beat_t *beat, void *ctx);

typedef struct {
    uint32_t samples;      /* samples pushed into the front-end, gap fill included */
    uint32_t beats;        /* beats classified */
    uint32_t gap_samples;  /* samples missing between batches, filled by holding the last value */
    uint32_t dup_lines;    /* batches that started before the next expected sample (ignored) */
    uint32_t bad_lines;    /* malformed lines, checksum mismatches, lines too long */
    uint32_t model_errors; /* pw_model_invoke failures (beat not reported) */
    uint32_t overruns;     /* bytes the board's serial driver lost: the board glue adds to it */
} pw_hil_counters_t;

typedef struct {
    pw_frontend_t fe;
    pw_rpeak_t det;
    pw_hil_counters_t count;
    int32_t last;          /* the last sample pushed (gap fill) */
    char line[PW_HIL_LINE];
    uint32_t len;
    uint8_t too_long;
    uint8_t echo;          /* 1: each beat's int8 inputs go out in a W line before its B line (`R 1`) */
    pw_hil_write_fn write;
    pw_hil_beat_fn on_beat;
    void *ctx;
} pw_hil_t;

/* Stream state and counters cleared; write must not be NULL. */
void pw_hil_init(pw_hil_t *h, pw_hil_write_fn write, pw_hil_beat_fn on_beat, void *ctx);

/* Restart the stream (front-end, detector, counters) without touching the callbacks. */
void pw_hil_reset(pw_hil_t *h);

/* Bytes received from the host, any chunking: each complete line is handled and answered. */
void pw_hil_feed(pw_hil_t *h, const char *bytes, size_t n);

/* One sample from the board's own ADC through the same path as a batch; emits B lines for the beats. */
pw_status_t pw_hil_push(pw_hil_t *h, int32_t adc);

/* End of stream: the detector's last beat; emits B lines. */
pw_status_t pw_hil_flush(pw_hil_t *h);

/* Runs the model on the stored beat of pw_selftest_beat.h: 1 if every logit equals the stored ones (what
 * the reference interpreter computed when the firmware was generated), 0 otherwise. Clobbers the model's
 * inputs and outputs, not the stream. */
int pw_hil_selftest(void);

/* Sends one line (a terminating checksum and newline are added): for the board's own comment lines. */
void pw_hil_send(pw_hil_t *h, const char *text);

#endif
