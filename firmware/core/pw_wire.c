#include "pw_wire.h"

#include <stdio.h>
#include <string.h>

uint32_t pw_crc32(uint32_t crc, const uint8_t *data, size_t len) {
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

uint32_t pw_fleet_id(const char *fleet) { return pw_crc32(0, (const uint8_t *)fleet, strlen(fleet)); }

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

size_t pw_frame(uint8_t *out, size_t cap, uint8_t kind, uint32_t fleet_id, uint32_t round, uint32_t device_id,
                uint8_t encoding, uint16_t n_tensors, const uint8_t *body, uint32_t body_len) {
    size_t total = PW_HEADER_BYTES + (size_t)body_len;
    if (cap < total) return 0;
    out[0] = 'P'; out[1] = 'W'; out[2] = PW_VERSION; out[3] = kind;
    put_u32(out + 4, fleet_id); put_u32(out + 8, round); put_u32(out + 12, device_id);
    out[16] = encoding; out[17] = 0; put_u16(out + 18, n_tensors); put_u32(out + 20, body_len);
    put_u32(out + 24, 0);
    if (body_len) memmove(out + PW_HEADER_BYTES, body, body_len);
    put_u32(out + 24, pw_crc32(0, out, total));
    return total;
}

/* A tiny bounded writer: every append checks the room left. */
typedef struct { char *p; size_t cap, len; int ok; } writer_t;

static void w_raw(writer_t *w, const char *s) {
    size_t n = strlen(s);
    if (!w->ok || w->len + n >= w->cap) { w->ok = 0; return; }
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = 0;
}

static int plain(const char *s) {
    for (; *s; s++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                 c == '.' || c == '-' || c == ':' || c == '+';
        if (!ok) return 0;
    }
    return 1;
}

static void w_key_str(writer_t *w, const char *key, const char *value, int first) {
    if (!plain(value)) { w->ok = 0; return; }
    if (!first) w_raw(w, ",");
    w_raw(w, "\""); w_raw(w, key); w_raw(w, "\":\""); w_raw(w, value); w_raw(w, "\"");
}

static void w_key_u32(writer_t *w, const char *key, uint32_t value, int first) {
    char num[16];
    snprintf(num, sizeof num, "%lu", (unsigned long)value);
    if (!first) w_raw(w, ",");
    w_raw(w, "\""); w_raw(w, key); w_raw(w, "\":"); w_raw(w, num);
}

size_t pw_alert_json(char *out, size_t cap, const pw_alert_t *a) {
    writer_t w = {out, cap, 0, cap > 0};
    char cls[2] = {a->cls, 0};
    if (cap) out[0] = 0;
    /* keys in sorted order, as Python's json.dumps(sort_keys=True) writes them */
    w_raw(&w, "{");
    w_key_str(&w, "alert_id", a->alert_id, 1);
    w_key_u32(&w, "beat_index", a->beat_index, 0);
    w_key_u32(&w, "beats", a->beats, 0);
    w_key_str(&w, "class", cls, 0);
    w_key_u32(&w, "confidence_permille", a->confidence_permille, 0);
    if (a->counts) { /* class letters sorted: F, N, Q, S, V */
        const char *names[5] = {"F", "N", "Q", "S", "V"};
        uint32_t values[5] = {a->counts->f, a->counts->n, a->counts->q, a->counts->s, a->counts->v};
        int first = 1;
        w_raw(&w, ",\"counts\":{");
        for (int i = 0; i < 5; i++) {
            if (values[i]) { w_key_u32(&w, names[i], values[i], first); first = 0; }
        }
        w_raw(&w, "}");
    }
    w_key_str(&w, "device", a->device, 0);
    w_key_u32(&w, "heart_rate_bpm", a->heart_rate_bpm, 0);
    w_key_str(&w, "kind", a->kind, 0);
    w_key_str(&w, "model_version", a->model_version, 0);
    w_key_str(&w, "patient", a->patient, 0);
    w_key_u32(&w, "schema", 1, 0);
    w_key_str(&w, "time", a->time_iso, 0);
    w_raw(&w, "}");
    return w.ok ? w.len : 0;
}

size_t pw_alert_message(uint8_t *out, size_t cap, const char *fleet, uint32_t device_id, const pw_alert_t *alert) {
    if (cap < PW_HEADER_BYTES + 2) return 0;
    /* the JSON is written where the body goes, then framed in place */
    size_t n = pw_alert_json((char *)out + PW_HEADER_BYTES, cap - PW_HEADER_BYTES, alert);
    if (!n) return 0;
    return pw_frame(out, cap, PW_ALERT, pw_fleet_id(fleet), 0, device_id, 0, 0, out + PW_HEADER_BYTES, (uint32_t)n);
}

size_t pw_status_json(char *out, size_t cap, const char *state, const pw_status_counter_t *counters, size_t n) {
    writer_t w = {out, cap, 0, cap > 0};
    if (cap) out[0] = 0;
    if (n && !counters) return 0;
    for (size_t i = 0; i < n; i++) {
        if (!counters[i].key || !plain(counters[i].key) || strcmp(counters[i].key, "state") == 0) return 0;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(counters[i].key, counters[j].key) == 0) return 0;
        }
    }
    /* emit keys in sorted order without sorting in place: repeatedly take the smallest key above the last
     * one written (n is a handful of counters) */
    const char *last = "";
    int first = 1, state_done = 0;
    w_raw(&w, "{");
    for (size_t k = 0; k <= n; k++) {
        const pw_status_counter_t *next = NULL;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(counters[i].key, last) > 0 && (!next || strcmp(counters[i].key, next->key) < 0)) next = &counters[i];
        }
        if (!state_done && (!next || strcmp("state", next->key) < 0)) {
            w_key_str(&w, "state", state, first);
            first = 0;
            state_done = 1;
            last = "state";
            k--; /* the counter found is still to be written */
            continue;
        }
        if (!next) break;
        w_key_u32(&w, next->key, next->value, first);
        first = 0;
        last = next->key;
    }
    w_raw(&w, "}");
    return w.ok ? w.len : 0;
}

