/* The hardware-in-the-loop protocol: see pw_hil.h and docs/hil.md. Lines are parsed completely before
 * anything is pushed, so a malformed batch changes nothing but the bad-line counter. */
#include <string.h>

#include "pw_hil.h"
#include "pw_kernels.h"
#include "pw_model.h"
#include "pw_selftest_beat.h"

#define PW_HIL_OUT (2u * ((uint32_t)PW_FE_WINDOW + PW_FE_FEATURES) + 192u) /* a W line fits */
#define PW_HIL_MAX_GAP (60u * (uint32_t)PW_FE_FS_HZ) /* a longer jump is a corrupt sequence number */
#define PW_STR(x) PW_STR2(x)
#define PW_STR2(x) #x

typedef struct {
    char text[PW_HIL_OUT];
    uint32_t len;
} pw_hil_out_t;

static void out_str(pw_hil_out_t *o, const char *s) {
    while (*s && o->len < PW_HIL_OUT - 5u) o->text[o->len++] = *s++; /* room for "*HH\n" */
}

static void out_int(pw_hil_out_t *o, int64_t v) {
    char digits[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1u : (uint64_t)v;
    do {
        digits[n++] = (char)('0' + (int)(u % 10u));
        u /= 10u;
    } while (u);
    if (v < 0 && o->len < PW_HIL_OUT - 5u) o->text[o->len++] = '-';
    while (n && o->len < PW_HIL_OUT - 5u) o->text[o->len++] = digits[--n];
}

static void out_field(pw_hil_out_t *o, const char *name, uint32_t v) {
    out_str(o, " ");
    out_str(o, name);
    out_str(o, "=");
    out_int(o, v);
}

static uint8_t xor_of(const char *s, uint32_t n) {
    uint8_t x = 0;
    for (uint32_t i = 0; i < n; i++) x ^= (uint8_t)s[i];
    return x;
}

static void out_send(pw_hil_t *h, pw_hil_out_t *o) {
    static const char hex[] = "0123456789ABCDEF";
    const uint8_t x = xor_of(o->text, o->len);
    o->text[o->len++] = '*';
    o->text[o->len++] = hex[x >> 4];
    o->text[o->len++] = hex[x & 15u];
    o->text[o->len++] = '\n';
    h->write(o->text, o->len, h->ctx);
}

void pw_hil_send(pw_hil_t *h, const char *text) {
    pw_hil_out_t o = {{0}, 0};
    out_str(&o, text);
    out_send(h, &o);
}

/* The generated model's inputs in graph order: the wave is the one with PW_FE_WINDOW values. */
static unsigned wave_input(void) { return pw_model_input_size(0) == (size_t)PW_FE_WINDOW ? 0u : 1u; }

static void out_hex(pw_hil_out_t *o, const int8_t *v, uint32_t n) {
    static const char hex[] = "0123456789ABCDEF";
    for (uint32_t i = 0; i < n && o->len < PW_HIL_OUT - 7u; i++) {
        o->text[o->len++] = hex[(uint8_t)v[i] >> 4];
        o->text[o->len++] = hex[(uint8_t)v[i] & 15u];
    }
}

/* W <n> <hex>: the beat's int8 model inputs (wave, then RR features), before the model runs on them. */
static void echo_inputs(pw_hil_t *h, unsigned wi) {
    pw_hil_out_t o = {{0}, 0};
    out_str(&o, "W ");
    out_int(&o, h->count.beats);
    out_str(&o, " ");
    out_hex(&o, pw_model_input(wi), (uint32_t)PW_FE_WINDOW);
    out_hex(&o, pw_model_input(1u - wi), PW_FE_FEATURES);
    out_send(h, &o);
}

static void take_beats(pw_hil_t *h) {
    const unsigned wi = wave_input();
    uint32_t peak;
    while (pw_frontend_next_beat(&h->fe, pw_model_input(wi), pw_model_input(1u - wi), &peak)) {
        if (h->echo) echo_inputs(h, wi);
        if (pw_model_invoke() != PW_OK) {
            h->count.model_errors++;
            continue;
        }
        const int8_t *logits = pw_model_output(0);
        const uint16_t n_logits = (uint16_t)pw_model_output_size(0);
        pw_hil_beat_t beat = {h->count.beats++, peak, pw_argmax_s8(logits, n_logits), logits, n_logits};
        pw_hil_out_t o = {{0}, 0};
        out_str(&o, "B ");
        out_int(&o, beat.n);
        out_str(&o, " ");
        out_int(&o, beat.sample);
        out_str(&o, " ");
        out_int(&o, beat.cls);
        for (uint16_t k = 0; k < n_logits; k++) {
            out_str(&o, " ");
            out_int(&o, logits[k]);
        }
        out_send(h, &o);
        if (h->on_beat) h->on_beat(&beat, h->ctx);
    }
}

pw_status_t pw_hil_push(pw_hil_t *h, int32_t adc) {
    if (!h) return PW_ERR_ARG;
    const pw_status_t st = pw_frontend_push_adc(&h->fe, &h->det, adc);
    h->count.samples++;
    h->last = adc;
    take_beats(h);
    return st;
}

pw_status_t pw_hil_flush(pw_hil_t *h) {
    if (!h) return PW_ERR_ARG;
    const pw_status_t st = pw_frontend_flush(&h->fe, &h->det);
    take_beats(h);
    return st;
}

void pw_hil_reset(pw_hil_t *h) {
    pw_frontend_init(&h->fe);
    pw_rpeak_init(&h->det);
    memset(&h->count, 0, sizeof h->count);
    h->last = 0;
    h->len = 0;
    h->too_long = 0;
    h->echo = 0;
}

void pw_hil_init(pw_hil_t *h, pw_hil_write_fn write, pw_hil_beat_fn on_beat, void *ctx) {
    h->write = write;
    h->on_beat = on_beat;
    h->ctx = ctx;
    pw_hil_reset(h);
}

int pw_hil_selftest(void) {
    const unsigned wi = wave_input();
    memcpy(pw_model_input(wi), pw_selftest_wave, sizeof pw_selftest_wave);
    memcpy(pw_model_input(1u - wi), pw_selftest_rr, sizeof pw_selftest_rr);
    if (pw_model_invoke() != PW_OK || pw_model_output_size(0) != sizeof pw_selftest_logits) return 0;
    return memcmp(pw_model_output(0), pw_selftest_logits, sizeof pw_selftest_logits) == 0;
}

/* ---- parsing: tokens separated by single or repeated spaces ---- */

static const char *skip_spaces(const char *p) {
    while (*p == ' ') p++;
    return p;
}

/* A decimal integer in [lo, hi] ending at a space or the end of the line. */
static int parse_int(const char **p, int64_t lo, int64_t hi, int64_t *out) {
    const char *s = skip_spaces(*p);
    int neg = 0;
    int64_t v = 0;
    if (*s == '-' || *s == '+') neg = *s++ == '-';
    if (*s < '0' || *s > '9') return 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
        if (v > hi - lo + 1) return 0; /* far out of range: stop before int64 could overflow */
    }
    if (*s != ' ' && *s != 0) return 0;
    if (neg) v = -v;
    if (v < lo || v > hi) return 0;
    *out = v;
    *p = s;
    return 1;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* S <seq> <v> ...: decimal samples; X <seq> <HHHH...>: 16-bit two's complement samples, 4 hex digits each.
 * Both carry 16-bit ADC values: the front-end keeps samples in Q16 within an int32. */
static uint32_t parse_batch(const char *line, uint32_t *seq, int32_t *v) {
    const char *p = line + 1;
    int64_t x;
    if (!parse_int(&p, 0, UINT32_MAX, &x)) return 0;
    *seq = (uint32_t)x;
    uint32_t n = 0;
    if (line[0] == 'S') {
        for (p = skip_spaces(p); *p; p = skip_spaces(p)) {
            if (n == PW_HIL_MAX_BATCH || !parse_int(&p, INT16_MIN, INT16_MAX, &x)) return 0;
            v[n++] = (int32_t)x;
        }
        return n;
    }
    p = skip_spaces(p);
    for (; *p && *p != ' '; p += 4) {
        int d[4];
        for (int k = 0; k < 4; k++) {
            d[k] = p[k] ? hex_digit(p[k]) : -1;
            if (d[k] < 0) return 0;
        }
        if (n == PW_HIL_MAX_BATCH) return 0;
        v[n++] = (int32_t)(int16_t)(uint16_t)((d[0] << 12) | (d[1] << 8) | (d[2] << 4) | d[3]);
    }
    return *skip_spaces(p) ? 0 : n;
}

static void reply_next(pw_hil_t *h, const char *what) {
    pw_hil_out_t o = {{0}, 0};
    out_str(&o, what);
    out_int(&o, h->count.samples);
    out_send(h, &o);
}

static void on_batch(pw_hil_t *h, const char *line) {
    int32_t v[PW_HIL_MAX_BATCH];
    uint32_t seq;
    const uint32_t n = parse_batch(line, &seq, v);
    if (n == 0 || (seq > h->count.samples && seq - h->count.samples > PW_HIL_MAX_GAP)) {
        h->count.bad_lines++;
        reply_next(h, "E bad ");
        return;
    }
    if (seq < h->count.samples) { /* a repeated or reordered batch: the stream has moved on */
        h->count.dup_lines++;
        reply_next(h, "E dup ");
        return;
    }
    while (h->count.samples < seq) { /* lost batches: hold the last value so sample indices stay the host's */
        h->count.gap_samples++;
        pw_hil_push(h, h->last);
    }
    for (uint32_t i = 0; i < n; i++) pw_hil_push(h, v[i]);
    reply_next(h, "A ");
}

static void on_hello(pw_hil_t *h) {
    pw_hil_out_t o = {{0}, 0};
    out_str(&o, "I pulsewire-hil ");
    out_int(&o, PW_HIL_VERSION);
    out_field(&o, "fs", (uint32_t)PW_FE_FS_HZ);
    out_str(&o, " gain=" PW_STR(PW_FE_ADC_GAIN));
    out_field(&o, "window", (uint32_t)PW_FE_WINDOW);
    out_field(&o, "classes", (uint32_t)pw_model_output_size(0));
    out_field(&o, "batch", PW_HIL_MAX_BATCH);
    out_field(&o, "echo", h->echo);
    out_str(&o, " model=");
    char sha[17];
    memcpy(sha, pw_model_sha256, 16);
    sha[16] = 0;
    out_str(&o, sha);
    out_send(h, &o);
}

static void on_counters(pw_hil_t *h) {
    const pw_hil_counters_t *c = &h->count;
    pw_hil_out_t o = {{0}, 0};
    out_str(&o, "C");
    out_field(&o, "samples", c->samples);
    out_field(&o, "beats", c->beats);
    out_field(&o, "gap_samples", c->gap_samples);
    out_field(&o, "dup_lines", c->dup_lines);
    out_field(&o, "bad_lines", c->bad_lines);
    out_field(&o, "overruns", c->overruns);
    out_field(&o, "model_errors", c->model_errors);
    out_field(&o, "late_peaks", h->fe.late_peaks);
    out_field(&o, "detector_dropped", h->det.dropped);
    out_send(h, &o);
}

static void on_line(pw_hil_t *h, char *line, uint32_t len) {
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' ')) len--;
    line[len] = 0;
    if (len == 0) return; /* empty lines resynchronise and get no reply */
    if (len >= 3 && line[len - 3] == '*') {
        const int hi = hex_digit(line[len - 2]), lo = hex_digit(line[len - 1]);
        if (hi < 0 || lo < 0 || xor_of(line, len - 3) != (uint8_t)(hi << 4 | lo)) {
            h->count.bad_lines++;
            reply_next(h, "E checksum ");
            return;
        }
        len -= 3;
        line[len] = 0;
    }
    const char cmd = line[0];
    switch (cmd) {
    case 'S':
    case 'X':
        on_batch(h, line);
        break;
    case '?':
        on_hello(h);
        break;
    case 'R':
        pw_hil_reset(h);
        h->echo = line[1] == ' ' && skip_spaces(line + 1)[0] == '1';
        on_hello(h);
        break;
    case 'F':
        pw_hil_flush(h);
        reply_next(h, "D ");
        break;
    case 'Q':
        on_counters(h);
        break;
    case 'T': {
        pw_hil_out_t o = {{0}, 0};
        out_str(&o, pw_hil_selftest() ? "T ok " : "T fail ");
        out_int(&o, pw_argmax_s8(pw_model_output(0), (uint16_t)pw_model_output_size(0)));
        out_str(&o, " ");
        out_int(&o, PW_SELFTEST_CLASS);
        out_send(h, &o);
        break;
    }
    default:
        h->count.bad_lines++;
        reply_next(h, "E command ");
    }
}

void pw_hil_feed(pw_hil_t *h, const char *bytes, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char c = bytes[i];
        if (c == '\n') {
            if (h->too_long) {
                h->count.bad_lines++;
                reply_next(h, "E long ");
            } else {
                on_line(h, h->line, h->len);
            }
            h->len = 0;
            h->too_long = 0;
        } else if (h->len + 1u < PW_HIL_LINE) {
            h->line[h->len++] = c ? c : '?'; /* a NUL must not end the line early: make it unparsable */
        } else {
            h->too_long = 1;
        }
    }
}
