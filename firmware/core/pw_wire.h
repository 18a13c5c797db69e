/* pulsewire wire format v1 for microcontrollers: header framing, CRC-32, ALERT and STATUS bodies.
 * Mirrors broker/wire.py and broker/device_messages.py byte for byte (checked against the golden
 * vectors in tests/golden/wire/). C99, libc only, no malloc: the caller owns every buffer. */
#ifndef PW_WIRE_H
#define PW_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define PW_HEADER_BYTES 28u
#define PW_VERSION 1u

enum pw_kind { PW_MODEL = 1, PW_UPDATE = 2, PW_ALERT = 3, PW_STATUS = 4, PW_CHUNK = 5 };

/* zlib-compatible CRC-32; pass 0 as crc to start, the previous result to continue. */
uint32_t pw_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* The fleet id of a fleet name: CRC-32 of its bytes. */
uint32_t pw_fleet_id(const char *fleet);

/* Header (with CRC over header and body) + body into out; returns the total length, 0 if it does not fit. */
size_t pw_frame(uint8_t *out, size_t cap, uint8_t kind, uint32_t fleet_id, uint32_t round, uint32_t device_id,
                uint8_t encoding, uint16_t n_tensors, const uint8_t *body, uint32_t body_len);

/* Class counts of a summary, AAMI order N, S, V, F, Q; zero counts are left out of the JSON. */
typedef struct {
    uint32_t n, s, v, f, q;
} pw_counts_t;

typedef struct {
    const char *alert_id, *device, *patient, *kind, *time_iso, *model_version;
    char cls; /* 'N', 'S', 'V', 'F' or 'Q' */
    uint32_t beat_index, beats;
    uint16_t confidence_permille, heart_rate_bpm;
    const pw_counts_t *counts; /* NULL except for kind "summary" */
} pw_alert_t;

/* Canonical JSON of an alert (sorted keys, no spaces); returns its length, 0 if it does not fit or a
 * string needs escaping (identifiers are letters, digits, '_', '.', '-', ':' and '+'). */
size_t pw_alert_json(char *out, size_t cap, const pw_alert_t *alert);

/* A framed ALERT message: JSON body + header; returns the total length or 0. */
size_t pw_alert_message(uint8_t *out, size_t cap, const char *fleet, uint32_t device_id, const pw_alert_t *alert);

/* A decoded header; body points into the message. */
typedef struct {
    uint8_t kind, encoding, flags;
    uint32_t fleet_id, round, device_id, body_len;
    uint16_t n_tensors;
    const uint8_t *body;
} pw_header_t;

/* Checks and decodes a received message (magic, version, body length, CRC-32); returns 0 and fills h, or
 * a negative reason: -1 truncated, -2 bad magic, -3 bad version, -4 bad CRC. */
int pw_unframe(const uint8_t *msg, size_t len, pw_header_t *h);

/* A CHUNK body: u32 message id, u16 index, u16 count, then the fragment; returns 0 or -1 if malformed. */
int pw_chunk_fields(const pw_header_t *h, uint32_t *message_id, uint16_t *index, uint16_t *count,
                    const uint8_t **fragment, size_t *fragment_len);

/* A status counter: an identifier key (letters, digits, '_') and an unsigned integer value. */
typedef struct {
    const char *key;
    uint32_t value;
} pw_status_counter_t;

/* Canonical JSON of a device status: {"state": state} plus the counters, all keys sorted (as Python's
 * json.dumps(sort_keys=True) sorts them, by code point); returns its length, 0 if it does not fit, a
 * string needs escaping, a key repeats or is "state". */
size_t pw_status_json(char *out, size_t cap, const char *state, const pw_status_counter_t *counters, size_t n);

/* A framed STATUS message (round 0, encoding 0, no tensors); returns the total length or 0. */
size_t pw_status_message(uint8_t *out, size_t cap, const char *fleet, uint32_t device_id, const char *state,
                         const pw_status_counter_t *counters, size_t n);

#endif