size_t pw_status_message(uint8_t *out, size_t cap, const char *fleet, uint32_t device_id, const char *state,
                         const pw_status_counter_t *counters, size_t n) {
    if (cap < PW_HEADER_BYTES + 2) return 0;
    size_t len = pw_status_json((char *)out + PW_HEADER_BYTES, cap - PW_HEADER_BYTES, state, counters, n);
    if (!len) return 0;
    return pw_frame(out, cap, PW_STATUS, pw_fleet_id(fleet), 0, device_id, 0, 0, out + PW_HEADER_BYTES, (uint32_t)len);
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

int pw_unframe(const uint8_t *msg, size_t len, pw_header_t *h) {
    if (!msg || !h || len < PW_HEADER_BYTES) return -1;
    if (msg[0] != 'P' || msg[1] != 'W') return -2;
    if (msg[2] != PW_VERSION) return -3;
    uint32_t body_len = get_u32(msg + 20);
    if (body_len != len - PW_HEADER_BYTES) return -1;
    /* CRC over the header with its CRC field zeroed, then the body */
    static const uint8_t zeros[4] = {0, 0, 0, 0};
    uint32_t crc = pw_crc32(0, msg, 24);
    crc = pw_crc32(crc, zeros, 4);
    crc = pw_crc32(crc, msg + PW_HEADER_BYTES, body_len);
    if (crc != get_u32(msg + 24)) return -4;
    h->kind = msg[3];
    h->fleet_id = get_u32(msg + 4);
    h->round = get_u32(msg + 8);
    h->device_id = get_u32(msg + 12);
    h->encoding = msg[16];
    h->flags = msg[17];
    h->n_tensors = get_u16(msg + 18);
    h->body_len = body_len;
    h->body = msg + PW_HEADER_BYTES;
    return 0;
}

int pw_chunk_fields(const pw_header_t *h, uint32_t *message_id, uint16_t *index, uint16_t *count,
                    const uint8_t **fragment, size_t *fragment_len) {
    if (!h || h->kind != PW_CHUNK || h->body_len < 8) return -1;
    *message_id = get_u32(h->body);
    *index = get_u16(h->body + 4);
    *count = get_u16(h->body + 6);
    if (*count == 0 || *index >= *count) return -1;
    *fragment = h->body + 8;
    *fragment_len = h->body_len - 8;
    return 0;
}
